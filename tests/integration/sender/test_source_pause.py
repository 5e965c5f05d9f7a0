"""RdKafkaSource's pause and resume on the real broker, as the send loop
uses them (seek back, pause, resume when due): a partition resumed is read
again, whatever the client did with it while it was paused. kafka-python
3.0.12, which every loop read with until the eleventh session, failed both
(docs/sender.md, "Holds and rebalances"); these tests keep any client held
to it."""
from __future__ import annotations

import time

import pytest
from kafka import KafkaProducer

from shared.kafka.rdkafka_impl import RdKafkaSource

pytestmark = pytest.mark.timeout(180)


def produce(bootstrap: str, topic: str, partition: int, count: int) -> None:
    """count records on one partition, chosen rather than hashed from a key."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for n in range(count):
        producer.send(topic, value=str(n).encode(), partition=partition)
    producer.flush()
    producer.close()


def poll_until(sources, done, what: str, max_records: int = 500, timeout: float = 60):
    """Poll every source (each member of a group must poll for a rebalance to
    finish) until done(records of the first source) holds."""
    records = []
    deadline = time.monotonic() + timeout
    while not done(records):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        records += sources[0].poll(200, max_records)
        for other in sources[1:]:
            other.poll(200, 500)
    return records


def test_a_partition_paused_with_records_fetched_is_read_again_after_resume(
        kafka_bootstrap, make_topic, unique):
    """What a client had fetched for a partition before it was paused is
    read again after the resume, even when another partition's records
    were read meanwhile (kafka-python 3.0.12 parked them for good)."""
    topic = make_topic("jobs", partitions=2)
    produce(kafka_bootstrap, topic, 0, 100)
    source = RdKafkaSource([topic], f"test-{unique}", kafka_bootstrap, f"test-{unique}")
    try:
        first = poll_until([source], lambda got: got, "the first records", max_records=10)
        assert {r.partition for r in first} == {0} and len(first) < 100  # the rest is buffered
        source.seek((topic, 0), first[0].offset)  # held: rewound and paused
        source.pause((topic, 0))
        produce(kafka_bootstrap, topic, 1, 5)
        other = poll_until([source], lambda got: len(got) >= 5, "the other partition's records")
        assert {r.partition for r in other} == {1}
        source.resume((topic, 0))
        again = poll_until([source], lambda got: len(got) >= 100, "partition 0 again")
        assert [r.offset for r in again] == list(range(100))
    finally:
        source.close()


def test_a_partition_sought_past_what_was_read_and_paused_goes_on_from_there(
        kafka_bootstrap, make_topic, unique):
    """The send loop keeps a held partition's records in memory, sets its
    position past them and pauses it: after the resume the broker sends
    what follows them, nothing twice and nothing skipped."""
    topic = make_topic("jobs", partitions=1)
    produce(kafka_bootstrap, topic, 0, 100)
    source = RdKafkaSource([topic], f"test-{unique}", kafka_bootstrap, f"test-{unique}")
    try:
        first = poll_until([source], lambda got: got, "the first records", max_records=10)
        assert len(first) < 100  # the rest is buffered, and dropped at the pause
        source.seek((topic, 0), first[-1].offset + 1)
        source.pause((topic, 0))
        assert source.poll(1000, 500) == []
        source.resume((topic, 0))
        rest = poll_until([source], lambda got: len(got) >= 100 - len(first), "the rest")
        assert [r.offset for r in first + rest] == list(range(100))
    finally:
        source.close()


def test_a_partition_paused_when_a_rebalance_starts_comes_back_unpaused(
        kafka_bootstrap, make_topic, unique):
    """An eager rebalance revokes every partition (a loop forgets its holds)
    and hands most back with their paused flag (both clients keep it). A
    partition assigned comes unpaused, so a loop that forgot it still reads it."""
    topic = make_topic("jobs", partitions=4)
    for partition in range(4):
        produce(kafka_bootstrap, topic, partition, 10)
    group = f"test-{unique}"
    first = RdKafkaSource([topic], group, kafka_bootstrap, f"{group}-1")
    second = None
    try:
        poll_until([first], lambda got: {r.partition for r in got} == set(range(4)),
                   "every partition read once")
        for partition in range(4):
            first.seek((topic, partition), 0)
            first.pause((topic, partition))
        second = RdKafkaSource([topic], group, kafka_bootstrap, f"{group}-2")

        def rebalanced_and_read(got):
            kept = first.assignment()
            return second.assignment() and len(kept) < 4 and len(got) >= 10 * len(kept)
        again = poll_until([first, second], rebalanced_and_read,
                           "the rebalance, then the kept partitions read again")
        kept = first.assignment()
        assert sorted((r.partition, r.offset) for r in again) == \
            sorted((p, n) for _, p in kept for n in range(10))
    finally:
        first.close()
        if second:
            second.close()
