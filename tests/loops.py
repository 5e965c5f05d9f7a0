"""Driving a consumer loop in a test, without threads."""
from __future__ import annotations

import time
from typing import Callable


def run_until(loop, done: Callable[[], bool], deadline_s: float = 90.0) -> bool:
    """Run `loop` one poll at a time until `done()`; False if `deadline_s`
    passed first."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        loop.run_once()
        if done():
            return True
    return False
