"""What the rest of the code needs from a broker, and nothing more."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

TopicPartition = tuple[str, int]


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

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the next offset to read for each partition."""

    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    def pause(self, tp: TopicPartition) -> None: ...

    def resume(self, tp: TopicPartition) -> None: ...

    def close(self) -> None: ...
