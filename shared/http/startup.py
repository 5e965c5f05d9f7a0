"""Start-up work that needs the database (creating indexes), done in the
background and retried until it succeeds.

A web process must start while MongoDB is still down (a whole stack starting
at once, a pod before its database) and say so on /readyz rather than crash
or hang in its app factory. Until the work is done, the `startup` readiness
check fails with the last error, so no traffic is routed to the process.
`stop()` ends the retries: an app built and dropped inside a longer-lived
process (a test) must not leave a thread logging after it.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)


class StartupWork:
    def __init__(self, work: Callable[[], None], max_delay: float = 10.0):
        self._work = work
        self._max_delay = max_delay
        self._done = threading.Event()
        self._stopped = threading.Event()
        self._problem = "not started"
        self._thread = threading.Thread(target=self._run, daemon=True, name="startup-work")
        self._thread.start()

    def _run(self) -> None:
        delay = 0.5
        while not self._stopped.is_set():
            try:
                self._work()
            except Exception as exc:  # the database is not there yet, most likely: try again
                self._problem = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("start-up work failed; retrying", extra={"retry_in_s": delay,
                                                                     "error": self._problem})
                self._stopped.wait(delay)
                delay = min(delay * 2, self._max_delay)
            else:
                self._done.set()
                return

    def stop(self, timeout: float = 5.0) -> None:
        """No more attempts: the retry thread ends (an attempt under way finishes first)."""
        self._stopped.set()
        self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def check(self) -> None:
        """A readiness check: raises until the work is done."""
        if not self._done.is_set():
            raise RuntimeError(f"start-up work not done: {self._problem}")
