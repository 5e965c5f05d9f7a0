"""The broker interface over kafka-python."""
from __future__ import annotations

import threading
from typing import Callable

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from shared.kafka.interface import CONSUMER, Record

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
        if any of it failed."""
        self._producer.flush(timeout=timeout)
        pending = self._pending()
        sent, pending[:] = list(pending), []
        for future in sent:
            future.get(timeout=FLUSHED_GRACE_SECONDS)  # re-raises a failed delivery

    def close(self):
        self._producer.close(timeout=10)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, source: "KafkaSource"):
        self.source = source

    def on_partitions_revoked(self, revoked):
        if self.source.on_revoke:
            self.source.on_revoke([(tp.topic, tp.partition) for tp in revoked])

    def on_partitions_assigned(self, assigned):
        # An eager rebalance first revokes every partition (the loop forgets
        # its pauses) and then hands most of them back with their state,
        # paused flag included: nobody would ever resume those.
        for tp in assigned:
            self.source.resume((tp.topic, tp.partition))


class KafkaSource:
    def __init__(self, topics: list[str], group_id: str, bootstrap: str, client_id: str,
                 **overrides):
        options = dict(
            bootstrap_servers=bootstrap,
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=CONSUMER.max_poll_interval_ms,
            session_timeout_ms=CONSUMER.session_timeout_ms,
            heartbeat_interval_ms=CONSUMER.heartbeat_interval_ms,
            fetch_min_bytes=CONSUMER.fetch_min_bytes,
            fetch_max_wait_ms=CONSUMER.fetch_max_wait_ms,
        )
        options.update(overrides)
        self.on_revoke: Callable | None = None
        self._consumer = KafkaConsumer(**options)
        self._consumer.subscribe(topics, listener=_Listener(self))
        # Load the topics' metadata before the first poll joins the group:
        # a group leader that assigns without it logs "No partition metadata"
        # and hands out nothing, and the group then consumes nothing.
        for topic in topics:
            self._consumer.partitions_for_topic(topic)

    def poll(self, timeout_ms, max_records):
        batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        return [Record(m.topic, m.partition, m.offset, m.key, m.value, list(m.headers or []))
                for messages in batches.values() for m in messages]

    def commit(self, offsets):
        if offsets:
            self._consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                                   for (t, p), o in offsets.items()})

    def seek(self, tp, offset):
        self._consumer.seek(TopicPartition(*tp), offset)

    def pause(self, tp):
        self._consumer.pause(TopicPartition(*tp))

    def resume(self, tp):
        partition = TopicPartition(*tp)
        self._consumer.resume(partition)
        self._drop_parked(partition)

    def _drop_parked(self, partition):
        """kafka-python 3.0.12 parks the records it had fetched for a partition
        when it is paused, fetches nothing more for it while they are parked,
        and hands them back after a resume only on a poll that finds no
        other partition's records in line (`_next_partition_records is
        None`): when the other partitions are drained that can be never, and
        the partition is not read again. Dropping them is safe: the next
        fetch starts at the partition's position, where they began (or
        where the loop seeked it back to)."""
        fetcher = self._consumer._fetcher
        parked = getattr(fetcher, "_paused_partition_records", {}).pop(partition, None)
        if parked is not None:
            parked.drain()
        getattr(fetcher, "_paused_completed_fetches", {}).pop(partition, None)

    def assignment(self):
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def close(self):
        self._consumer.close(autocommit=False)
