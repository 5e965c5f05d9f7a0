"""Read what was produced to a topic from now on (every partition), for tests."""
from __future__ import annotations

import json
import time

from kafka import KafkaConsumer, TopicPartition


class Tail:
    def __init__(self, bootstrap: str, topic: str):
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                      group_id=None, consumer_timeout_ms=500)
        partitions = [TopicPartition(topic, p)
                      for p in sorted(self.consumer.partitions_for_topic(topic) or [])]
        self.consumer.assign(partitions)
        self.consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve the end offsets now, before the test acts
            self.consumer.position(tp)
        self.seen: list[dict] = []

    def wait_for(self, predicate, count: int = 1, timeout: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for batch in self.consumer.poll(timeout_ms=300).values():
                self.seen.extend(json.loads(m.value) for m in batch)
            found = [e for e in self.seen if predicate(e)]
            if len(found) >= count:
                return found
        return [e for e in self.seen if predicate(e)]

    def close(self) -> None:
        self.consumer.close()
