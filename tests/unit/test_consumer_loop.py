"""The consumer loop's promises, on the in-memory broker (the same
assertions run against Kafka in tests/integration/test_kafka_loop.py)."""
import pytest

from shared.events import new_event
from shared.kafka import ConsumerLoop, EventProducer, PermanentError
from shared.kafka.memory import InMemoryBroker
from shared.topics import DEAD_LETTERS


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def probe(n):
    return new_event("platform.probe", source="/tests", subject=f"s{n}", account_id="a1",
                     data={"n": n})


def make_loop(broker, handlers, clock=None, group="g"):
    source = broker.source(["in"], group)
    return ConsumerLoop(source, handlers, service="test", group=group,
                        dead_letters=broker.sink(), commit_interval=0,
                        clock=clock or Clock())


def publish(broker, *events):
    producer = EventProducer(broker.sink())
    for event in events:
        producer.publish("in", event)
    producer.flush()


def test_handles_each_event_and_commits_after():
    broker = InMemoryBroker()
    publish(broker, *(probe(i) for i in range(10)))
    seen = []
    loop = make_loop(broker, {"platform.probe": lambda e: seen.append(e.data["n"])})
    loop.run_once()
    assert sorted(seen) == list(range(10))
    assert sum(broker.committed["g"].values()) == 10


def test_restarted_consumer_does_not_reprocess_committed_work():
    broker = InMemoryBroker()
    publish(broker, *(probe(i) for i in range(5)))
    first = []
    make_loop(broker, {"platform.probe": lambda e: first.append(e.id)}).run_once()
    publish(broker, *(probe(i) for i in range(5, 8)))
    second = []
    make_loop(broker, {"platform.probe": lambda e: second.append(e.data["n"])}).run_once()
    assert len(first) == 5
    assert sorted(second) == [5, 6, 7]


def test_invalid_message_goes_to_dead_letters_with_reason():
    broker = InMemoryBroker()
    broker.append("in", b"k", b"{not json")
    broker.append("in", b"k", b'{"specversion": "1.0"}')
    loop = make_loop(broker, {})
    loop.run_once()
    dead = broker.messages(DEAD_LETTERS)
    assert len(dead) == 2
    reasons = [dict(d.headers)["dlq.reason"].decode() for d in dead]
    assert "not JSON" in reasons[0]
    assert "envelope" in reasons[1]
    assert dead[0].value == b"{not json"


def test_data_that_breaks_its_schema_is_dead_lettered():
    broker = InMemoryBroker()
    bad = probe(1).to_dict()
    bad["data"] = {"n": "one"}
    import json
    broker.append("in", b"k", json.dumps(bad).encode())
    make_loop(broker, {}).run_once()
    (dead,) = broker.messages(DEAD_LETTERS)
    assert "data n" in dict(dead.headers)["dlq.reason"].decode()


def test_permanent_error_dead_letters_and_moves_on():
    broker = InMemoryBroker(partitions=1)
    publish(broker, probe(1), probe(2))
    seen = []

    def handler(event):
        if event.data["n"] == 1:
            raise PermanentError("contact does not exist")
        seen.append(event.data["n"])

    make_loop(broker, {"platform.probe": handler}).run_once()
    assert seen == [2]
    assert len(broker.messages(DEAD_LETTERS)) == 1


def test_transient_failure_retries_the_same_message_after_backoff_and_loses_nothing():
    broker = InMemoryBroker(partitions=1)
    publish(broker, probe(1), probe(2))
    clock = Clock()
    attempts, seen = [], []

    def handler(event):
        attempts.append(event.data["n"])
        if len(attempts) <= 2:
            raise ConnectionError("database down")
        seen.append(event.data["n"])

    loop = make_loop(broker, {"platform.probe": handler}, clock)
    loop.run_once()                      # fails on 1, pauses the partition
    loop.run_once()                      # still paused: nothing polled
    assert attempts == [1]
    assert broker.committed["g"].get(("in", 0), 0) == 0
    clock.now += 0.6
    loop.run_once()                      # second failure, longer backoff
    clock.now += 0.9
    loop.run_once()
    assert attempts == [1, 1]
    clock.now += 0.2
    loop.run_once()
    assert seen == [1, 2]
    assert broker.committed["g"][("in", 0)] == 2
    assert broker.messages(DEAD_LETTERS) == []


def test_failed_flush_before_commit_reprocesses_instead_of_committing():
    broker = InMemoryBroker(partitions=1)
    publish(broker, probe(1))
    out_sink = broker.sink()
    out = EventProducer(out_sink)
    source = broker.source(["in"], "g")
    loop = ConsumerLoop(source, {"platform.probe": lambda e: out.publish("out", probe(9))},
                        service="t", group="g", dead_letters=broker.sink(),
                        before_commit=out.flush, commit_interval=0, clock=Clock())
    out_sink.fail_next_flush = ConnectionError("broker down")
    loop.run_once()
    assert broker.committed["g"].get(("in", 0), 0) == 0
    assert broker.messages("out") == []
    loop.run_once()                      # redelivered, produced again, committed
    assert len(broker.messages("out")) == 1
    assert broker.committed["g"][("in", 0)] == 1


def test_stop_commits_done_work_and_leaves_the_rest_for_redelivery():
    broker = InMemoryBroker(partitions=1)
    publish(broker, *(probe(i) for i in range(4)))
    seen = []
    loop = make_loop(broker, {})

    def handler(event):
        seen.append(event.data["n"])
        if event.data["n"] == 1:
            loop.stop()

    loop.handlers["platform.probe"] = handler
    loop.run()
    assert seen == [0, 1]
    assert broker.committed["g"][("in", 0)] == 2


def test_revoked_partitions_are_committed_first():
    broker = InMemoryBroker(partitions=1)
    publish(broker, probe(1))
    loop = make_loop(broker, {"platform.probe": lambda e: None})
    loop.commit_interval = 3600
    loop.run_once()
    assert broker.committed["g"] == {}
    loop.source.on_revoke([("in", 0)])
    assert broker.committed["g"][("in", 0)] == 1


def test_unknown_event_types_are_skipped_not_dead_lettered():
    broker = InMemoryBroker()
    publish(broker, probe(1))
    make_loop(broker, {"other.type": pytest.fail}).run_once()
    assert broker.messages(DEAD_LETTERS) == []
