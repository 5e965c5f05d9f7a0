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

    def grant(self, campaign_id: str, wanted: int, limits: Limits) -> Grant:
        now = self.clock()
        granted, retry_at, hourly = wanted, None, False
        if limits.per_second:
            window = 1.0 if limits.per_second >= 1 else 1.0 / limits.per_second
            per_window = max(1, math.floor(limits.per_second * window))
            start = math.floor(now / window) * window
            granted = self.counter.reserve(f"{campaign_id}:s{window:g}:{start:.0f}", granted,
                                           per_window, start + window + 60)
            if granted < wanted:
                retry_at = start + window
        if limits.per_hour and granted:
            start = math.floor(now / 3600) * 3600
            taken = self.counter.reserve(f"{campaign_id}:h:{start:.0f}", granted,
                                         int(limits.per_hour), start + 3600 + 60)
            if taken < granted:
                # What the second window granted beyond the hourly quota is
                # not given back: it only makes the per-second pace slower.
                granted, retry_at, hourly = taken, start + 3600, True
        return Grant(granted, retry_at, hourly)
