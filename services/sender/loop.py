"""The sender's consumer loop: like shared/kafka/consumer.ConsumerLoop, but
a whole poll is handed to the engine at once (one claim, one record, one
flush per batch instead of per message), and a job that is not due yet
holds its partition instead of being slept on.

Promises (the same as the shared loop):
- offsets are committed only after the batch's records are written and
  its events flushed; a partition never commits past a job not yet done;
- a message that is not a valid send.job goes to the dead-letter topic;
- a held job (due within a second, campaign not known yet, claimed by a
  live sender) holds its partition: the records from it on wait in memory
  and the partition is paused until the job is due: no sleep in the poll
  loop, and a kill -9 loses nothing because nothing past it was committed.
  A job that would hold its partition longer for its own sake (not due for
  a while, its campaign paused or beyond its rate limit) is parked in
  MongoDB instead (engine);
- SIGTERM: stop taking work, let in-flight sends finish (the rest is
  released), commit, exit (well within 30 s).
"""
from __future__ import annotations

import logging
import math
import time
from typing import Callable

from services.sender import metrics as sender_metrics
from services.sender.domain import Job
from services.sender.engine import Dispositions, Engine, Hold
from shared import metrics
from shared.events import InvalidEvent, decode
from shared.heartbeat import Heartbeat
from shared.kafka.interface import MessageSink, MessageSource, Record, TopicPartition
from shared.topics import DEAD_LETTERS

log = logging.getLogger(__name__)


