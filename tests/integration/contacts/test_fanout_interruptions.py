"""What stops a running fan-out, through the real Kafka and FerretDB:
- a cancel or a pause: the contacts worker's watcher reads campaigns.events
  in a group of its own (the fan-out holds the main loop) and marks the
  fan-out, which stops before its next batch (a resume goes on);
- the process stopping: the fan-out leaves between batches, its launch is
  not committed, and the partition's next reader resumes it.
The fan-out's jobs go to an in-memory broker: on the real one they would
feed the running stack's senders."""
import threading
import time
from types import SimpleNamespace

import pytest

from services.contacts.fanout import Fanout, fan_out
from services.contacts.fanout_store import FanoutStore
from services.contacts.worker import fanout_watcher
from shared.config import Config
from shared.events import new_event
from shared.kafka.factory import consumer_loop, event_producer
from shared.kafka.memory import InMemoryBroker
from shared.kafka.producer import EventProducer
from tests.integration.campaigns.test_fanout import CONTACTS, jobs, launched, ready, stream_of
from tests.loops import run_until


def gated_stream(contacts, gate: threading.Event, open_after_batches: int):
    """The audience; before batch `open_after_batches` it waits for the gate."""
    inner = stream_of(contacts)

    def stream(*args, **kwargs):
        for number, batch in enumerate(inner(*args, **kwargs)):
            if number == open_after_batches:
                assert gate.wait(90), "the test never opened the gate"
            yield batch
    return stream


def publish_until_marked(watcher, publisher, topic, event, marked) -> None:
    """Publish `event` until the watcher has marked it. A new watcher group
    starts at the topic's end once it has its position; an event published
    before that is not seen, so it is sent again, as a redelivery would be
    (the marks are idempotent)."""
    assert run_until(watcher, lambda: bool(watcher.source.assignment()))
    for _ in range(10):
        publisher.publish(topic, event, key=event.subject)
        publisher.flush()
        if run_until(watcher, marked, deadline_s=5):
            return
    raise AssertionError(f"the watcher never marked {event.type}")


@pytest.fixture
def watched(kafka_bootstrap, make_topic, mongo_db):
    """(the watcher's loop, a publisher, the topic it watches)."""
    topic = make_topic("campaigns", partitions=1)
    config = Config(kafka_bootstrap=kafka_bootstrap)
    publisher = event_producer(config, "campaigns-test")
    # The client must know the topic before it subscribes (see the privacy
    # request-flow tests): an event the watcher does not take comes first.
    publisher.publish(topic, launched("camp-0"), key="camp-0")
    publisher.flush()
    watcher = fanout_watcher(SimpleNamespace(db=mongo_db), config, topic=topic)
    yield watcher, publisher, topic
    watcher.shutdown()
    publisher.sink.close()


def campaign_event(kind: str):
    return new_event(f"campaign.{kind}", source="campaigns", subject="camp-1",
                     account_id="acct-1", data={"campaign_id": "camp-1"})


def fan_out_until_marked(watched, store: FanoutStore, broker, event, marked):
    """Fan out in a thread, as the main loop does, held after two batches
    until the watcher has marked `event`; returns (the Fanout, what its
    launch handler returned)."""
    gate = threading.Event()
    fanout = Fanout(store, gated_stream(CONTACTS, gate, 2), EventProducer(broker.sink()),
                    batch_size=10)
    outcome = {}
    main_loop = threading.Thread(target=lambda: outcome.update(size=fanout.launched(launched())))
    main_loop.start()
    try:
        publish_until_marked(*watched, event, marked)
    finally:
        gate.set()
        main_loop.join(30)
    return fanout, outcome["size"]


def test_a_cancel_on_the_topic_stops_the_fan_out_running_in_the_main_loop(watched, mongo_db):
    store, broker = FanoutStore(mongo_db), InMemoryBroker()
    _, size = fan_out_until_marked(watched, store, broker, campaign_event("cancelled"),
                                   lambda: store.marks("camp-1").cancel)
    assert size == 20 and len(jobs(broker)) == 20
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 20, "cut_short": True}]
    assert store.fanouts.find_one({"_id": "camp-1"})["done"] is True


def test_a_pause_on_the_topic_stops_the_fan_out_and_the_resume_goes_on(watched, mongo_db):
    store, broker = FanoutStore(mongo_db), InMemoryBroker()
    fanout, size = fan_out_until_marked(watched, store, broker, campaign_event("paused"),
                                        lambda: store.marks("camp-1").pause)
    assert size is None and len(jobs(broker)) == 20 and ready(broker) == []
    resumed = campaign_event("resumed")
    publish_until_marked(*watched, resumed, lambda: not store.marks("camp-1").pause)
    fanout.stream = stream_of(CONTACTS)
    assert fanout.resumed(resumed) == 95     # the main loop's turn
    assert {j["contact_id"] for j in jobs(broker)} == {c["_id"] for c in CONTACTS}
    assert len(jobs(broker)) == 95
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 95}]


def test_a_stop_leaves_the_launch_uncommitted_and_the_next_reader_resumes_the_fan_out(
        kafka_bootstrap, make_topic, mongo_db, unique):
    topic, group = make_topic("launches", partitions=1), f"contacts-{unique}"
    config = Config(kafka_bootstrap=kafka_bootstrap)
    publisher = event_producer(config, "campaigns-test")
    publisher.publish(topic, launched(), key="camp-1")
    publisher.flush()
    publisher.sink.close()
    store, broker = FanoutStore(mongo_db), InMemoryBroker()
    gate, stopping = threading.Event(), threading.Event()

    def reader(stream, should_stop=lambda: False):
        return consumer_loop(config, "contacts", group, [topic], {
            "campaign.launched": lambda event: fan_out(
                event, stream=stream, store=store, producer=EventProducer(broker.sink()),
                batch_size=10, should_stop=should_stop)})

    first = reader(gated_stream(CONTACTS, gate, 2), stopping.is_set)
    running = threading.Thread(target=first.run)
    running.start()
    try:
        deadline = time.monotonic() + 90
        while len(store.produced_ids("camp-1")) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(store.produced_ids("camp-1")) == 20
        stopping.set()   # what SIGTERM does in the worker
        first.stop()
    finally:
        gate.set()
        running.join(30)
    assert not running.is_alive()
    assert len(jobs(broker)) == 20 and ready(broker) == []

    second = reader(stream_of(CONTACTS))
    try:
        assert run_until(second, lambda: bool(ready(broker)))
    finally:
        second.shutdown()
    produced = jobs(broker)
    assert len(produced) == 95 and {j["contact_id"] for j in produced} == \
        {c["_id"] for c in CONTACTS}
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 95}]
