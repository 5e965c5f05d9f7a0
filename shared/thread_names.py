"""Operating-system names for a worker's threads, so that `top -H`,
`ps -L -o tid,comm,time` and /proc/<pid>/task/*/comm say which of them is
busy. Python's own thread names stay inside the interpreter (before 3.14),
and a sender profile on a loaded machine starts with "which thread?".

Linux keeps the first 15 bytes of a name; elsewhere this does nothing.
"""
from __future__ import annotations

import setproctitle

MAX_CHARS = 15


def name_this_thread(name: str) -> None:
    setproctitle.setthreadtitle(name[:MAX_CHARS])