class SendLoop:
    def __init__(self, source: MessageSource, engine: Engine, producer, *, service: str,
                 group: str, dead_letters: MessageSink, max_records: int = 500,
                 poll_timeout_ms: int = 200, clock: Callable[[], float] = time.time,
                 on_stop: Callable[[], None] | None = None, jobs_topic: str | None = None,
                 heartbeat: Heartbeat | None = None):
        self.source = source
        self.heartbeat = heartbeat  # beats once a turn (/healthz)
        self.engine = engine
        self.producer = producer
        self.service = service
        self.group = group
        self.dead_letters = dead_letters
        self.max_records = max_records
        self.poll_timeout_ms = poll_timeout_ms
        self.clock = clock
        self.on_stop = on_stop
        self.jobs_topic = jobs_topic  # its share of the partitions: its share of rate limits
        self._jobs_partitions: set[TopicPartition] | None = None
        self.stopping = False
        self._paused_until: dict[TopicPartition, float] = {}
        self._held: dict[TopicPartition, list[Record]] = {}  # read, not yet settled
        self._next_unpark = 0.0
        self._failures = 0
        source.on_revoke = self._on_revoke

    def stop(self, *_args) -> None:
        self.stopping = True
        if self.on_stop:
            self.on_stop()  # the messenger releases what it has not started

    def run(self) -> None:
        try:
            while not self.stopping:
                self.run_once()
        finally:
            self.source.close()

    def run_once(self) -> int:
        """Poll once and settle what came; returns how many records were settled."""
        self._beat()
        self._resume_due()
        self._unpark_when_due()
        t0 = time.perf_counter()
        waiting = sum(len(kept) for tp, kept in self._held.items() if tp not in self._paused_until)
        room = self.max_records - waiting  # held records come back in batches no larger
        polled = self.source.poll(0 if waiting else self._poll_timeout(), room) if room > 0 else []
        records = self._take_held() + polled  # after the poll: a revoke drops what it held
        self._note_share()
        t1 = time.perf_counter()
        if not records or self.stopping:
            for tp, first in _first_offsets(records).items():
                self.source.seek(tp, first)
            return 0
        try:
            settled = self._settle(records, t0, t1)
        except Exception:
            # MongoDB, Kafka or the relay set-up failed: nothing of this batch
            # is committed; it comes again after a pause. Jobs it had already
            # sent are found claimed and go again after the lease (same
            # Message-ID). An outage delays work, it never drops it.
            self._failures += 1
            delay = min(30.0, 0.5 * 2 ** (self._failures - 1))
            if self.stopping:  # e.g. a flush given up on: the next owner reads it again
                log.warning("batch left unsettled at shutdown", exc_info=True)
            else:
                log.exception("batch failed; retrying it", extra={"retry_in_s": delay})
            for tp, first in _first_offsets(records).items():
                self._hold(tp, first, Hold(self.clock() + delay, "batch failed"), records)
            return 0
        self._failures = 0
        return settled

    def _settle(self, records: list[Record], t0: float, t1: float) -> int:
        now = self.clock()
        by_partition: dict[TopicPartition, list[tuple[Record, Job | None]]] = {}
        holds: dict[TopicPartition, tuple[int, Hold]] = {}
        for record in records:
            tp = (record.topic, record.partition)
            by_partition.setdefault(tp, []).append((record, self._decode(record)))
        sequences = [[job for _, job in entries if job] for entries in by_partition.values()]
        t2 = time.perf_counter()
        dispositions = self.engine.handle(sequences) if any(sequences) else {}
        self._beat()  # the flush below may wait out Kafka's message timeout too
        set_aside = dispositions.set_aside if isinstance(dispositions, Dispositions) else set()
        t3 = time.perf_counter()
        commits: dict[TopicPartition, int] = {}
        settled = 0
        for tp, entries in by_partition.items():
            for record, job in entries:
                if job is not None and id(job) in set_aside:
                    commits[tp] = record.offset + 1  # settled by its place (Dispositions)
                    settled += 1
                    continue
                if job is not None and job.job_id not in dispositions:
                    # After a held job it waits with it. Ahead of any hold it
                    # would be committed past by the next batch: read again.
                    holds[tp] = (record.offset, Hold(now, "no disposition"))
                    break
                hold = dispositions.get(job.job_id) if job else None
                if hold is not None:
                    holds[tp] = (record.offset, hold)
                    break
                commits[tp] = record.offset + 1
                settled += 1
        for tp, (offset, hold) in holds.items():
            self._hold(tp, offset, hold, records)
        self.producer.flush()      # the batch's events and retries are out...
        self.dead_letters.flush()
        t4 = time.perf_counter()
        sender_metrics.BATCH_SECONDS.observe(t4 - t0)
        if commits:
            # ...before the offsets move past them. Not waiting for the
            # broker's answer: see RdKafkaSource.commit.
            self.source.commit(commits, wait=False)
        log.debug("batch", extra={"records": len(records), "settled": settled,
                                  "poll_ms": round((t1 - t0) * 1000), "decode_ms": round((t2 - t1) * 1000),
                                  "engine_ms": round((t3 - t2) * 1000), "flush_ms": round((t4 - t3) * 1000),
                                  "commit_ms": round((time.perf_counter() - t4) * 1000)})
        return settled

    def _unpark_when_due(self) -> None:
        if self.clock() < self._next_unpark:
            return
        self._next_unpark = self.clock() + self.engine.settings.unpark_every_seconds
        try:
            moved = self.engine.unpark(self.producer.flush)
            if moved:
                log.info("parked jobs put back", extra={"jobs": moved})
        except Exception:  # an outage: the jobs stay parked until next time
            log.warning("putting parked jobs back failed; will retry", exc_info=True)
        self._beat()  # each of these may wait out Kafka's message timeout
        try:
            asked = self.engine.ask_contacts_again(self.producer.flush)
            if asked:
                log.info("held jobs asked of contacts again", extra={"jobs": asked})
        except Exception:  # an outage: asked next time
            log.warning("asking contacts again for held jobs failed; will retry", exc_info=True)
        self._beat()

    def _beat(self) -> None:
        """Tell the liveness check the loop goes on (shared/heartbeat.py):
        once a turn, and between the parts of one that may each wait out
        Kafka's two-minute message timeout, so that a turn slowed by an
        outage is not taken for a stuck loop."""
        if self.heartbeat:
            self.heartbeat.beat()

    def _decode(self, record: Record) -> Job | None:
        try:
            event = decode(record.value)
            if event.type != "send.job":
                raise InvalidEvent(f"unexpected event type {event.type} on {record.topic}")
            return Job.from_event(event.account_id, event.data, event.id)
        except (InvalidEvent, KeyError, ValueError) as exc:
            self._dead_letter(record, str(exc))
            return None

    def _dead_letter(self, record: Record, reason: str) -> None:
        headers = [("dlq.reason", reason.encode()[:1000]), ("dlq.topic", record.topic.encode()),
                   ("dlq.partition", str(record.partition).encode()),
                   ("dlq.offset", str(record.offset).encode()),
                   ("dlq.group", self.group.encode()), ("dlq.service", self.service.encode())]
        self.dead_letters.send(DEAD_LETTERS, record.key, record.value, headers)
        metrics.DEAD_LETTERS.labels(self.service, record.topic).inc()
        log.warning("message dead-lettered", extra={"reason": reason[:300], "topic": record.topic,
                                                    "offset": record.offset})

    def _hold(self, tp: TopicPartition, offset: int, hold: Hold, batch: list[Record]) -> None:
        """Keep the partition's records from `offset` on for a later batch,
        in memory. Read again from the broker, they came back only after
        its fetch wait (fetch.wait.max.ms, up to 500 ms): a rate-limited
        campaign's batches began 0.17-0.39 s into their second, now within
        2 ms. Held until later, the partition is paused, its position set
        past what is kept."""
        kept = [r for r in batch if (r.topic, r.partition) == tp and r.offset >= offset]
        if hold.until > self.clock():
            try:
                self.source.seek(tp, kept[-1].offset + 1)
                self.source.pause(tp)
            except Exception:  # no longer ours after a rebalance: its new owner redoes it
                return
            self._paused_until[tp] = hold.until
        self._held[tp] = kept

    def _take_held(self) -> list[Record]:
        """The held records whose partition is no longer paused, in order."""
        due = [tp for tp in self._held if tp not in self._paused_until]
        return [record for tp in due for record in self._held.pop(tp)]

    def _poll_timeout(self) -> int:
        """No longer than until the first hold ends: senders sharing a
        rate-limited campaign start its next window together."""
        if not self._paused_until:
            return self.poll_timeout_ms
        first = min(self._paused_until.values()) - self.clock()
        return max(0, min(self.poll_timeout_ms, math.ceil(first * 1000)))

    def _note_share(self) -> None:
        """After a rebalance: tell the rate limiter which part of send.jobs
        (and so of every campaign) this sender now reads."""
        if self.jobs_topic is None:
            return
        mine = {tp for tp in self.source.assignment() if tp[0] == self.jobs_topic}
        if mine == self._jobs_partitions:
            return
        try:
            total = self.source.partition_count(self.jobs_topic)
        except Exception:  # the broker away: the old share stands, asked again next poll
            log.warning("could not read the jobs topic's partitions", exc_info=True)
            return
        self._jobs_partitions = mine
        self.engine.limiter.share = len(mine) / total if total else 1.0
        self.engine.limiter.partitions = total or 1

    def _resume_due(self) -> None:
        now = self.clock()
        for tp, until in list(self._paused_until.items()):
            if until <= now:
                self._release(tp)

    def _release(self, tp: TopicPartition) -> None:
        del self._paused_until[tp]
        try:
            self.source.resume(tp)
        except Exception:  # no longer ours after a rebalance
            pass

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        # Every batch has sent its commit before the next poll: nothing to
        # commit here.
        # A hold is not forgotten without being lifted: kafka-python hands a
        # partition back after a rebalance still paused.
        for tp in partitions:
            self._held.pop(tp, None)  # its new owner reads them from the last commit
            if tp in self._paused_until:
                self._release(tp)


def _first_offsets(records: list[Record]) -> dict[TopicPartition, int]:
    first: dict[TopicPartition, int] = {}
    for r in records:
        first.setdefault((r.topic, r.partition), r.offset)
    return first
