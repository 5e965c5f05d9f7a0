"""The consumer loop's promises, on the in-memory broker (the same
assertions run against Kafka in tests/integration/test_kafka_loop.py)."""
import os
import signal

import pytest

from shared.events import new_event
from shared.kafka import ConsumerLoop, EventProducer, PermanentError
from shared.kafka.consumer import run_until_signalled
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


def test_sigterm_stops_the_loop_and_tells_the_rest_of_the_process():
    broker = InMemoryBroker(partitions=1)
    publish(broker, probe(0), probe(1))
    seen, told = [], []

    def handler(event):
        seen.append(event.data["n"])
        os.kill(os.getpid(), signal.SIGTERM)

    loop = make_loop(broker, {"platform.probe": handler})
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        run_until_signalled(loop, on_stop=lambda: told.append("stop"))
    finally:
        for number, handler_before in previous.items():
            signal.signal(number, handler_before)
    assert seen == [0] and told == ["stop"]
    assert broker.committed["g"][("in", 0)] == 1


def test_revoked_partitions_are_committed_first():
    broker = InMemoryBroker(partitions=1)
    publish(broker, probe(1))
    loop = make_loop(broker, {"platform.probe": lambda e: None})
    loop.commit_interval = 3600
    loop.run_once()
    assert broker.committed["g"] == {}
    loop.source.on_revoke([("in", 0)])
    assert broker.committed["g"][("in", 0)] == 1


def test_a_failed_commit_of_partitions_still_ours_is_tried_again_with_no_new_record():
    """A quiet partition's commit stayed behind its last record until the
    next one came, for as long as nothing came."""
    broker = InMemoryBroker(partitions=1)
    publish(broker, probe(1))
    clock = Clock()
    loop = make_loop(broker, {"platform.probe": lambda e: None}, clock=clock)
    real_commit, failures = loop.source.commit, [ConnectionError("coordinator away")] * 2

    def commit_failing_once(offsets):
        if failures:
            raise failures.pop()
        real_commit(offsets)
    loop.source.commit = commit_failing_once
    loop.run_once()
    assert broker.committed["g"] == {}
    loop.run_once()  # at once: tried again only after a pause, and that grows
    clock.now += 0.5
    loop.run_once()  # nothing new to read; fails again
    clock.now += 0.5
    loop.run_once()
    assert broker.committed["g"] == {}
    clock.now += 0.5
    loop.run_once()
    assert broker.committed["g"][("in", 0)] == 1
    assert failures == []


def test_a_failed_commit_of_a_revoked_partition_is_left_to_its_next_owner():
    broker = InMemoryBroker(partitions=1)
    publish(broker, probe(1))
    loop = make_loop(broker, {"platform.probe": lambda e: None})
    loop.commit_interval = 3600
    loop.run_once()
    def commit_failing(offsets):
        raise ConnectionError("rebalancing")
    loop.source.commit = commit_failing
    loop.source.on_revoke([("in", 0)])
    assert loop._done == {} and loop._first_uncommitted == {}


def test_unknown_event_types_are_skipped_not_dead_lettered():
    broker = InMemoryBroker()
    publish(broker, probe(1))
    make_loop(broker, {"other.type": pytest.fail}).run_once()
    assert broker.messages(DEAD_LETTERS) == []


def test_a_type_no_handler_takes_is_settled_by_its_header_without_decoding():
    # The body is not even JSON: had it been decoded, it would be dead-lettered.
    broker = InMemoryBroker(partitions=1)
    broker.append("in", b"s1", b"{not json", [("ce_type", b"delivery.sent")])
    publish(broker, probe(1))
    seen = []
    make_loop(broker, {"platform.probe": lambda e: seen.append(e.data["n"])}).run_once()
    assert seen == [1]
    assert broker.messages(DEAD_LETTERS) == []
    assert broker.committed["g"][("in", 0)] == 2


def test_the_header_of_a_handled_type_or_no_header_means_the_body_is_decoded():
    broker = InMemoryBroker(partitions=1)
    broker.append("in", b"s1", b"{not json", [("ce_type", b"platform.probe")])
    broker.append("in", b"s1", b"{not json")
    broker.append("in", b"s1", b"{not json", [("ce_type", b"")])
    make_loop(broker, {"platform.probe": pytest.fail}).run_once()
    assert len(broker.messages(DEAD_LETTERS)) == 3


# -- the optional batch handler ------------------------------------------

def paused(n):
    return new_event("campaign.paused", source="/tests", subject=f"s{n}", account_id="a1",
                     data={"campaign_id": f"c{n}"})


