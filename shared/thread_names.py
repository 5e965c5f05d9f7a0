"""Operating-system names for a worker's threads, so that `top -H`,
`ps -L -o tid,comm,time` and /proc/<pid>/task/*/comm say which of them is
busy. Python's own thread names stay inside the interpreter (before 3.14),
and a sender profile on a loaded machine starts with "which thread?".

Linux's prctl(PR_SET_NAME) through ctypes, rather than setproctitle: with
that library installed, gunicorn retitles its processes by writing over
their environment block, and devstack finds its own processes there
(/proc/<pid>/environ). Linux keeps the first 15 bytes of a name;
elsewhere this does nothing.
"""
from __future__ import annotations

import ctypes
import sys

MAX_BYTES = 15
_PR_SET_NAME = 15


def _prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def name_this_thread(name: str) -> None:
    if _PRCTL is not None:
        _PRCTL(_PR_SET_NAME, name.encode("utf-8")[:MAX_BYTES], 0, 0, 0)
