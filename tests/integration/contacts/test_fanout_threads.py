"""The contacts worker's fan-out threads, through the real Kafka and FerretDB:
- the consumer loop only records a launch, so while a big fan-out runs it
  goes on reading: another campaign's launch on the same partition is fanned
  out by the second thread, and a cancel reaches the big one at once;
- a stopping worker's thread lets go between batches, and another worker's
  thread goes on with nobody produced twice.
The fan-outs' jobs go to an in-memory broker: on the real one they would
feed the running stack's senders."""
import threading
from types import SimpleNamespace

from services.contacts import fanout
from services.contacts.fanout_store import FanoutStore
from services.contacts.worker import start_fanout_threads
from shared.config import Config
from shared.kafka.factory import consumer_loop, event_producer
from shared.kafka.memory import InMemoryBroker
from shared.kafka.producer import EventProducer
from tests.integration.campaigns.test_fanout import (CONTACTS, campaign_event, jobs, launched,
                                                     ready, stream_of)
from tests.integration.sender.harness import wait_for
from tests.loops import run_until

SMALL = CONTACTS[:5]


def gated_stream(contacts, gate: threading.Event, open_after_batches: int):
    """The audience; before batch `open_after_batches` it waits for the gate."""
    inner = stream_of(contacts)

    def stream(*args, **kwargs):
        for number, batch in enumerate(inner(*args, **kwargs)):
            if number == open_after_batches:
                assert gate.wait(90), "the test never opened the gate"
            yield batch
    return stream


def by_list(**streams):
    """An audience stream per list id, as the launches name them."""
    def stream(account_id, list_ids, segment_id, batch_size):
        return streams[list_ids[0]](account_id, list_ids, segment_id, batch_size)
    return stream


class Worker:
    """A worker's fan-out threads, started as services/contacts/worker.py
    starts them, with runners of the test's own (stream, broker)."""

    def __init__(self, db, stream, broker, name: str, threads: int = 2):
        self.wake, self.stop = threading.Event(), threading.Event()
        runners = [fanout.FanoutRunner(FanoutStore(db), stream, EventProducer(broker.sink()),
                                       f"{name}-{number}", batch_size=10,
                                       should_stop=self.stop.is_set)
                   for number in range(threads)]
        self.threads = start_fanout_threads(runners, self.wake, self.stop, poll_seconds=0.2)

    def shutdown(self) -> bool:
        self.stop.set()
        self.wake.set()
        for thread in self.threads:
            thread.join(30)
        return not any(thread.is_alive() for thread in self.threads)


def of(campaign_id, records):
    return [r for r in records if r["campaign_id"] == campaign_id]


def test_the_loop_goes_on_reading_while_a_big_fan_out_runs(kafka_bootstrap, make_topic,
                                                            mongo_db, unique):
    topic = make_topic("campaigns", partitions=1)
    config = Config(kafka_bootstrap=kafka_bootstrap)
    publisher = event_producer(config, "campaigns-test")
    store, broker, gate = FanoutStore(mongo_db), InMemoryBroker(), threading.Event()
    worker = Worker(mongo_db, by_list(big=gated_stream(CONTACTS, gate, 2),
                                      small=stream_of(SMALL)), broker, "worker")
    loop = consumer_loop(config, "contacts", f"contacts-{unique}", [topic],
                         fanout.handlers(SimpleNamespace(db=mongo_db), wake=worker.wake.set))
    try:
        publisher.publish(topic, launched("camp-1", ("big",)), key="camp-1")
        publisher.flush()
        assert run_until(loop, lambda: len(store.produced_ids("camp-1")) == 20)
        # the big fan-out is held at its third batch; the same partition goes on
        publisher.publish(topic, launched("camp-2", ("small",)), key="camp-2")
        publisher.publish(topic, campaign_event("cancelled"), key="camp-1")
        publisher.flush()
        assert run_until(loop, lambda: bool(of("camp-2", ready(broker)))
                         and store.marks("camp-1").cancel)
        assert of("camp-2", ready(broker)) == [{"campaign_id": "camp-2", "audience_size": 5}]
        assert of("camp-1", ready(broker)) == []
        gate.set()
        wait_for(lambda: of("camp-1", ready(broker)), 60, "the big fan-out's audience.ready")
    finally:
        gate.set()
        assert worker.shutdown()
        loop.shutdown()
        publisher.sink.close()
    assert of("camp-1", ready(broker)) == [
        {"campaign_id": "camp-1", "audience_size": 20, "cut_short": True}]
    assert len(of("camp-1", jobs(broker))) == 20 and len(of("camp-2", jobs(broker))) == 5


def test_a_stopping_worker_lets_go_and_another_worker_goes_on(mongo_db):
    store, broker, gate = FanoutStore(mongo_db), InMemoryBroker(), threading.Event()
    first = Worker(mongo_db, gated_stream(CONTACTS, gate, 2), broker, "first", threads=1)
    try:
        fanout.FanoutRequests(store, first.wake.set).launched(launched())
        wait_for(lambda: len(store.produced_ids("camp-1")) == 20, 60, "two batches")
        first.stop.set()   # SIGTERM, while the fan-out waits for its third batch
    finally:
        gate.set()
        assert first.shutdown()
    assert len(jobs(broker)) == 20 and ready(broker) == []
    assert store.get("camp-1")["lease_owner"] is None

    second = Worker(mongo_db, stream_of(CONTACTS), broker, "second", threads=1)
    try:
        wait_for(lambda: ready(broker), 60, "audience.ready")   # found by its poll, not woken
    finally:
        assert second.shutdown()
    produced = jobs(broker)
    assert len(produced) == 95 and {j["contact_id"] for j in produced} == \
        {c["_id"] for c in CONTACTS}
    assert ready(broker) == [{"campaign_id": "camp-1", "audience_size": 95}]
