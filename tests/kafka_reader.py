"""Reading topics back in tests: every partition assigned, no consumer group.

A group costs a join, an offset lookup and a first fetch before the first
record, seconds under the full suite's load: a read that came back empty
after "one second of quiet" had simply not started. This reader assigns the
partitions itself, knows where it starts before the test acts, and commits
nothing, so it never disturbs the services' own groups.
"""
from __future__ import annotations

import json
import time
from typing import Callable

from kafka import KafkaConsumer, TopicPartition


class TopicReader:
    """Every record put on `topics` since the reader's start: the beginning
    of each partition, or (since="now") its end when the reader was made."""

    def __init__(self, bootstrap: str, *topics: str, since: str = "beginning",
                 decode: Callable[[bytes], object] = json.loads):
        if since not in ("beginning", "now"):
            raise ValueError(f"since must be 'beginning' or 'now', not {since!r}")
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                      enable_auto_commit=False, client_id="test-topic-reader")
        self.partitions = [TopicPartition(topic, p) for topic in topics
                           for p in sorted(self.consumer.partitions_for_topic(topic) or [])]
        if not self.partitions:
            raise AssertionError(f"no partitions for {topics}: does the topic exist?")
        self.consumer.assign(self.partitions)
        start = (self.consumer.end_offsets if since == "now"
                 else self.consumer.beginning_offsets)(self.partitions)
        for tp, offset in start.items():
            self.consumer.seek(tp, offset)
        self.decode = decode
        self.records: list = []  # raw, as read (key, headers, offsets)
        self.events: list = []   # decoded values; tombstones left out

    def read(self, until: Callable[[list], bool] | None = None, *, idle: float = 0.0,
             timeout: float = 60.0) -> list:
        """A copy of the events so far: each partition read up to its end as
        of this call, then on until `until(events)` holds and no record has
        come for `idle` seconds. When `timeout` runs out first, what was found is
        returned (the caller's assertion says what is missing); but not
        reaching the ends in that time is an error of its own."""
        ends = self.consumer.end_offsets(self.partitions)
        started = quiet_since = time.monotonic()
        while True:
            batches = self.consumer.poll(timeout_ms=200, max_records=1000)
            for batch in batches.values():
                self.records.extend(batch)
                self.events.extend(self.decode(r.value) for r in batch if r.value is not None)
            if batches:
                quiet_since = time.monotonic()
            behind = [tp for tp in self.partitions if self.consumer.position(tp) < ends[tp]]
            if not behind and (until is None or until(self.events)) \
                    and time.monotonic() - quiet_since >= idle:
                return list(self.events)
            if time.monotonic() - started > timeout:
                if behind:
                    raise AssertionError(f"{behind} not read to their end in {timeout:.0f} s")
                return list(self.events)

    def wait_for(self, predicate: Callable[[object], bool], count: int = 1,
                 timeout: float = 20.0) -> list:
        """The events matching `predicate` once there are `count` of them
        (fewer if `timeout` runs out)."""
        events = self.read(lambda seen: sum(map(predicate, seen)) >= count, timeout=timeout)
        return [e for e in events if predicate(e)]

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> "TopicReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
