"""Per-campaign rate limits shared by every sender process.

A limit is a number of messages per fixed window (one second), or per
rolling hour counted in minutes (the hourly quota).
Senders reserve messages from a window counter in bulk (one MongoDB $inc per
batch and campaign, through `WindowCounter`), so the limit holds across all
senders without a coordinator. What a window cannot grant waits, parked
in MongoDB until `retry_at` (the next window, or the next minute for the
hourly quota, when the rolling hour may have room again), and goes back
on send.jobs at the campaign's pace (`pace`): held in its partition
instead, it held every other campaign's jobs behind it.

Senders sharing a campaign split each per-second window: until its middle
a sender takes no more than its share (the part of send.jobs it reads, so
the part of every campaign's jobs), from the middle whatever is left.
Asking for the whole window, the first sender to ask took all of it second
after second and the others nothing (in a CI run one of two senders sent
all of a campaign's first 150 messages), each loser claiming a window's
worth of jobs only to give them back.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from services.sender.domain import Limits


# A campaign limited only by the hour has its parked jobs put back this often,
# as many as its rolling hour has left (throttle.RateLimiter.pace).
HOURLY_PACE_SECONDS = 5.0


class WindowCounter(Protocol):
    def reserve(self, key: str, wanted: int, limit: int, expires_at: float,
                scale: int | None = None) -> int:
        """Take up to `wanted` of the `limit` in window `key`; how many were
        taken. `scale`: the limit the window's share is cut from, where it
        is a part of a longer one (a minute of a rolling hour)."""

    def left(self, key: str, limit: int, scale: int | None = None) -> int:
        """The most a reserve in window `key` could still get now."""

    def taken(self, keys: list[str], scale: int) -> int:
        """What was taken of these windows, at most."""


class MemoryCounter:
    """One process's counter (unit tests; a sender with no MongoDB)."""

    def __init__(self):
        self.used: dict[str, int] = {}

    def reserve(self, key, wanted, limit, expires_at, scale=None):
        granted = max(0, min(wanted, limit - self.used.get(key, 0)))
        self.used[key] = self.used.get(key, 0) + granted
        return granted

    def left(self, key, limit, scale=None):
        return max(0, limit - self.used.get(key, 0))

    def taken(self, keys, scale):
        return sum(self.used.get(key, 0) for key in keys)


@dataclass
class _WindowUse:
    """What this sender knows of a campaign's current per-second window."""
    start: float             # the window's start
    taken: int = 0           # what it was granted in it
    full_until: float = 0.0  # a grant fell short or nothing was left: none until then


@dataclass(frozen=True)
class Grant:
    granted: int
    retry_at: float | None = None  # when to ask again for the rest
    hourly: bool = False           # the rest waits for the hourly quota


