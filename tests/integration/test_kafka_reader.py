"""The tests' topic reader (tests/kafka_reader.py) against the real broker:
the other tests trust it to see everything, and only what came after its start."""
import json

from kafka import KafkaProducer

from tests.kafka_reader import TopicReader


def _publish(bootstrap, topic, numbers):
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for n in numbers:
        producer.send(topic, key=b"k%d" % n, value=json.dumps({"n": n}).encode())
    producer.flush(timeout=30)
    producer.close()


def test_from_the_beginning_it_reads_every_partition_to_its_end(kafka_bootstrap, make_topic):
    topic = make_topic("all", partitions=3)
    _publish(kafka_bootstrap, topic, range(30))
    with TopicReader(kafka_bootstrap, topic) as reader:
        events = reader.read(timeout=30)
    assert sorted(e["n"] for e in events) == list(range(30))


def test_since_now_leaves_out_what_came_before(kafka_bootstrap, make_topic):
    topic = make_topic("now", partitions=3)
    _publish(kafka_bootstrap, topic, range(5))
    with TopicReader(kafka_bootstrap, topic, since="now") as reader:
        _publish(kafka_bootstrap, topic, range(5, 8))
        assert sorted(e["n"] for e in reader.read(timeout=30)) == [5, 6, 7]
        assert [r.key for r in reader.records if json.loads(r.value)["n"] == 6] == [b"k6"]


def test_it_waits_for_what_has_not_come_yet_and_gives_up_at_the_timeout(kafka_bootstrap,
                                                                        make_topic):
    topic = make_topic("wait", partitions=2)
    with TopicReader(kafka_bootstrap, topic, since="now") as reader:
        assert reader.wait_for(lambda e: e["n"] == 1, timeout=1) == []
        _publish(kafka_bootstrap, topic, [1, 2, 1])
        assert reader.wait_for(lambda e: e["n"] == 1, count=2, timeout=30) == [{"n": 1}] * 2
