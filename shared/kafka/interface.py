"""What the rest of the code needs from a broker, and nothing more."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

TopicPartition = tuple[str, int]


@dataclass(frozen=True)
class ConsumerTuning:
    """What every consumer group member is set to (RdKafkaSource)."""
    max_poll_interval_ms: int = 300_000
    # A member that dies without leaving (kill -9, a lost node) holds its
    # partitions until the session times out: 10 s, not kafka-python 3's
    # 45 s, so its work moves on quickly.
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    # Let the broker gather a few dozen events (or wait 500 ms) per fetch:
    # during a campaign each delivery event is read by five groups, and
    # answering every fetch with one or two records kept the broker and the
    # consumers busy with fetches, not events. An idle consumer asks twice a
    # second: at 100 ms the idle stack's workers took 17.7% of a core, at
    # 500 ms 8.2%, for at most 0.4 s more on a lone event (a pause, a test send).
    # (On kafka-python. With every loop on librdkafka since: ~2%.)
    fetch_min_bytes: int = 32 * 1024
    fetch_max_wait_ms: int = 500


CONSUMER = ConsumerTuning()


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class MessageSink(Protocol):
    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: list[tuple[str, bytes]] | None = None) -> None: ...

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything sent so far is acknowledged, or raise."""

    def close(self) -> None: ...


class MessageSource(Protocol):
    # Called with the partitions being taken away, before they go, so the
    # loop can commit what it finished. A partition assigned (again) after
    # a rebalance comes unpaused: pauses do not outlive the revoke.
    on_revoke: Callable[[list[TopicPartition]], None] | None

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]: ...

    def commit(self, offsets: dict[TopicPartition, int], wait: bool = True) -> None:
        """Commit the next offset to read for each partition. `wait=False`:
        send it and go on; the broker's answer comes with a later poll."""

    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    def pause(self, tp: TopicPartition) -> None: ...

    def resume(self, tp: TopicPartition) -> None: ...

    def assignment(self) -> set[TopicPartition]: ...

    def partition_count(self, topic: str) -> int:
        """How many partitions the topic has (asks the broker)."""

    def close(self) -> None: ...