class RateLimiter:
    def __init__(self, counter: WindowCounter, clock: Callable[[], float] = time.time):
        self.counter = counter
        self.clock = clock
        self._windows: dict[str, _WindowUse] = {}  # campaign id -> its current window
        self.share = 1.0  # the part of send.jobs this sender reads (set by the send loop)
        self.partitions = 1  # send.jobs' partitions (set by the send loop)
        # campaign id -> (a minute's start, what the 59 minutes before the last took)
        self._hours: dict[str, tuple[float, int]] = {}

    def per_window(self, campaign_id: str, limits: Limits) -> tuple[int, float] | None:
        """Without a per-second limit None; else the most of the campaign's
        jobs a batch may take now (until the middle of the window the
        sender's share, then the rest of the window; less what it took of
        it, nothing once a grant fell short), and when to look again."""
        if not limits.per_second:
            return None
        now = self.clock()
        window, per_window, start = _second_window(limits, now)
        end, middle = start + window, start + window / 2
        use = self._use(campaign_id, start, now)
        if use.full_until > now:
            return 0, end
        taken = use.taken
        if self.share >= 1:  # alone: the whole window, no second look at its middle
            return max(0, per_window - taken), end
        if now < middle:
            return max(0, math.ceil(per_window * self.share) - taken), middle
        # What the others left: claiming jobs only to give them back costs
        # an insert and a delete each, and they had taken their shares.
        left = self.counter.left(_second_key(campaign_id, window, start), per_window)
        if left <= 0:
            use.full_until = end
        return left, end

    def _use(self, campaign_id: str, start: float, now: float) -> _WindowUse:
        """The campaign's record for the window starting at `start`: a new
        window starts with nothing taken (a hold still running carries over)."""
        use = self._windows.get(campaign_id)
        if use is None or use.start != start:
            if len(self._windows) > 1000:  # campaigns come and go: keep the live ones
                self._windows = {c: u for c, u in self._windows.items()
                                 if u.start >= start - 3600 or u.full_until > now}
            use = self._windows[campaign_id] = _WindowUse(
                start, full_until=use.full_until if use else 0.0)
        return use

    def grant(self, campaign_id: str, wanted: int, limits: Limits) -> Grant:
        now = self.clock()
        granted, retry_at, hourly = wanted, None, False
        if limits.per_second:
            window, per_window, start = _second_window(limits, now)
            granted = self.counter.reserve(_second_key(campaign_id, window, start), granted,
                                           per_window, start + window + 60)
            use = self._use(campaign_id, start, now)
            use.taken += granted
            if granted < wanted:
                retry_at = use.full_until = start + window
        if limits.per_hour and granted:
            minute, quota, scale = self._hour(campaign_id, limits, now)
            taken = self.counter.reserve(_minute_key(campaign_id, minute), granted, quota,
                                         minute + 3600 + 60, scale)
            if taken < granted:
                # What the second window granted beyond the hourly quota is
                # not given back: it only makes the per-second pace slower.
                granted, retry_at, hourly = taken, minute + 60, True
        return Grant(granted, retry_at, hourly)

    def _hour(self, campaign_id: str, limits: Limits, now: float) -> tuple[float, int, int]:
        """The hourly quota is a rolling hour, counted in minutes: (this
        minute's start, what the hour leaves for it, the scale its blocks
        are cut from). A clock hour let twice the quota out around the top
        of the hour (40 messages in 32 s under per_hour: 20). The 60 minutes
        before this one count, so a message is counted for an hour at least
        (at most a minute more). What the 59 before the last took is read
        once a minute: they are over. The last, and the next, are read
        every time: another sender whose clock is a little behind (or whose
        reservation is on the wire) may still be taking from the last, and
        one whose clock is a little ahead from the next; unread, what they
        took there was missed and the quota granted up to twice."""
        minute = math.floor(now / 60) * 60
        per_hour, scale = int(limits.per_hour), _scale(int(limits.per_hour))
        cached = self._hours.get(campaign_id)
        if cached is None or cached[0] != minute:
            if len(self._hours) > 1000:
                self._hours.clear()
            older = [_minute_key(campaign_id, minute - 60 * n) for n in range(2, 61)]
            cached = self._hours[campaign_id] = (minute, self.counter.taken(older, scale))
        skewed = self.counter.taken([_minute_key(campaign_id, minute - 60),
                                     _minute_key(campaign_id, minute + 60)], scale)
        return minute, max(0, per_hour - cached[1] - skewed), scale

    def pace(self, campaign_id: str, limits: Limits) -> int:
        """How many of a limited campaign's parked jobs to put back on
        send.jobs now (Engine.unpark), once per half window across every
        sender (the first to ask gets it all; the others put none back):
        in a window's first half its worth, in its second what it still has
        room for; or what is left of the hourly quota, every few seconds.
        Put back faster, what the window cannot take is parked again: each
        job read, parked and put back once more for nothing. Put back only
        at a window's start, the jobs beyond a sender's share of it (until
        its middle: per_window) were parked again and waited a whole
        window: four senders sent a campaign limited to 10 a second at 4."""
        now = self.clock()
        if limits.per_second:
            window, wanted, start = _second_window(limits, now)
            slot, slot_end = start, start + window / 2
            if now >= slot_end:
                slot, slot_end = slot_end, start + window
                wanted = self.counter.left(_second_key(campaign_id, window, start), wanted)
        else:  # the hourly quota alone: what is left of it, every few seconds
            wanted = 10 ** 9
            slot = math.floor(now / HOURLY_PACE_SECONDS) * HOURLY_PACE_SECONDS
            slot_end = slot + HOURLY_PACE_SECONDS
        if limits.per_hour:
            minute, quota, scale = self._hour(campaign_id, limits, now)
            wanted = min(wanted, self.counter.left(_minute_key(campaign_id, minute), quota, scale))
        if wanted <= 0:
            return 0
        return self.counter.reserve(f"{campaign_id}:pace:{slot:.3f}", wanted, wanted,
                                    slot_end + 60)


def _minute_key(campaign_id: str, minute: float) -> str:
    return f"{campaign_id}:m:{minute:.0f}"


def _scale(per_hour: int) -> int:
    """A minute's blocks are cut as if its limit were a 60th of the hour's:
    cut from the whole hour, one block a minute used in part would count
    as a 64th of the hour each, and a slow campaign's hour fill up with
    blocks it barely used."""
    return -(-per_hour // 60)


def _second_key(campaign_id: str, window: float, start: float) -> str:
    return f"{campaign_id}:s{window:g}:{start:.0f}"


def _second_window(limits: Limits, now: float) -> tuple[float, int, float]:
    """(window length, messages per window, the current window's start):
    one second, or 1/rate seconds for less than one message a second."""
    window = 1.0 if limits.per_second >= 1 else 1.0 / limits.per_second
    return window, max(1, math.floor(limits.per_second * window)), math.floor(now / window) * window
