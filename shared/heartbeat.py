"""A loop's heartbeat, for a liveness probe (/healthz).

A process whose main loop is stuck looks alive to everything else: its
HTTP thread answers, its helper threads run. The sender once stopped
sending after a Kafka disruption, logging nothing, with its partitions
still assigned to it: the work waited for a restart nobody made. The loop
beats once a turn; `check` fails once it has not for longer than any turn
may take, and Kubernetes restarts the pod (deploy/k8s: livenessProbe).
A restart loses nothing: what was not committed is read again.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator


class Stalled(RuntimeError):
    """The loop has not turned for longer than it may."""


class Heartbeat:
    def __init__(self, name: str, most_seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.most_seconds = most_seconds
        self.clock = clock
        self._last = clock()  # the loop being built counts: stuck there is stuck too

    def beat(self) -> None:
        self._last = self.clock()

    def check(self) -> None:
        quiet = self.clock() - self._last
        if quiet > self.most_seconds:
            raise Stalled(f"{self.name} has not turned for {quiet:.0f} s "
                          f"(at most {self.most_seconds:.0f} s)")


class CallWatch:
    """A watch on the calls a consumer loop makes to Kafka, for the loops
    whose own work may legitimately take long (an account's erasure, an
    hourly roll-up), where a heartbeat per turn would restart them midway.
    Nothing the loop does between those calls counts: `check` fails only
    while one call (a poll, the flush before a commit, the commit itself:
    librdkafka's synchronous commit has no timeout) has been under way for
    longer than `most_seconds`."""

    def __init__(self, name: str, most_seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.most_seconds = most_seconds
        self.clock = clock
        self._call: tuple[str, float] | None = None  # one tuple: read whole by check's thread

    @contextmanager
    def watching(self, call: str) -> Iterator[None]:
        outer = self._call
        # A poll runs a revoke's commit inside it: the poll has been out
        # since it began, whatever it is doing now.
        self._call = (f"{outer[0]} ({call})", outer[1]) if outer else (call, self.clock())
        try:
            yield
        finally:
            self._call = outer

    def check(self) -> None:
        call = self._call
        if call is None:
            return
        waited = self.clock() - call[1]
        if waited > self.most_seconds:
            raise Stalled(f"{self.name}: its {call[0]} has not returned for {waited:.0f} s "
                          f"(at most {self.most_seconds:.0f} s)")


def check_commits_answered(oldest_unanswered: float | None, most_seconds: float,
                           clock: Callable[[], float] = time.monotonic) -> None:
    """A liveness check for a loop that commits without waiting (the send
    loop): it turns while its commits go unanswered, and a coordinator that
    never answers would leave every offset where it was for good."""
    if oldest_unanswered is None:
        return
    waited = clock() - oldest_unanswered
    if waited > most_seconds:
        raise Stalled(f"an offset commit has not been answered for {waited:.0f} s "
                      f"(at most {most_seconds:.0f} s)")
