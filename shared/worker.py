"""The entry point shape of every Kafka worker process."""
from __future__ import annotations

import logging
import os
from typing import Callable

from shared import worker_http
from shared.config import Config
from shared.kafka.consumer import ConsumerLoop, run_until_signalled
from shared.logs import configure_logging

log = logging.getLogger(__name__)


def serve_health(service: str, config: Config, readiness: dict,
                 port_env: str = "SANDESH_HEALTH_PORT") -> None:
    """/healthz, /readyz and /metrics on the port `port_env` names, if it is
    set (the sender has its own variable: several per host locally)."""
    port = int(os.environ.get(port_env, "0") or 0)
    if port:
        worker_http.serve(os.environ.get("SANDESH_BIND_HOST", "127.0.0.1"), port, service,
                          config.stack_id, readiness)


def run_worker(service: str, config: Config, build_loop: Callable[[], ConsumerLoop],
               readiness: dict, on_stop: Callable[[], None] | None = None) -> None:
    """`on_stop` runs in the signal handler, beside the loop's own stop."""
    configure_logging(service, config.log_level)
    serve_health(service, config, readiness)
    loop = build_loop()
    log.info("worker started", extra={"group": loop.group})
    run_until_signalled(loop, on_stop)
    log.info("worker stopped")
