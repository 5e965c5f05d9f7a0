"""The one consumer loop: `while not stopping: run_once()`.

- Offsets are committed only after the work is done (and after everything the
  work produced is flushed), at most once per `commit_interval`, and always on
  shutdown and when partitions are revoked.
- A message that can never succeed (not a valid envelope, or a handler raising
  `PermanentError`) goes to the dead-letter topic with its reason, and counts.
- Any other handler failure is transient (a database or broker outage): the
  partition seeks back to the failed message and pauses with exponential
  backoff; the loop keeps polling the other partitions. Nothing is dropped.
- Optional batches: event types in `batch_types` go to `batch_handler` a
  whole run of a poll at a time (consecutive records, so each partition's
  order is kept; a record with a per-event handler ends the run). A
  transient failure seeks every partition of the run back to its first
  record of the run; a `PermanentError` replays the run one event at a time,
  so only the event that raises it is dead-lettered.
- An event whose type no handler takes is settled without being decoded
  when its `ce_type` header names the type (EventProducer sets it from the
  event itself): the contacts worker reads every `delivery.sent` of a
  campaign to act on the rare bounce, and parsing and validating each cost
  ~13 us. Without the header the envelope is decoded as before.
- Its calls to Kafka are watched (`watch`, shared/heartbeat.CallWatch): a
  worker's /healthz fails while one has hung for longer than
  `stall_seconds`, and the pod is restarted; what was not committed is read
  again.
"""
from __future__ import annotations

import logging
import signal
import time
from typing import Callable, Collection, Mapping

from shared import metrics
from shared.events import Event, InvalidEvent, decode
from shared.heartbeat import CallWatch
from shared.kafka.interface import MessageSink, MessageSource, Record, TopicPartition
from shared.topics import DEAD_LETTERS
from shared.tracing import trace

log = logging.getLogger(__name__)
COMMIT_PAUSE_MAX = 5.0  # seconds between tries of a commit that keeps failing
# A flush waits out the producer's two-minute message timeout at most; a
# commit returns within librdkafka's request timeouts when the broker is
# only slow. Longer than both, a call is stuck.
STALL_SECONDS = 300.0

Handler = Callable[[Event], None]
BatchHandler = Callable[[list[Event]], None]


class PermanentError(Exception):
    """This message can never succeed; dead-letter it with this reason."""


