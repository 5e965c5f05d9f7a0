"""Per-campaign rate limits shared by every sender process.

A limit is a number of messages per fixed window (one second, one hour).
Senders reserve messages from a window counter in bulk (one MongoDB $inc per
batch and campaign, through `WindowCounter`), so the limit holds across all
senders without a coordinator. What a window cannot grant waits: the engine
holds the partition until `retry_at` (seconds) or, for the hourly quota,
reschedules the job on send.retry.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from services.sender.domain import Limits


class WindowCounter(Protocol):
    def reserve(self, key: str, wanted: int, limit: int, expires_at: float) -> int:
        """Take up to `wanted` of the `limit` in window `key`; how many were taken."""


class MemoryCounter:
    """One process's counter (unit tests; a sender with no MongoDB)."""

    def __init__(self):
        self.used: dict[str, int] = {}

    def reserve(self, key, wanted, limit, expires_at):
        granted = max(0, min(wanted, limit - self.used.get(key, 0)))
        self.used[key] = self.used.get(key, 0) + granted
        return granted


@dataclass(frozen=True)
class Grant:
    granted: int
    retry_at: float | None = None  # when to ask again for the rest
    hourly: bool = False           # the rest waits for the hourly quota


class RateLimiter:
    def __init__(self, counter: WindowCounter, clock: Callable[[], float] = time.time):
        self.counter = counter
        self.clock = clock
        self._full_until: dict[str, float] = {}  # campaign id -> end of its spent window

    def per_window(self, campaign_id: str, limits: Limits) -> tuple[int, float] | None:
        """Without a per-second limit None; else the most the current window
        can still grant (0 once a grant fell short in it) and when the next
        window starts: a batch has no use for more of the campaign's jobs."""
        if not limits.per_second:
            return None
        now = self.clock()
        window, per_window, start = _second_window(limits, now)
        if self._full_until.get(campaign_id, 0.0) > now:
            return 0, start + window
        return per_window, start + window

    def _note_full(self, campaign_id: str, until: float, now: float) -> None:
        if len(self._full_until) > 1000:  # campaigns come and go: keep the live ones
            self._full_until = {c: t for c, t in self._full_until.items() if t > now}
        self._full_until[campaign_id] = until

    def grant(self, campaign_id: str, wanted: int, limits: Limits) -> Grant:
        now = self.clock()
        granted, retry_at, hourly = wanted, None, False
        if limits.per_second:
            window, per_window, start = _second_window(limits, now)
            granted = self.counter.reserve(f"{campaign_id}:s{window:g}:{start:.0f}", granted,
                                           per_window, start + window + 60)
            if granted < wanted:
                retry_at = start + window
                self._note_full(campaign_id, retry_at, now)
        if limits.per_hour and granted:
            start = math.floor(now / 3600) * 3600
            taken = self.counter.reserve(f"{campaign_id}:h:{start:.0f}", granted,
                                         int(limits.per_hour), start + 3600 + 60)
            if taken < granted:
                # What the second window granted beyond the hourly quota is
                # not given back: it only makes the per-second pace slower.
                granted, retry_at, hourly = taken, start + 3600, True
        return Grant(granted, retry_at, hourly)


def _second_window(limits: Limits, now: float) -> tuple[float, int, float]:
    """(window length, messages per window, the current window's start):
    one second, or 1/rate seconds for less than one message a second."""
    window = 1.0 if limits.per_second >= 1 else 1.0 / limits.per_second
    return window, max(1, math.floor(limits.per_second * window)), math.floor(now / window) * window
