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
from typing import Callable


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
