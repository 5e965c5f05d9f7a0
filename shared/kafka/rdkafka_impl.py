"""A MessageSink and a MessageSource over librdkafka (confluent-kafka), for the hot paths.

kafka-python builds and sends every record in Python: ~85 us of CPU per
message, under the GIL of the process that produces. librdkafka batches,
compresses and sends from its own C threads: ~5 us per message in all
(measured with the tracking hits, see docs/tracking.md). The hot producers
use this sink: the tracking web processes (one event per pixel or click), the
sender (one delivery event per message) and the contacts worker (one send
job per recipient at fan-out, one contact.created per imported row).

Every consumer reads with librdkafka too (RdKafkaSource, below): the
sender's send.jobs, and every service's ConsumerLoop (shared/kafka/factory).
The other producers, the admin client and the broker probe stay on
kafka-python: they are not hot, and one rarely-used path each is not worth
a second way of doing it.

Same promise as KafkaSink: `flush()` returns only when everything sent so far
is acknowledged by the broker (acks=all, idempotent), and raises otherwise.
Several threads may share one sink (the contacts worker's imports and its
consumer loop do): each flush reports the failures of its own thread's
sends, so one thread never takes another's failure and leaves it unseen.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from functools import partial
from typing import Callable

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from shared.kafka.interface import CONSUMER, Record

_log = logging.getLogger(__name__)
# A flush waits in slices this long, so that a signal handler runs between
# them and a deadline set by it (give_up_flushing_at) is seen promptly.
FLUSH_SLICE_SECONDS = 0.25


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
        self._give_up_at: float | None = None  # time.monotonic()

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
                if self._give_up_at is not None and time.monotonic() >= self._give_up_at:
                    raise DeliveryFailed("the local queue is full and the wait was given up")
                self._producer.poll(0.1)
        self._producer.poll(0)  # serve delivery reports of earlier sends

    def give_up_flushing_at(self, deadline: float) -> None:
        """From now on, every flush (one under way too) stops waiting at
        `deadline` (time.monotonic()) and raises DeliveryFailed if anything
        is still unacknowledged. For a process told to stop: while a
        partition has no leader, a flush would otherwise wait out
        message.timeout.ms (two minutes) and overrun its grace period.
        What was not flushed is not committed, so it is done again by
        whoever reads it next."""
        self._give_up_at = deadline

    def flush(self, timeout=None):
        try:
            left = self._wait_for_acks(timeout)
        except KafkaException as exc:
            raise DeliveryFailed(str(exc)) from exc
        failures = self._thread().failures
        errors = failures[:]   # every report of this thread's sends has been served
        failures.clear()
        if left:
            raise DeliveryFailed(f"{left} messages not acknowledged in time")
        if errors:
            raise DeliveryFailed(f"{len(errors)} messages failed, first: {errors[0]}")

    def _wait_for_acks(self, timeout: float | None) -> int:
        """librdkafka's flush, in slices until done, `timeout` or the give-up
        deadline; returns how many messages are still unacknowledged."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            limits = [t for t in (end, self._give_up_at) if t is not None]
            now = time.monotonic()
            wait = FLUSH_SLICE_SECONDS if not limits else max(0.0, min(FLUSH_SLICE_SECONDS,
                                                                         min(limits) - now))
            left = self._producer.flush(wait)
            if not left or (limits and time.monotonic() >= min(limits)):
                return left

    def close(self):
        self._wait_for_acks(10)


def _delivered(failures: list[str], error, _message) -> None:
    if error is not None:
        failures.append(str(error))


