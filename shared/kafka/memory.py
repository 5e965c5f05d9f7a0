"""An in-memory broker with the same interface, for unit tests of logic.

One consumer per group; partitions by a stable hash of the key. It is not a
Kafka simulator: the contract tests run the same assertions against Kafka.
"""
from __future__ import annotations

import zlib
from collections import defaultdict

from shared.kafka.interface import Record


class InMemoryBroker:
    def __init__(self, partitions: int = 3):
        self.partitions = partitions
        self.topics: dict[str, list[list[Record]]] = {}
        self.committed: dict[str, dict[tuple[str, int], int]] = defaultdict(dict)

    def _topic(self, name):
        return self.topics.setdefault(name, [[] for _ in range(self.partitions)])

    def append(self, topic, key, value, headers=None):
        parts = self._topic(topic)
        index = zlib.crc32(key) % self.partitions if key else 0
        parts[index].append(Record(topic, index, len(parts[index]), key, value, list(headers or [])))

    def messages(self, topic) -> list[Record]:
        return [r for part in self._topic(topic) for r in part]

    def sink(self) -> "InMemorySink":
        return InMemorySink(self)

    def source(self, topics, group_id) -> "InMemorySource":
        return InMemorySource(self, topics, group_id)


class InMemorySink:
    def __init__(self, broker: InMemoryBroker):
        self.broker = broker
        self.fail_next_flush: Exception | None = None
        self._buffer = []

    def send(self, topic, key, value, headers=None):
        self._buffer.append((topic, key, value, headers))

    def flush(self, timeout=None):
        if self.fail_next_flush:
            error, self.fail_next_flush = self.fail_next_flush, None
            self._buffer.clear()
            raise error
        for item in self._buffer:
            self.broker.append(*item)
        self._buffer.clear()

    def close(self):
        pass


class InMemorySource:
    def __init__(self, broker: InMemoryBroker, topics, group_id):
        self.broker = broker
        self.topics = list(topics)
        self.group_id = group_id
        self.on_revoke = None
        self.paused: set[tuple[str, int]] = set()
        committed = broker.committed[group_id]
        self.position = {(t, p): committed.get((t, p), 0)
                         for t in self.topics for p in range(broker.partitions)}
        for topic in self.topics:
            broker._topic(topic)

    def poll(self, timeout_ms, max_records):
        out = []
        for tp, pos in self.position.items():
            if tp in self.paused:
                continue
            records = self.broker.topics[tp[0]][tp[1]][pos:pos + max_records - len(out)]
            out.extend(records)
            self.position[tp] = pos + len(records)
            if len(out) >= max_records:
                break
        return out

    def commit(self, offsets, wait=True):
        self.broker.committed[self.group_id].update(offsets)

    def seek(self, tp, offset):
        self.position[tp] = offset

    def pause(self, tp):
        self.paused.add(tp)

    def resume(self, tp):
        self.paused.discard(tp)

    def assignment(self):
        return set(self.position)

    def partition_count(self, topic):
        return self.broker.partitions

    def rebalance(self):
        """An eager rebalance that hands every partition back: revoked, then
        read again from the last commit, the paused flag kept (as
        kafka-python kept it)."""
        if self.on_revoke:
            self.on_revoke(list(self.position))
        committed = self.broker.committed[self.group_id]
        self.position = {tp: committed.get(tp, 0) for tp in self.position}

    def close(self):
        pass