def make_batch_loop(broker, batch_handler, handlers=None, clock=None):
    source = broker.source(["in"], "g")
    return ConsumerLoop(source, handlers or {}, service="test", group="g",
                        dead_letters=broker.sink(), commit_interval=0, clock=clock or Clock(),
                        batch_handler=batch_handler, batch_types={"platform.probe"})


def test_batch_handler_gets_a_whole_poll_at_once_and_commits_after():
    broker = InMemoryBroker(partitions=3)
    publish(broker, *(probe(i) for i in range(30)))
    calls = []
    loop = make_batch_loop(broker, lambda events: calls.append([e.data["n"] for e in events]))
    assert loop.run_once() == 30
    assert len(calls) == 1 and sorted(calls[0]) == list(range(30))
    assert sum(broker.committed["g"].values()) == 30


def test_a_per_event_handler_ends_the_run_so_each_partition_keeps_its_order():
    broker = InMemoryBroker(partitions=1)
    publish(broker, probe(1), probe(2), paused(3), probe(4))
    order = []
    loop = make_batch_loop(broker, lambda events: order.append([e.data["n"] for e in events]),
                           handlers={"campaign.paused": lambda e: order.append("paused")})
    loop.run_once()
    assert order == [[1, 2], "paused", [4]]
    assert broker.committed["g"][("in", 0)] == 4


def test_transient_batch_failure_retries_the_whole_run_after_backoff_and_loses_nothing():
    broker = InMemoryBroker(partitions=2)
    publish(broker, *(probe(i) for i in range(10)))
    clock = Clock()
    attempts, seen = [], []

    def handler(events):
        attempts.append(len(events))
        if len(attempts) == 1:
            raise ConnectionError("database down")
        seen.extend(e.data["n"] for e in events)

    loop = make_batch_loop(broker, handler, clock=clock)
    assert loop.run_once() == 0
    assert broker.committed["g"] == {}
    loop.run_once()                      # paused: nothing polled
    assert attempts == [10]
    clock.now += 0.6
    loop.run_once()
    assert sorted(seen) == list(range(10))
    assert sum(broker.committed["g"].values()) == 10
    assert broker.messages(DEAD_LETTERS) == []


def test_permanent_error_in_a_batch_dead_letters_only_the_event_that_raises_it():
    broker = InMemoryBroker(partitions=1)
    publish(broker, *(probe(i) for i in range(5)))
    seen = []

    def handler(events):
        if any(e.data["n"] == 2 for e in events):
            raise PermanentError("campaign 2 does not exist")
        seen.extend(e.data["n"] for e in events)

    make_batch_loop(broker, handler).run_once()
    assert seen == [0, 1, 3, 4]
    (dead,) = broker.messages(DEAD_LETTERS)
    assert "campaign 2 does not exist" in dict(dead.headers)["dlq.reason"].decode()
    assert broker.committed["g"][("in", 0)] == 5


def test_invalid_messages_and_unknown_types_inside_a_run_do_not_reach_the_batch():
    broker = InMemoryBroker(partitions=1)
    publish(broker, probe(1))
    broker.append("in", b"s1", b"{not json")
    publish(broker, paused(2), probe(3))
    seen = []
    make_batch_loop(broker, lambda events: seen.append([e.data["n"] for e in events])).run_once()
    assert seen == [[1, 3]]
    assert len(broker.messages(DEAD_LETTERS)) == 1
    assert broker.committed["g"][("in", 0)] == 4


def test_a_type_no_handler_takes_is_skipped_inside_a_run_by_its_header():
    broker = InMemoryBroker(partitions=1)
    publish(broker, probe(1))
    broker.append("in", b"s1", b"{not json", [("ce_type", b"delivery.sent")])
    publish(broker, probe(2))
    seen = []
    make_batch_loop(broker, lambda events: seen.append([e.data["n"] for e in events])).run_once()
    assert seen == [[1, 2]]
    assert broker.messages(DEAD_LETTERS) == []
    assert broker.committed["g"][("in", 0)] == 3


def test_stop_during_a_batch_commits_it_and_leaves_the_rest_for_redelivery():
    broker = InMemoryBroker(partitions=1)
    publish(broker, probe(0), probe(1), paused(2), probe(3))
    seen = []
    loop = make_batch_loop(broker, lambda events: seen.extend(e.data["n"] for e in events))
    loop.handlers["campaign.paused"] = lambda e: loop.stop()
    loop.run()
    assert seen == [0, 1]
    assert broker.committed["g"][("in", 0)] == 3