class RdKafkaSource:
    """A MessageSource over librdkafka, for every consumer: the sender's
    send.jobs and each service's ConsumerLoop. librdkafka fetches and
    decodes in its own C threads, into a bounded queue (below). Measured:
    - the sender's send.jobs: peak RSS 120-130 MB to 85-88 MB; its CPU per
      message did not move measurably (kafka-python's poll was a smaller
      cost than its share of py-spy samples said);
    - every ConsumerLoop (the workers reading delivery events, the sender's
      state loops): the four workers' CPU through a 20,000-message campaign
      went from 0.80 to 0.39 ms a message (bench.send.campaign, one pair),
      and the idle stack's five workers from ~8% of a core to ~2%.

    The contract is MessageSource's (shared/kafka/interface.py), held by
    tests/integration/sender/test_source_pause.py: a partition paused is
    read again from where it was sought after the resume (librdkafka drops
    what it had fetched for it at the pause), and a partition assigned
    after a rebalance comes unpaused."""

    def __init__(self, topics: list[str], group_id: str, bootstrap: str, client_id: str,
                 **overrides):
        options = {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "client.id": client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "max.poll.interval.ms": CONSUMER.max_poll_interval_ms,
            "session.timeout.ms": CONSUMER.session_timeout_ms,
            "heartbeat.interval.ms": CONSUMER.heartbeat_interval_ms,
            "fetch.min.bytes": CONSUMER.fetch_min_bytes,
            "fetch.wait.max.ms": CONSUMER.fetch_max_wait_ms,
            # librdkafka prefetches up to 64 MB per partition by default; a
            # sender's batch is 500 jobs of ~0.5 kB.
            "queued.max.messages.kbytes": 2048,
        }
        options["on_commit"] = self._commit_answered
        options.update(overrides)
        self.on_revoke: Callable | None = None
        self._commits_lock = threading.Lock()
        self._unanswered: deque[float] = deque()
        self._consumer = Consumer(options, logger=_log)
        self._consumer.subscribe(topics, on_assign=self._assigned, on_revoke=self._revoked)

    @staticmethod
    def _assigned(consumer, partitions) -> None:
        # A partition handed back after a rebalance keeps the paused flag
        # it had (librdkafka keeps it on the partition), and the loop
        # forgot its hold at the revoke: nobody would ever resume it.
        consumer.assign(partitions)
        consumer.resume(partitions)

    def _revoked(self, _consumer, partitions) -> None:
        if self.on_revoke:
            self.on_revoke([(tp.topic, tp.partition) for tp in partitions])

    def poll(self, timeout_ms, max_records):
        records = []
        for message in self._consumer.consume(max_records, timeout_ms / 1000):
            error = message.error()
            if error is not None:  # the broker away, a topic missing: librdkafka retries
                _log.warning("consumer error", extra={"error": str(error)})
                continue
            records.append(Record(message.topic(), message.partition(), message.offset(),
                                  message.key(), message.value(), list(message.headers() or [])))
        return records

    def commit(self, offsets, wait=True):
        """`wait=False` is the send loop's: librdkafka's synchronous commit has
        no timeout, and a sender stuck in one sent nothing and did not even
        run its SIGTERM handler (a C call does not return to Python). Sent
        without waiting, a commit is answered through on_commit, which the
        loop's next poll serves; until then the loop goes on."""
        if not offsets:
            return
        partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        if wait:
            self._consumer.commit(offsets=partitions, asynchronous=False)
            return
        with self._commits_lock:
            self._unanswered.append(time.monotonic())
        self._consumer.commit(offsets=partitions, asynchronous=True)

    def oldest_unanswered_commit(self) -> float | None:
        """When the oldest commit sent without waiting was sent (monotonic),
        None when every one has been answered."""
        with self._commits_lock:
            return self._unanswered[0] if self._unanswered else None

    def _commit_answered(self, error, partitions) -> None:
        # Answers come in the order the commits were sent (one coordinator
        # connection). A failed one loses nothing: the next commit covers
        # its partitions, or their next owner reads them again.
        with self._commits_lock:
            if self._unanswered:
                self._unanswered.popleft()
        failed = [p for p in partitions or [] if p.error is not None]
        if error is not None or failed:
            _log.warning("offset commit failed; the next one covers it, or the work is read again",
                         extra={"error": str(error or failed[0].error)})

    def seek(self, tp, offset):
        self._consumer.seek(TopicPartition(tp[0], tp[1], offset))

    def pause(self, tp):
        self._consumer.pause([TopicPartition(*tp)])

    def resume(self, tp):
        self._consumer.resume([TopicPartition(*tp)])

    def assignment(self):
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def partition_count(self, topic: str) -> int:
        return len(self._consumer.list_topics(topic, timeout=10).topics[topic].partitions)

    def close(self):
        self._consumer.close()
