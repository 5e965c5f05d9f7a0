"""The producer over kafka-python, for the web processes (see
shared/kafka/factory.py). Every consumer reads with librdkafka
(rdkafka_impl.RdKafkaSource)."""
from __future__ import annotations

import threading

from kafka import KafkaProducer

# After producer.flush() every earlier send is complete; its future is
# resolved by the producer's I/O thread a moment later at most.
FLUSHED_GRACE_SECONDS = 5.0


class KafkaSink:
    def __init__(self, bootstrap: str, client_id: str, **overrides):
        options = dict(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            batch_size=256 * 1024,
            compression_type=None,
            # An outage delays work: keep retrying for up to two minutes
            # before a send is reported as failed to the caller.
            delivery_timeout_ms=120_000,
            request_timeout_ms=30_000,
            max_block_ms=60_000,
        )
        options.update(overrides)
        self._producer = KafkaProducer(**options)
        # One producer serves every request thread of a web process: each
        # thread checks the sends it made itself. A shared list let one
        # thread's flush pick up another's send still in flight, and fail
        # on it ("Timeout after waiting for 0 secs") though its own was out.
        self._local = threading.local()

    def _pending(self) -> list:
        if not hasattr(self._local, "pending"):
            self._local.pending = []
        return self._local.pending

    def send(self, topic, key, value, headers=None):
        future = self._producer.send(topic, key=key, value=value, headers=headers or [])
        pending = self._pending()
        pending.append(future)
        if len(pending) > 10_000:
            pending[:] = [f for f in pending if not f.is_done]

    def flush(self, timeout=None):
        """Returns when everything this thread sent is acknowledged; raises
        if any of it failed. The sends are this flush's whatever it does: a
        flush that timed out left them, and the thread's next request failed
        on them though its own send was out."""
        pending = self._pending()
        sent, pending[:] = list(pending), []
        self._producer.flush(timeout=timeout)
        for future in sent:
            future.get(timeout=FLUSHED_GRACE_SECONDS)  # re-raises a failed delivery

    def close(self):
        self._producer.close(timeout=10)
