"""The entry point shape of every Kafka worker process."""
from __future__ import annotations

import faulthandler
import logging
import os
import signal
import threading
from typing import Callable

from shared import worker_http
from shared.config import Config
from shared.kafka.consumer import ConsumerLoop, run_until_signalled
from shared.logs import configure_logging

log = logging.getLogger(__name__)


def serve_health(service: str, config: Config, readiness: dict,
                 port_env: str = "SANDESH_HEALTH_PORT", liveness: dict | None = None) -> None:
    """/healthz, /readyz and /metrics on the port `port_env` names, if it is
    set (the sender has its own variable: several per host locally)."""
    port = int(os.environ.get(port_env, "0") or 0)
    if port:
        worker_http.serve(os.environ.get("SANDESH_BIND_HOST", "127.0.0.1"), port, service,
                          config.stack_id, readiness, liveness)


def dump_stacks_on_sigusr1() -> None:
    """`kill -USR1 <pid>` prints every thread's stack to stderr: how to see
    where a worker that stopped making progress waits, without stopping it.
    (Not in the web processes: gunicorn uses SIGUSR1 to reopen its logs.)"""
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def run_worker(service: str, config: Config, build_loop: Callable[[], ConsumerLoop],
               readiness: dict, on_stop: Callable[[], None] | None = None) -> None:
    """`on_stop` runs in the signal handler, beside the loop's own stop."""
    configure_logging(service, config.log_level)
    dump_stacks_on_sigusr1()
    # Served before the loop is built: building it may wait a minute for
    # MongoDB (its indexes), and a liveness probe refused meanwhile would
    # restart the pod in the very case that wait is for.
    built: list[ConsumerLoop] = []
    serve_health(service, config, readiness,
                 liveness={"consumer_loop": lambda: built and built[0].watch.check()})
    loop = build_loop()
    built.append(loop)
    log.info("worker started", extra={"group": loop.group})
    run_until_signalled(loop, on_stop)
    log.info("worker stopped")


class HelperLoops:
    """Consumer loops a worker runs beside its main one, a thread each (the
    sender's state loops, privacy's aggregate counter). `check` is a
    readiness check: a helper that died, on an error its loop does not
    catch, leaves its events unread while the main loop goes on, and the pod
    should say so rather than look healthy."""

    def __init__(self) -> None:
        self._running: list[tuple[ConsumerLoop, threading.Thread]] = []

    def start(self, loop: ConsumerLoop) -> None:
        thread = threading.Thread(target=self._run, args=(loop,), name=loop.group, daemon=True)
        thread.start()
        self._running.append((loop, thread))

    @staticmethod
    def _run(loop: ConsumerLoop) -> None:
        try:
            loop.run()
        except Exception:  # logged as JSON with the group; check() reports it from now on
            log.exception("helper loop stopped on an error", extra={"group": loop.group})

    def stop(self) -> None:
        """Tell every helper to stop (safe in a signal handler)."""
        for loop, _ in self._running:
            loop.stop()

    def join(self, timeout: float = 10.0) -> None:
        for _, thread in self._running:
            thread.join(timeout)

    def check(self) -> None:
        dead = [loop.group for loop, thread in self._running
                if not thread.is_alive() and not loop.stopping]
        if dead:
            raise RuntimeError(f"helper loop stopped: {', '.join(dead)}")

    def check_calls(self) -> None:
        """A liveness check: fails while a helper's call to Kafka hangs
        (ConsumerLoop.watch). A restart is all that unsticks it."""
        for loop, _ in self._running:
            loop.watch.check()


def every(name: str, seconds: Callable[[], float], job: Callable[[], None],
          first_wait: float = 60.0) -> threading.Thread:
    """Run `job` now and then in a daemon thread of the worker (retention
    purges, repairs): after `first_wait` seconds, then every `seconds()`.
    A failed round is logged and tried again next time; the consumer never
    waits for it."""
    def run():
        wait = first_wait
        while not stop.wait(wait):
            wait = seconds()
            try:
                job()
            except Exception:
                log.exception("%s failed; tried again next round", name)
    stop = threading.Event()
    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread
