"""The shared producer and consumer loop against the real Kafka broker."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from shared.events import new_event
from shared.heartbeat import Stalled, check_commits_answered
from shared.kafka import ConsumerLoop
from shared.kafka.kafka_impl import KafkaSink
from shared.kafka.rdkafka_impl import RdKafkaSource  # what every loop reads with
from shared.kafka.producer import EventProducer
from shared.topics import DEAD_LETTERS
from tests.kafka_freeze import kafka_frozen_on_demand
from tests.kafka_reader import TopicReader
from tests.loops import run_until

REPO = Path(__file__).resolve().parents[2]


def probe(n):
    return new_event("platform.probe", source="/tests", subject=f"s{n}", account_id="a",
                     data={"n": n})


def publish(bootstrap, topic, numbers):
    producer = EventProducer(KafkaSink(bootstrap, "test-producer"))
    for n in numbers:
        producer.publish(topic, probe(n))
    producer.flush()
    producer.sink.close()


def test_produced_events_come_out_of_the_consumer_loop(kafka_bootstrap, make_topic, unique):
    topic = make_topic("roundtrip", partitions=3)
    publish(kafka_bootstrap, topic, range(50))
    seen = []
    loop = ConsumerLoop(RdKafkaSource([topic], f"g-{unique}", kafka_bootstrap, "t"),
                        {"platform.probe": lambda e: seen.append(e.data["n"])},
                        service="test", group=f"g-{unique}",
                        dead_letters=KafkaSink(kafka_bootstrap, "t-dlq"))
    assert run_until(loop, lambda: len(seen) >= 50), "timed out"
    loop.shutdown()
    assert sorted(seen) == list(range(50))


def test_events_no_handler_takes_are_committed_past_by_their_type_header(
        kafka_bootstrap, make_topic, unique):
    topic = make_topic("skipped", partitions=1)
    producer = EventProducer(KafkaSink(kafka_bootstrap, "test-producer"))
    for n in range(3):
        producer.publish(topic, probe(n))
        producer.publish(topic, new_event("campaign.paused", source="/tests", subject=f"s{n}",
                                          account_id="a", data={"campaign_id": f"c{n}"}))
    producer.flush()
    producer.sink.close()
    seen, decoded = [], []
    loop = ConsumerLoop(RdKafkaSource([topic], f"g-{unique}", kafka_bootstrap, "t"),
                        {"platform.probe": lambda e: seen.append(e.data["n"])},
                        service="test", group=f"g-{unique}",
                        dead_letters=KafkaSink(kafka_bootstrap, "t-dlq"), commit_interval=0)
    decode, commit, committed = loop._decode, loop.source.commit, {}
    loop._decode = lambda record: decoded.append(record.offset) or decode(record)
    loop.source.commit = lambda offsets: committed.update(offsets) or commit(offsets)
    assert run_until(loop, lambda: committed.get((topic, 0)) == 6), "timed out"
    loop.shutdown()
    assert seen == [0, 1, 2]
    assert decoded == [0, 2, 4]  # the probes only: librdkafka hands the headers over


def test_a_loop_whose_commit_hangs_on_a_frozen_kafka_fails_its_liveness_check_until_it_answers(
        kafka_bootstrap, make_topic, unique):
    """A sender's loop once stopped after a Kafka disruption, logging
    nothing, and /healthz answered 200 throughout; every worker's loop
    commits the same way. Here the broker freezes between the handler and
    the commit: the loop's watch fails, and passes once Kafka answers."""
    topic = make_topic("frozen", partitions=1)
    publish(kafka_bootstrap, topic, [1])
    handled = threading.Event()
    loop = ConsumerLoop(RdKafkaSource([topic], f"g-{unique}", kafka_bootstrap, "t"),
                        {"platform.probe": lambda e: handled.set()},
                        service="test", group=f"g-{unique}",
                        dead_letters=KafkaSink(kafka_bootstrap, "t-dlq"), commit_interval=3600,
                        stall_seconds=2)
    assert run_until(loop, handled.is_set), "timed out"
    loop.commit_interval = 0
    with kafka_frozen_on_demand() as freeze:
        freeze()
        turn = threading.Thread(target=loop.run_once)
        turn.start()
        stalled = None
        for _ in range(100):
            time.sleep(0.1)
            try:
                loop.watch.check()
            except Stalled as exc:
                stalled = str(exc)
                break
        assert stalled and f"the g-{unique} loop: its Kafka commit" in stalled, stalled
    turn.join(120)
    assert not turn.is_alive()
    loop.watch.check()
    loop.shutdown()


def _poll_until(source, done, seconds=60.0) -> list:
    records, deadline = [], time.monotonic() + seconds
    while not done(records) and time.monotonic() < deadline:
        records += source.poll(200, 10)
    return records


def test_a_commit_sent_without_waiting_returns_on_a_frozen_kafka_and_is_answered_after(
        kafka_bootstrap, make_topic, unique):
    """The send loop's commit. librdkafka's synchronous one has no timeout:
    a sender stuck in it sent nothing and never even ran its SIGTERM handler.
    Sent without waiting, it leaves the loop free, and the liveness check
    sees how long it has gone unanswered."""
    topic = make_topic("unwaited", partitions=1)
    publish(kafka_bootstrap, topic, range(3))
    group = f"g-{unique}"
    source = RdKafkaSource([topic], group, kafka_bootstrap, "t")
    try:
        assert len(_poll_until(source, lambda records: len(records) >= 3)) == 3
        with kafka_frozen_on_demand() as freeze:
            freeze()
            started = time.monotonic()
            source.commit({(topic, 0): 3}, wait=False)
            assert time.monotonic() - started < 1
            sent_at = source.oldest_unanswered_commit()
            assert sent_at is not None
            source.poll(500, 10)   # the loop goes on meanwhile
            assert source.oldest_unanswered_commit() == sent_at
            with pytest.raises(Stalled, match="offset commit has not been answered"):
                check_commits_answered(sent_at, 0.1)
        _poll_until(source, lambda _: source.oldest_unanswered_commit() is None)
        assert source.oldest_unanswered_commit() is None
        assert committed_offset(kafka_bootstrap, group, topic) == 3
    finally:
        source.close()


def committed_offset(bootstrap: str, group: str, topic: str) -> int:
    """What the broker holds for the group, asked by a client of its own."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])
    answer = admin.list_consumer_group_offsets([request])[group].result(10)
    return answer.topic_partitions[0].offset


def _wait_lines(path: Path, count: int, deadline=60) -> list[int]:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        lines = path.read_text().split() if path.exists() else []
        if len(lines) >= count:
            return [int(x) for x in lines]
        time.sleep(0.2)
    raise AssertionError(f"only {path.read_text().split() if path.exists() else []} seen")


def _start(kafka_bootstrap, topic, group, out):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, str(Path(__file__).with_name("probe_consumer.py")),
                             kafka_bootstrap, topic, group, str(out)], env=env)


def test_sigterm_commits_and_a_restart_does_not_reprocess(kafka_bootstrap, make_topic, unique,
                                                          tmp_path):
    topic = make_topic("sigterm", partitions=2)
    group = f"g-{unique}"
    publish(kafka_bootstrap, topic, range(20))
    first_out = tmp_path / "first.txt"
    first = _start(kafka_bootstrap, topic, group, first_out)
    try:
        assert sorted(_wait_lines(first_out, 20)) == list(range(20))
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
    finally:
        first.kill()
    publish(kafka_bootstrap, topic, range(20, 25))
    second_out = tmp_path / "second.txt"
    second = _start(kafka_bootstrap, topic, group, second_out)
    try:
        assert sorted(_wait_lines(second_out, 5)) == [20, 21, 22, 23, 24]
        time.sleep(2)  # anything reprocessed would show up by now
        assert sorted(int(x) for x in second_out.read_text().split()) == [20, 21, 22, 23, 24]
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)


def test_invalid_message_lands_in_the_dead_letter_topic(kafka_bootstrap, make_topic, unique):
    topic = make_topic("dlq", partitions=1)
    bad = f"this is not an event ({unique})".encode()
    sink = KafkaSink(kafka_bootstrap, "raw")
    sink.send(topic, b"k1", bad)
    sink.flush()
    publish(kafka_bootstrap, topic, [7])
    seen = []
    loop = ConsumerLoop(RdKafkaSource([topic], f"g-{unique}", kafka_bootstrap, "t"),
                        {"platform.probe": lambda e: seen.append(e.data["n"])},
                        service="test", group=f"g-{unique}",
                        dead_letters=KafkaSink(kafka_bootstrap, "t-dlq"))
    assert run_until(loop, lambda: seen == [7]), "timed out"
    loop.shutdown()

    with TopicReader(kafka_bootstrap, DEAD_LETTERS, decode=bytes) as reader:
        reader.read(until=lambda values: bad in values, timeout=20)
    ours = [dict(r.headers) for r in reader.records if r.value == bad]
    assert len(ours) == 1, "no dead letter for our topic, or more than one"
    headers = ours[0]
    assert headers["dlq.topic"] == topic.encode()
    assert b"not JSON" in headers["dlq.reason"]
    assert headers["dlq.group"] == f"g-{unique}".encode()


def test_readiness_probe_speaks_to_the_real_broker(kafka_bootstrap):
    import pytest
    from shared.kafka.probe import check_broker
    check_broker(kafka_bootstrap)
    with pytest.raises(ConnectionError, match="Kafka unreachable"):
        check_broker("127.0.0.1:1", timeout=0.5)
