"""What tracking does while Kafka is away, on the in-memory broker with a
fake store: pixels and clicks still answer and their events wait in memory
(up to the queue limit, then are dropped and counted); an unsubscribe is
parked in the store and relayed once Kafka is back, with its event id."""
from __future__ import annotations

import os
import secrets
import uuid

import pytest
from prometheus_client import REGISTRY
from werkzeug.test import Client

from services.tracking import usecases
from services.tracking.hits import HitPublisher
from services.tracking.public import GIF, HotPath, LinkTable
from shared import topics
from shared import tracking_tokens as tt
from shared.events import decode
from shared.kafka.memory import InMemoryBroker, InMemorySink
from shared.kafka.producer import EventProducer

AGENT = "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 Chrome/124.0 Safari/537.36"
URL = "https://shop.example/sale"
RING = tt.Keyring([(1, secrets.token_bytes(32))])


class OutageSink(InMemorySink):
    """The in-memory broker, unreachable while `down`: a flush fails and
    what it held is lost, as with a delivery timeout."""

    def __init__(self, broker):
        super().__init__(broker)
        self.down = False

    def flush(self, timeout=None):
        if self.down:
            self._buffer.clear()
            raise ConnectionError("broker unreachable")
        super().flush(timeout)


class FakeStore:
    """The parts of TrackingStore these paths use."""

    def __init__(self, campaigns=None):
        self.campaigns = campaigns or {}
        self.pending: dict[str, dict] = {}
        self.down = False

    def campaign(self, campaign_id):
        return self.campaigns.get(campaign_id)

    def park_event(self, event_id, topic, key, body):
        if self.down:
            raise ConnectionError("database unreachable")
        self.pending[event_id] = {"_id": event_id, "topic": topic, "key": key, "body": body}

    def parked_events(self, limit=100):
        return list(self.pending.values())[:limit]

    def unpark(self, event_ids):
        for event_id in event_ids:
            self.pending.pop(event_id, None)


def dropped(service: str) -> float:
    return REGISTRY.get_sample_value("sandesh_tracking_hits_dropped_total",
                                     {"service": service}) or 0.0


def publisher(sink, limit=100, service=None):
    producer = EventProducer(sink)
    hits = HitPublisher(lambda: producer, limit=limit, flush_seconds=0.1,
                        service=service or uuid.uuid4().hex)
    # These tests publish by calling publish_batch(); no background thread.
    hits._pid = os.getpid()
    return hits


def ctx():
    return tt.LinkContext(*(uuid.uuid4().hex for _ in range(4)))


@pytest.fixture
def broker():
    return InMemoryBroker()


# ----------------------------------------------------- pixel and click

def test_pixel_and_click_answer_while_kafka_is_down_and_their_events_go_out_when_it_is_back(
        broker):
    sink = OutageSink(broker)
    sink.down = True
    hits = publisher(sink)
    person = ctx()
    links = LinkTable(lambda: FakeStore({person.campaign_id: {
        "account_id": person.account_id, "links": [URL]}}))
    client = Client(HotPath(lambda environ, start: [], RING, hits, links))

    pixel = client.get(f"/t/o/{tt.open_token(RING, person)}", headers={"User-Agent": AGENT})
    click = client.get(f"/t/c/{tt.click_token(RING, person, 0)}", headers={"User-Agent": AGENT})

    assert (pixel.status_code, pixel.data) == (200, GIF)
    assert (click.status_code, click.headers["Location"]) == (302, URL)
    assert not hits.publish_batch()          # Kafka is down: nothing lost, nothing out
    assert hits.pending() == 2 and broker.messages(topics.TRACKING_EVENTS) == []

    sink.down = False
    assert hits.publish_batch()
    events = [decode(r.value) for r in broker.messages(topics.TRACKING_EVENTS)]
    assert sorted(e.type for e in events) == ["tracking.clicked", "tracking.opened"]
    assert {e.data["job_id"] for e in events} == {person.job_id}
    assert hits.pending() == 0


