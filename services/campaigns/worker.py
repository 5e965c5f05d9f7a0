"""The campaigns worker: counts delivery events into progress (see
handlers.py) and, on a timer beside the consumer loop, fires due schedules,
publishes events a crash left in an outbox, completes stalled campaigns and
cancels those paused past the pause limit. Run several: each of those moves
takes a lease first."""
from __future__ import annotations

import logging
import threading
from datetime import timedelta

from services.campaigns import store, usecases
from services.campaigns.handlers import GROUP, TOPICS, build_handlers, ports_for
from shared.config import POSITIVE_FLOAT, Setting, load_common
from shared.kafka.factory import consumer_loop
from shared.runtime import Runtime
from shared.worker import every, run_worker

SERVICE = "campaigns"
SETTINGS = [
    Setting("SANDESH_CAMPAIGNS_SWEEP_SECONDS", POSITIVE_FLOAT, default=2.0),
    Setting("SANDESH_CAMPAIGNS_PAUSE_LIMIT_HOURS", POSITIVE_FLOAT,
            default=usecases.PAUSE_LIMIT / timedelta(hours=1)),
]
log = logging.getLogger(__name__)


def run_sweeps(ports: usecases.Ports, interval: float, pause_limit: timedelta,
               stop: threading.Event) -> None:
    while not stop.wait(interval):
        try:
            result = usecases.sweep(ports, pause_limit=pause_limit)
            if any(result.values()):
                log.info("sweep", extra=result)
        except Exception:  # an outage: the next sweep tries again
            log.exception("sweep failed; retrying at the next tick")


def main() -> None:
    config = load_common(SETTINGS)
    runtime = Runtime(SERVICE, config)
    stop = threading.Event()

    def build_loop():
        store.ensure_indexes(runtime.db)
        ports = ports_for(runtime)
        producer = runtime.producer()
        loop = consumer_loop(config, SERVICE, GROUP, TOPICS, build_handlers(runtime, ports),
                             producer=producer)

        def before_commit():
            # Outcomes are written in one bulk insert per commit, and always
            # before the offsets that carried them are committed.
            usecases.flush_progress(ports)
            producer.flush()
        loop.before_commit = before_commit
        threading.Thread(target=run_sweeps, name="campaigns-sweep", daemon=True,
                         args=(ports_for(runtime), config.campaigns_sweep_seconds,
                               timedelta(hours=config.campaigns_pause_limit_hours),
                               stop)).start()
        # Ended lease eras: once an hour, as each pass reads every ended one
        # on FerretDB.
        every("campaigns-lease-forgetting", lambda: 3600.0,
              ports_for(runtime).campaigns.forget_old_leases, first_wait=10.0)
        return loop

    try:
        run_worker(SERVICE, config, build_loop, runtime.readiness())
    finally:
        stop.set()


if __name__ == "__main__":
    main()
