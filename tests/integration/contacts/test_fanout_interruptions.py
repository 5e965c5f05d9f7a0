"""What stops a running fan-out, through the real Kafka and FerretDB:
- a cancel: the contacts worker's cancel watcher reads campaign.cancelled
  in a group of its own (the fan-out holds the main loop) and marks the
  fan-out, which stops before its next batch;
- the process stopping: the fan-out leaves between batches, its launch is
  not committed, and the partition's next reader resumes it.
The fan-out's jobs go to an in-memory broker: on the real one they would
feed the running stack's senders."""
import threading
import time
from types import SimpleNamespace

from services.contacts.fanout import FanoutStore, fan_out
from services.contacts.worker import cancel_watcher
from shared.config import Config
from shared.events import new_event
from shared.kafka.factory import consumer_loop, event_producer
from shared.kafka.memory import InMemoryBroker
from shared.kafka.producer import EventProducer
from tests.integration.campaigns.test_fanout import CONTACTS, jobs, launched, ready, stream_of


def gated_stream(contacts, gate: threading.Event, open_after_batches: int):
    """The audience; before batch `open_after_batches` it waits for the gate."""
    inner = stream_of(contacts)

    def stream(*args, **kwargs):
        for number, batch in enumerate(inner(*args, **kwargs)):
            if number == open_after_batches:
                assert gate.wait(90), "the test never opened the gate"
            yield batch
    return stream


def run_until(loop, done, deadline=90.0) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        loop.run_once()
        if done():
            return True
    return False


def test_a_cancel_on_the_topic_stops_the_fan_out_running_in_the_main_loop(
        kafka_bootstrap, make_topic, mongo_db):
    topic = make_topic("campaigns", partitions=1)
    config = Config(kafka_bootstrap=kafka_bootstrap)
    publisher = event_producer(config, "campaigns-test")
    cancelled = new_event("campaign.cancelled", source="campaigns", subject="camp-1",
                          account_id="acct-1", data={"campaign_id": "camp-1"})
    # The client must know the topic before it subscribes (see the privacy
    # request-flow tests): an event the watcher does not take comes first.
    publisher.publish(topic, new_event("campaign.resumed", source="campaigns",
                                       subject="camp-0", account_id="acct-1",
                                       data={"campaign_id": "camp-0"}), key="camp-0")
    publisher.flush()
    watcher = cancel_watcher(SimpleNamespace(db=mongo_db), config, topic=topic)
    store, broker, gate = FanoutStore(mongo_db), InMemoryBroker(), threading.Event()
    outcome = {}

    def fan_out_in_the_main_loop():
        outcome["size"] = fan_out(launched(), stream=gated_stream(CONTACTS, gate, 2),
                                  store=store, producer=EventProducer(broker.sink()),
                                  batch_size=10)
    main_loop = threading.Thread(target=fan_out_in_the_main_loop)
    main_loop.start()
    try:
        assert run_until(watcher, lambda: bool(watcher.source.assignment()))
        # The new group starts at the topic's end once it has its position;
        # a cancel published before that is not seen, so it is sent again,
        # as a redelivery would be (the mark is idempotent).
        marked = False
        for _ in range(10):
            publisher.publish(topic, cancelled, key="camp-1")
            publisher.flush()
            marked = run_until(watcher, lambda: store.cancel_requested("camp-1"), deadline=5)
            if marked:
                break
        assert marked, "the watcher never marked the fan-out"
    finally:
        gate.set()
        main_loop.join(30)
        watcher.shutdown()
        publisher.sink.close()
    assert outcome["size"] == 20 and len(jobs(broker)) == 20
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 20, "cut_short": True}]
    assert store.fanouts.find_one({"_id": "camp-1"})["done"] is True


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
