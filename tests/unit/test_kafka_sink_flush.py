"""KafkaSink.flush (shared/kafka/kafka_impl.py) over a stand-in producer:
what one flush leaves does not fail the thread's next request."""
import threading

import pytest
from kafka.errors import KafkaError, KafkaTimeoutError

from shared.kafka.kafka_impl import KafkaSink


class _Future:
    def __init__(self):
        self.is_done, self.error = False, None

    def get(self, timeout=None):
        if self.error:
            raise self.error
        if not self.is_done:
            raise KafkaTimeoutError("not acknowledged")
        return "ok"


class _Producer:
    """Stalls flushes until told the broker is back."""

    def __init__(self):
        self.futures, self.stalled = [], True

    def send(self, topic, key=None, value=None, headers=None):
        self.futures.append(_Future())
        return self.futures[-1]

    def flush(self, timeout=None):
        if self.stalled:
            raise KafkaTimeoutError(f"Failed to flush buffered records within {timeout} secs")
        for future in self.futures:
            future.is_done = future.error is None


def test_a_flush_that_timed_out_leaves_nothing_to_the_next_request():
    """Campaigns flushes a move's event within 20 s: one that timed out left
    its send on the thread, and the thread's next request, whose own send
    was acknowledged, failed on it (a 500 after its status had changed)."""
    sink = object.__new__(KafkaSink)
    sink._producer, sink._local = _Producer(), threading.local()
    sink.send("campaigns.events", b"c1", b"pause")
    with pytest.raises(KafkaTimeoutError):
        sink.flush(20.0)
    sink._producer.futures[0].error = KafkaError("delivery timed out")   # it never made it
    sink._producer.stalled = False
    sink.send("campaigns.events", b"c2", b"resume")
    sink.flush(20.0)   # its own send is out: no error
    sink.send("campaigns.events", b"c3", b"cancel")
    sink._producer.futures[2].error = KafkaError("refused")
    with pytest.raises(KafkaError):
        sink.flush(20.0)   # a failure of its own still raises
