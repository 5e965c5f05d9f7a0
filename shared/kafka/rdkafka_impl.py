"""A MessageSink over librdkafka (confluent-kafka), for hot producers.

kafka-python builds and sends every record in Python: ~85 us of CPU per
message, under the GIL of the process that produces. librdkafka batches,
compresses and sends from its own C threads: ~5 us per message in all
(measured with the tracking hits, see docs/tracking.md). The hot producers
use this sink: the tracking web processes (one event per pixel or click), the
sender (one delivery event per message) and the contacts worker (one send
job per recipient at fan-out, one contact.created per imported row); the
rest of the platform keeps kafka-python (one client to learn, and its
producers are not hot).

Same promise as KafkaSink: `flush()` returns only when everything sent so far
is acknowledged by the broker (acks=all, idempotent), and raises otherwise.
Several threads may share one sink (the contacts worker's imports and its
consumer loop do): each flush reports the failures of its own thread's
sends, so one thread never takes another's failure and leaves it unseen.
"""
from __future__ import annotations

import threading
from functools import partial

from confluent_kafka import KafkaException, Producer


class DeliveryFailed(Exception):
    """A message sent since the last flush was not acknowledged."""


class RdKafkaSink:
    def __init__(self, bootstrap: str, client_id: str, **overrides):
        options = {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            # An outage delays work: keep retrying for up to two minutes
            # before a send is reported as failed (as KafkaSink does).
            "message.timeout.ms": 120_000,
            "request.timeout.ms": 30_000,
        }
        options.update(overrides)
        self._producer = Producer(options)
        self._local = threading.local()

    def _thread(self):
        """This thread's state: `failures`, its sends' failed deliveries since
        its last flush, and `report`, the delivery callback that notes them."""
        mine = self._local
        if not hasattr(mine, "failures"):
            mine.failures = []
            mine.report = partial(_delivered, mine.failures)
        return mine

    def send(self, topic, key, value, headers=None):
        # the report runs in whichever thread serves it; it notes a failure
        # in the list of the thread that sent the message
        report = self._thread().report
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers or None,
                                       on_delivery=report)
                break
            except BufferError:
                # librdkafka's local queue is full (the broker is slow or
                # away): wait for room, as KafkaProducer blocks in send().
                self._producer.poll(0.1)
        self._producer.poll(0)  # serve delivery reports of earlier sends

    def flush(self, timeout=None):
        try:
            left = self._producer.flush(-1 if timeout is None else timeout)
        except KafkaException as exc:
            raise DeliveryFailed(str(exc)) from exc
        failures = self._thread().failures
        errors = failures[:]   # every report of this thread's sends has been served
        failures.clear()
        if left:
            raise DeliveryFailed(f"{left} messages not acknowledged within {timeout} s")
        if errors:
            raise DeliveryFailed(f"{len(errors)} messages failed, first: {errors[0]}")

    def close(self):
        self._producer.flush(10)


def _delivered(failures: list[str], error, _message) -> None:
    if error is not None:
        failures.append(str(error))
