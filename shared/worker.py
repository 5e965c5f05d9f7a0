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


def run_worker(service: str, config: Config, build_loop: Callable[[], ConsumerLoop],
               readiness: dict, health_port_env: str | None = None) -> None:
    configure_logging(service, config.log_level)
    # The sender has its own port variable (several per host locally); every
    # other worker serves health on SANDESH_HEALTH_PORT when it is set.
    port = int(os.environ.get(health_port_env or "SANDESH_HEALTH_PORT", "0") or 0)
    if port:
        worker_http.serve(os.environ.get("SANDESH_BIND_HOST", "127.0.0.1"), port, service, config.stack_id, readiness)
    loop = build_loop()
    log.info("worker started", extra={"group": loop.group})
    run_until_signalled(loop)
    log.info("worker stopped")
