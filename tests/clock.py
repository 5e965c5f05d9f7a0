"""Starting a test clear of a boundary of the clock, for tests whose
assertions count within a whole minute (the gateway's rate windows) or a
calendar day (UTC dates) and would fail if one passed mid-test."""
from __future__ import annotations

import time

MINUTE = 60
UTC_DAY = 86_400   # the epoch began at a UTC midnight


def clear_of_boundary(period: int, margin: float) -> None:
    """Wait, if the next multiple of `period` seconds is within `margin`, until it has passed."""
    left = period - time.time() % period
    if left < margin:
        time.sleep(left + 0.1)
