"""Whether the sender's view of contacts is recent enough to skip a job.

The sender keeps its own copy of contact states (store.ContactStateStore),
applied by its contact-state loop (worker.state_loops) from contacts.events,
tracking.events and privacy.requests. The fan-out reads contacts' own
database. So a contact who re-consents (the suppression lifted, the list
subscribed again) just before a launch is in the audience, yet its job can
reach a sender whose loop has not applied the lift yet: the job was skipped
as suppressed or unsubscribed.

A block that could have been lifted is therefore trusted only once the
loop's group has applied every event that was on contacts.events when the
sender first met the job: its committed offsets reach the end offsets read
then, and a change made before the job was fanned out is inside that mark.
Only contacts.events lifts a block (a subscription, a suppression removed);
the other two topics only add blocks, so their lag is not waited for. Until
then the job and the rest of its partition wait, unclaimed, and are looked
at again; the state then read decides. A loop that does not catch up within
the patience leaves the block as it stands: the job is skipped, as before.

Without a lag this costs three small admin requests per batch with a
blocked job (the first and end offsets, the group's commits), and no wait:
a caught-up loop has committed up to the end already.

Limits: contacts announces a subscription just after writing it (so a
failed write is never announced), and a fan-out that reads the contact in
between makes a job whose mark misses it. On a compacted topic whose last
record was a tombstone the cleaner removed, the group's commit stays below
the end until the next record: blocked jobs then wait out the patience.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Protocol

from services.sender import metrics
from shared.kafka.interface import TopicPartition

log = logging.getLogger(__name__)

Mark = dict[TopicPartition, int]  # end offset per partition with anything in it


class GroupProgress(Protocol):
    def ends(self) -> Mark: ...

    def applied(self) -> dict[TopicPartition, int]: ...


def reached(mark: Mark, applied: dict[TopicPartition, int]) -> bool:
    return all(applied.get(tp, -1) >= end for tp, end in mark.items())


class ContactView:
    """Which blocked jobs wait for the state loop: `behind(job ids)`."""

    def __init__(self, progress: GroupProgress, patience_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.progress = progress
        self.patience = patience_seconds
        self.clock = clock
        self._marks: dict[str, tuple[Mark | None, float]] = {}  # job id -> (mark, first met)
        self._quiet_until = float("-inf")

    def behind(self, job_ids: list[str]) -> set[str]:
        """Of these jobs, each blocked by a state that may since have been
        lifted, the ones whose block is not known to be current yet: the
        state loop has not applied what was on its topics when the job was
        first met here. The others' blocks stand."""
        now = self.clock()
        self._forget_before(now - 4 * self.patience)
        unmarked = [job_id for job_id in job_ids if self._marks.get(job_id, (None,))[0] is None]
        if unmarked:
            # A mark that could not be read (the broker away) is read again:
            # one read later is only stricter.
            mark = self._ask(self.progress.ends)
            for job_id in unmarked:
                self._marks[job_id] = (mark, self._marks.get(job_id, (None, now))[1])
        known = [self._marks[job_id][0] for job_id in job_ids
                 if self._marks[job_id][0] is not None]
        if not known:
            applied = None  # nothing to compare with
        elif not any(known):
            applied = {}  # topics with nothing in them: nothing to wait for
        else:
            applied = self._ask(self.progress.applied)
        waiting = set()
        for job_id in job_ids:
            mark, since = self._marks[job_id]
            if mark is not None and applied is not None and reached(mark, applied):
                del self._marks[job_id]
            elif now - since >= self.patience:
                del self._marks[job_id]
                metrics.CONTACT_VIEW_BEHIND.inc()
                log.warning("the contact-state loop is still behind: a job is skipped on the "
                            "state it has", extra={"waited_s": round(now - since, 1)})
            else:
                waiting.add(job_id)
        return waiting

    def forget(self, job_ids: list[str]) -> None:
        """Jobs no longer blocked: a later copy of one (a retry) starts afresh."""
        for job_id in job_ids:
            self._marks.pop(job_id, None)

    def _ask(self, what: Callable[[], dict]) -> dict | None:
        """The answer, or None while the broker does not give one: the jobs
        wait, up to the patience, and the send loop is not stalled by a
        timeout on every look again (asked once a second at most then)."""
        if self.clock() < self._quiet_until:
            return None
        try:
            return what()
        except Exception as exc:
            self._quiet_until = self.clock() + 1.0
            log.warning("could not read the contact-state loop's progress",
                        extra={"error": str(exc)})
            return None

    def _forget_before(self, cutoff: float) -> None:
        """Jobs met once and never again (their partition went to another sender)."""
        for job_id in [j for j, (_, since) in self._marks.items() if since < cutoff]:
            del self._marks[job_id]


class KafkaGroupProgress:
    """A consumer group's progress over its topics, read with librdkafka's
    admin client: end offsets (partitions with nothing in them left out) and
    the group's committed offsets, whichever of its members committed them."""

    # Each request is made with the send loop waiting on it.
    def __init__(self, bootstrap: str, group: str, topics: list[str], client_id: str,
                 timeout: float = 1.0):
        from confluent_kafka.admin import AdminClient  # loaded where used, like rdkafka_impl
        self.admin = AdminClient({"bootstrap.servers": bootstrap, "client.id": client_id})
        self.group, self.topics, self.timeout = group, topics, timeout
        self._partitions: list = []
        self._partitions_read = float("-inf")

    def ends(self) -> Mark:
        from confluent_kafka.admin import OffsetSpec
        partitions = self._topic_partitions()
        earliest = self._offsets(partitions, OffsetSpec.earliest())
        latest = self._offsets(partitions, OffsetSpec.latest())
        return {tp: end for tp, end in latest.items() if end > earliest.get(tp, 0)}

    def applied(self) -> dict[TopicPartition, int]:
        """The group's committed offsets: a loop commits only what it applied."""
        from confluent_kafka import ConsumerGroupTopicPartitions
        partitions = self._topic_partitions()
        if not partitions:
            return {}
        request = ConsumerGroupTopicPartitions(self.group, partitions)
        answer = self.admin.list_consumer_group_offsets(
            [request], request_timeout=self.timeout)[self.group].result(self.timeout)
        return {(tp.topic, tp.partition): tp.offset for tp in answer.topic_partitions
                if tp.offset >= 0}  # a partition never committed has no offset

    def _offsets(self, partitions: list, spec) -> dict[TopicPartition, int]:
        if not partitions:
            return {}
        futures = self.admin.list_offsets({tp: spec for tp in partitions},
                                          request_timeout=self.timeout)
        return {(tp.topic, tp.partition): future.result(self.timeout).offset
                for tp, future in futures.items()}

    def _topic_partitions(self) -> list:
        """The topics' partitions, read again every minute (partitions can be
        added). The whole cluster's list: asking for a topic by name could
        create it on a broker that creates topics on first use."""
        from confluent_kafka import TopicPartition as KafkaPartition
        if time.monotonic() - self._partitions_read > 60:
            listed = self.admin.list_topics(timeout=self.timeout).topics
            self._partitions = [KafkaPartition(topic, partition)
                                for topic in self.topics if topic in listed
                                for partition in listed[topic].partitions]
            self._partitions_read = time.monotonic()
        return self._partitions
