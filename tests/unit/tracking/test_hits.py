"""HitPublisher: hits queued by requests reach the topic, built once."""
import secrets
import uuid

from services.tracking import usecases
from services.tracking.hits import HitPublisher
from shared.events import decode
from shared.events.envelope import Event
from shared.kafka.memory import InMemoryBroker
from shared.kafka.producer import EventProducer
from shared.tracking_tokens import Keyring, LinkContext, open_token, verify

TOPIC = "tracking.events"
AGENT = "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 Chrome/124.0 Safari/537.36"


def _claims():
    ring = Keyring([(1, secrets.token_bytes(32))])
    ctx = LinkContext(*(uuid.uuid4().hex for _ in range(4)))
    return verify(ring, open_token(ring, ctx))


def _publisher(broker):
    producer = EventProducer(broker.sink())
    return HitPublisher(lambda: producer, limit=100, flush_seconds=0.1), producer


def _builder(claims, at=1_700_000_000.5):
    return lambda: usecases.hit_event(claims, "GET", AGENT, "203.0.113.9", at)


def test_a_queued_builder_becomes_an_event_with_the_hit_time():
    broker = InMemoryBroker()
    hits, _ = _publisher(broker)
    claims = _claims()
    hits._queue.append((TOPIC, _builder(claims), claims.context.campaign_id))

    assert hits.publish_batch()

    [record] = broker.messages(TOPIC)
    event = decode(record.value)
    assert event.type == "tracking.opened"
    assert event.time == "2023-11-14T22:13:20.500+00:00"
    assert event.data["ip_prefix"] == "203.0.113.0/24"
    assert record.key == claims.context.campaign_id.encode()


def test_a_batch_published_again_after_a_failure_keeps_its_event_ids():
    broker = InMemoryBroker()
    hits, producer = _publisher(broker)
    claims = _claims()
    for _ in range(3):
        hits._queue.append((TOPIC, _builder(claims), claims.context.campaign_id))
    producer.sink.fail_next_flush = RuntimeError("broker away")

    assert not hits.publish_batch()
    assert hits.pending() == 3
    assert all(isinstance(item[1], Event) for item in hits._queue)
    first_ids = [item[1].id for item in hits._queue]

    assert hits.publish_batch()
    assert [decode(r.value).id for r in broker.messages(TOPIC)] == first_ids


def test_a_hit_carries_the_time_its_message_was_sent_when_the_token_has_it():
    ring = Keyring([(1, secrets.token_bytes(32))])
    ids = [uuid.uuid4().hex for _ in range(4)]
    timed = verify(ring, open_token(ring, LinkContext(*ids, sent_at=1_796_000_000)))
    broker = InMemoryBroker()
    hits, _ = _publisher(broker)
    hits.submit(TOPIC, _builder(timed), "k")
    hits.submit(TOPIC, _builder(_claims()), "k")   # a token from before version 2
    assert hits.publish_batch()
    events = [decode(r.value) for r in broker.messages(TOPIC)]   # validated by the schema
    assert [e.data.get("sent_at") for e in events] == ["2026-11-30T00:53:20+00:00", None]


def test_each_hit_starts_its_own_trace():
    claims = _claims()
    first = usecases.hit_event(claims, "GET", AGENT, "203.0.113.9")
    second = usecases.hit_event(claims, "GET", AGENT, "203.0.113.9")
    assert first.trace_id and second.trace_id and first.trace_id != second.trace_id


def test_an_event_that_fails_its_schema_does_not_hold_up_the_others():
    broker = InMemoryBroker()
    hits, _ = _publisher(broker)
    claims = _claims()
    good = usecases.hit_event(claims, "GET", AGENT, "203.0.113.9")
    bad = Event(type="tracking.opened", source="tracking", subject=good.subject,
                account_id=good.account_id, data={"campaign_id": "not an id"})
    for event in (bad, good):
        hits._queue.append((TOPIC, event, good.subject))

    assert hits.publish_batch()
    assert [decode(r.value).id for r in broker.messages(TOPIC)] == [good.id]
    assert hits.pending() == 0


def test_a_hit_that_cannot_be_built_does_not_hold_up_the_others():
    """It raised inside the batch: the batch went back to the queue, failed
    again, and no hit of the process was published from then on."""
    broker = InMemoryBroker()
    hits, _ = _publisher(broker)
    claims = _claims()

    def broken():
        raise ValueError("a user agent no rule foresaw")

    for build in (broken, _builder(claims)):
        hits._queue.append((TOPIC, build, claims.context.campaign_id))
    assert hits.publish_batch()
    assert [decode(r.value).type for r in broker.messages(TOPIC)] == ["tracking.opened"]
    assert hits.pending() == 0
