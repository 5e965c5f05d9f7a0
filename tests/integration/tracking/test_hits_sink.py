"""The librdkafka sink the tracking web processes publish hits with keeps
KafkaSink's promise: flush returns once the broker has every message, and
raises when it cannot have them."""
import pytest

from shared.kafka.rdkafka_impl import DeliveryFailed, RdKafkaSink
from tests.kafka_reader import TopicReader


def test_flushed_messages_are_on_the_topic_with_key_and_headers(kafka_bootstrap, make_topic):
    topic = make_topic("hits", partitions=3)
    tail = TopicReader(kafka_bootstrap, topic, since="now")
    sink = RdKafkaSink(kafka_bootstrap, "test-hits")
    try:
        for n in range(50):
            sink.send(topic, f"k{n % 5}".encode(), b'{"n": %d}' % n, [("ce_id", b"x%d" % n)])
        sink.flush(timeout=30)
        seen = tail.wait_for(lambda e: True, count=50)
    finally:
        sink.close()
        tail.close()
    assert sorted(e["n"] for e in seen) == list(range(50))


def test_flush_raises_when_the_broker_cannot_be_reached():
    sink = RdKafkaSink("127.0.0.1:1", "test-hits-down", **{"message.timeout.ms": 1000})
    sink.send("anything", b"k", b"v")
    with pytest.raises(DeliveryFailed):
        sink.flush(timeout=10)