class ConsumerLoop:
    def __init__(self, source: MessageSource, handlers: Mapping[str, Handler], *,
                 service: str, group: str, dead_letters: MessageSink,
                 before_commit: Callable[[], None] | None = None,
                 commit_interval: float = 1.0, max_records: int = 500,
                 poll_timeout_ms: int = 200, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 batch_handler: BatchHandler | None = None,
                 batch_types: Collection[str] = (), stall_seconds: float = STALL_SECONDS):
        self.source = source
        self.handlers = dict(handlers)
        self.batch_handler = batch_handler
        self.batch_types = frozenset(batch_types) if batch_handler else frozenset()
        self.service = service
        self.group = group
        self.dead_letters = dead_letters
        self.before_commit = before_commit
        self.commit_interval = commit_interval
        self.max_records = max_records
        self.poll_timeout_ms = poll_timeout_ms
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.clock = clock
        self.stopping = False
        self.watch = CallWatch(f"the {group} loop", stall_seconds, clock)
        self._done: dict[TopicPartition, int] = {}       # next offset to commit
        self._first_uncommitted: dict[TopicPartition, int] = {}
        self._failures: dict[TopicPartition, int] = {}
        self._paused_until: dict[TopicPartition, float] = {}
        self._last_commit = clock()
        self._failed_commits = 0  # in a row: the next is tried after a growing pause
        source.on_revoke = self._on_revoke

    # -- running ---------------------------------------------------------
    def stop(self, *_args) -> None:
        self.stopping = True

    def run(self) -> None:
        try:
            while not self.stopping:
                self.run_once()
        finally:
            self.shutdown()

    def run_once(self) -> int:
        """Poll once, handle what came; returns how many records were settled."""
        self._resume_due_partitions()
        with self.watch.watching("Kafka poll"):
            records = self.source.poll(self.poll_timeout_ms, self.max_records)
        settled = 0
        blocked: set[TopicPartition] = set()
        run: list[tuple[Record, Event | None]] = []  # waiting for the batch handler
        for record in records:
            tp = (record.topic, record.partition)
            if tp in blocked:
                continue
            if self.stopping:
                # Stop taking work: rewind so the rest is redelivered to whoever
                # gets the partition next, even if this process lingers.
                settled += self._handle_run(run, blocked)
                run = []
                if tp not in blocked:
                    self.source.seek(tp, record.offset)
                    blocked.add(tp)
                continue
            if self.batch_types:
                event = None if self._unwanted(record) else self._decode(record)
                if event is None or event.type in self.batch_types \
                        or event.type not in self.handlers:
                    run.append((record, event))  # settled with the run
                    continue
                settled += self._handle_run(run, blocked)
                run = []
                if tp in blocked:
                    continue
                ok = self._handle_event(record, event)
            else:
                ok = self._handle(record)
            settled += self._settle(record, ok)
            if not ok:
                blocked.add(tp)
        settled += self._handle_run(run, blocked)
        if self.clock() - self._last_commit >= self._commit_pause():
            self.commit()
        return settled

    def _commit_pause(self) -> float:
        """A few seconds at most: a waiting send job (contact_view.py) is
        skipped on a stale state after 30 s, and the coordinator may be back."""
        if not self._failed_commits:
            return self.commit_interval
        return max(self.commit_interval, self._backoff(self._failed_commits, COMMIT_PAUSE_MAX))

    def _settle(self, record: Record, ok: bool) -> int:
        tp = (record.topic, record.partition)
        if not ok:
            self._retry_later(tp, record.offset)
            return 0
        self._first_uncommitted.setdefault(tp, record.offset)
        self._done[tp] = record.offset + 1
        self._failures.pop(tp, None)
        return 1

    def shutdown(self) -> None:
        try:
            self.commit()
        finally:
            with self.watch.watching("Kafka close"):  # it leaves the group: a broker call
                self.source.close()

    # -- one record ------------------------------------------------------
    def _handle(self, record: Record) -> bool:
        """True when the record is settled (handled, ignored or dead-lettered)."""
        if self._unwanted(record):
            return True
        event = self._decode(record)
        if event is None:
            return True
        if event.type not in self.handlers:
            metrics.MESSAGES.labels(self.service, record.topic, "ignored").inc()
            return True
        return self._handle_event(record, event)

    def _unwanted(self, record: Record) -> bool:
        """True (and counted as ignored) when the record's ce_type header
        names a type that neither a handler nor the batch handler takes."""
        for name, value in record.headers:
            if name == "ce_type":
                kind = value.decode("utf-8", "replace") if value else ""
                if not kind or kind in self.handlers or kind in self.batch_types:
                    return False  # an empty header says nothing: the body decides
                metrics.MESSAGES.labels(self.service, record.topic, "ignored").inc()
                return True
        return False

    def _decode(self, record: Record) -> Event | None:
        """The record's event; None when it is settled already (a tombstone,
        or dead-lettered because it is not a valid event)."""
        if record.value is None:
            # A tombstone on a compacted topic (contacts.events after an
            # erasure): it deletes the key's history; there is nothing to handle.
            metrics.MESSAGES.labels(self.service, record.topic, "ignored").inc()
            return None
        try:
            return decode(record.value)
        except InvalidEvent as exc:
            self._dead_letter(record, str(exc))
            return None

    def _handle_event(self, record: Record, event: Event) -> bool:
        with trace(event.trace_id or None):
            try:
                self.handlers[event.type](event)
            except PermanentError as exc:
                self._dead_letter(record, f"{event.type}: {exc}")
                return True
            except Exception:
                metrics.HANDLER_RETRIES.labels(self.service, record.topic).inc()
                log.exception("handler failed, will retry", extra={
                    "event_type": event.type, "topic": record.topic,
                    "partition": record.partition, "offset": record.offset})
                return False
        metrics.MESSAGES.labels(self.service, record.topic, "handled").inc()
        return True

    # -- a run of records for the batch handler ----------------------------
    def _handle_run(self, run: list[tuple[Record, Event | None]],
                    blocked: set[TopicPartition]) -> int:
        """Settle a run (records in poll order); returns how many were settled."""
        events = [event for _, event in run if event is not None
                  and event.type in self.batch_types]
        if events:
            try:
                with trace(None):
                    self.batch_handler(events)
            except PermanentError:
                return self._handle_run_one_by_one(run, blocked)
            except Exception:
                log.exception("batch handler failed, will retry", extra={"events": len(events)})
                first: dict[TopicPartition, int] = {}
                for record, _ in run:
                    first.setdefault((record.topic, record.partition), record.offset)
                for tp, offset in first.items():
                    metrics.HANDLER_RETRIES.labels(self.service, tp[0]).inc()
                    self._retry_later(tp, offset)
                    blocked.add(tp)
                return 0
        for record, event in run:
            self._count_settled(record, event)
            self._settle(record, True)
        return len(run)

    def _handle_run_one_by_one(self, run: list[tuple[Record, Event | None]],
                               blocked: set[TopicPartition]) -> int:
        settled = 0
        for record, event in run:
            tp = (record.topic, record.partition)
            if tp in blocked:
                continue
            if event is not None and event.type in self.batch_types:
                try:
                    with trace(event.trace_id or None):
                        self.batch_handler([event])
                except PermanentError as exc:
                    self._dead_letter(record, f"{event.type}: {exc}")
                    self._settle(record, True)
                    settled += 1
                    continue
                except Exception:
                    metrics.HANDLER_RETRIES.labels(self.service, record.topic).inc()
                    log.exception("batch handler failed, will retry", extra={
                        "event_type": event.type, "topic": record.topic,
                        "partition": record.partition, "offset": record.offset})
                    self._retry_later(tp, record.offset)
                    blocked.add(tp)
                    continue
            self._count_settled(record, event)
            settled += self._settle(record, True)
        return settled

    def _count_settled(self, record: Record, event: Event | None) -> None:
        if event is None:
            return  # counted when it was decoded (ignored or dead-lettered)
        outcome = "handled" if event.type in self.batch_types else "ignored"
        metrics.MESSAGES.labels(self.service, record.topic, outcome).inc()

    def _dead_letter(self, record: Record, reason: str) -> None:
        headers = [("dlq.reason", reason.encode()[:1000]),
                   ("dlq.topic", record.topic.encode()),
                   ("dlq.partition", str(record.partition).encode()),
                   ("dlq.offset", str(record.offset).encode()),
                   ("dlq.group", self.group.encode()),
                   ("dlq.service", self.service.encode())]
        self.dead_letters.send(DEAD_LETTERS, record.key, record.value, headers)
        metrics.DEAD_LETTERS.labels(self.service, record.topic).inc()
        metrics.MESSAGES.labels(self.service, record.topic, "dead_lettered").inc()
        log.warning("message dead-lettered", extra={
            "reason": reason[:300], "topic": record.topic,
            "partition": record.partition, "offset": record.offset})

    # -- backoff ---------------------------------------------------------
    def _retry_later(self, tp: TopicPartition, offset: int) -> None:
        failures = self._failures.get(tp, 0) + 1
        self._failures[tp] = failures
        delay = self._backoff(failures, self.backoff_max)
        self.source.seek(tp, offset)
        self.source.pause(tp)
        self._paused_until[tp] = self.clock() + delay

    def _backoff(self, failures: int, longest: float) -> float:
        """Seconds to wait after `failures` in a row: doubling, up to `longest`."""
        return min(longest, self.backoff_initial * 2 ** (failures - 1))

    def _resume_due_partitions(self) -> None:
        now = self.clock()
        for tp, until in list(self._paused_until.items()):
            if until <= now:
                self.source.resume(tp)
                del self._paused_until[tp]

    # -- commits ---------------------------------------------------------
    def commit(self, only: set[TopicPartition] | None = None) -> None:
        offsets = {tp: o for tp, o in self._done.items() if only is None or tp in only}
        self._last_commit = self.clock()
        if not offsets:
            return
        try:
            # the handlers' own writes too (campaigns: its progress counts)
            with self.watch.watching("flush before a commit"):
                if self.before_commit:
                    self.before_commit()
                self.dead_letters.flush()
        except Exception:
            # What the work produced may not be out: do it again rather than
            # commit past it. Handlers are idempotent.
            log.exception("flush before commit failed; reprocessing from last commit")
            for tp in offsets:
                self.source.seek(tp, self._first_uncommitted[tp])
                self._done.pop(tp, None)
                self._first_uncommitted.pop(tp, None)
            return
        try:
            with self.watch.watching("Kafka commit"):
                self.source.commit(offsets)
        except Exception:
            # A rebalance or an outage. Partitions someone else owns now: their
            # owner redoes the work. Partitions still ours: committed again
            # after a pause, or a quiet partition's commit stayed behind
            # until its next record (a blocked send job waited on it:
            # services/sender/contact_view.py).
            if not self._failed_commits or only is not None:  # not at every interval
                log.warning("offset commit failed; tried again, or the work is redelivered",
                            exc_info=True)
            if only is None:  # a revoke's commit is not retried on a schedule
                self._failed_commits += 1
            offsets = {tp: offset for tp, offset in offsets.items() if tp not in self._owned()}
        else:
            if self._failed_commits and only is None:
                log.info("offset commit works again", extra={"failed": self._failed_commits})
                self._failed_commits = 0
        for tp in offsets:
            self._done.pop(tp, None)
            self._first_uncommitted.pop(tp, None)

    def _owned(self) -> set[TopicPartition]:
        try:
            return self.source.assignment()
        except Exception:  # not known: as if none, their work is redone
            return set()

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        self.commit(only=set(partitions))
        for tp in partitions:
            # A commit that failed is not tried again: no longer ours.
            self._done.pop(tp, None)
            self._first_uncommitted.pop(tp, None)
            self._paused_until.pop(tp, None)
            self._failures.pop(tp, None)


def run_until_signalled(loop: ConsumerLoop,
                        on_stop: Callable[[], None] | None = None) -> None:
    """SIGTERM and SIGINT only set flags (the loop's, and whatever `on_stop`
    tells the process's other threads); the loop drains and commits."""
    def stop(*_args) -> None:
        loop.stop()
        if on_stop is not None:
            on_stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    loop.run()