def test_hits_beyond_the_queue_limit_are_refused_and_counted():
    service = uuid.uuid4().hex
    hits = publisher(OutageSink(InMemoryBroker()), limit=3, service=service)
    claims = tt.verify(RING, tt.open_token(RING, ctx()))

    accepted = [hits.submit(topics.TRACKING_EVENTS,
                            usecases.hit_event(claims, "GET", AGENT, "203.0.113.9"), "k")
                for _ in range(5)]

    assert accepted == [True, True, True, False, False]
    assert hits.pending() == 3
    assert dropped(service) == 2


def test_a_failed_batch_keeps_what_still_fits_beside_hits_that_came_meanwhile_and_counts_the_rest(
        broker):
    """Requests go on queueing while a batch is out: when it fails, the
    batch goes back in front only as far as the limit allows."""
    service = uuid.uuid4().hex
    sink = OutageSink(broker)
    sink.down = True
    claims = tt.verify(RING, tt.open_token(RING, ctx()))

    def event():
        return usecases.hit_event(claims, "GET", AGENT, "203.0.113.9")

    producer = EventProducer(sink)

    def producer_while_requests_arrive():
        hits.submit(topics.TRACKING_EVENTS, event(), "k")
        hits.submit(topics.TRACKING_EVENTS, event(), "k")
        return producer

    hits = HitPublisher(producer_while_requests_arrive, limit=3, flush_seconds=0.1,
                        service=service)
    hits._pid = os.getpid()
    first = [event() for _ in range(3)]
    for queued in first:
        hits.submit(topics.TRACKING_EVENTS, queued, "k")

    assert not hits.publish_batch()

    assert hits.pending() == 3             # the limit: 2 new ones + the oldest of the batch
    assert hits._queue[0][1].id == first[0].id
    assert dropped(service) == 2


# ---------------------------------------------------------- unsubscribe

def unsubscribe(person, list_id=None):
    claims = tt.verify(RING, tt.unsubscribe_token(RING, person, list_id))
    return usecases.unsubscribe_event(claims, whole_account=list_id is None, method="one-click")


def test_an_unsubscribe_kafka_does_not_take_is_parked_then_relayed_with_its_event_id(broker):
    sink, store = OutageSink(broker), FakeStore()
    producer = EventProducer(sink)
    event = unsubscribe(ctx())

    sink.down = True
    assert usecases.publish_durably(event, lambda: producer, store) == "parked"
    assert list(store.pending) == [event.id]
    with pytest.raises(ConnectionError):      # still down: it stays parked
        usecases.relay_parked(store, producer)
    assert list(store.pending) == [event.id]

    sink.down = False
    assert usecases.relay_parked(store, producer) == 1
    [record] = broker.messages(topics.TRACKING_EVENTS)
    relayed = decode(record.value)
    assert (relayed.id, relayed.type, relayed.data) == (event.id, event.type, event.data)
    assert record.key == event.subject.encode()
    assert store.pending == {}
    assert usecases.relay_parked(store, producer) == 0


def test_an_unsubscribe_goes_straight_to_kafka_when_it_is_up(broker):
    store = FakeStore()
    event = unsubscribe(ctx(), list_id=uuid.uuid4().hex)
    assert usecases.publish_durably(event, lambda: EventProducer(broker.sink()), store) == "kafka"
    assert store.pending == {}
    assert [decode(r.value).id for r in broker.messages(topics.TRACKING_EVENTS)] == [event.id]


def test_an_unsubscribe_is_refused_only_when_kafka_and_the_database_are_both_down(broker):
    sink, store = OutageSink(broker), FakeStore()
    sink.down = store.down = True
    with pytest.raises(ConnectionError):
        usecases.publish_durably(unsubscribe(ctx()), lambda: EventProducer(sink), store)
