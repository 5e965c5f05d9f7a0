"""The privacy worker: answers and audit entries in one consumer loop,
deliveries for the aggregates in another (a thread), until SIGTERM; it rolls
up the aggregate counters now and then."""
import logging
import signal
import time
from datetime import timedelta

from services.privacy import aggregates, usecases
from services.privacy.handlers import (AGGREGATES_GROUP, AGGREGATES_TOPICS, AGGREGATES_TYPES,
                                      GROUP, TOPICS, build_aggregate_counter, build_handlers)
from services.privacy.settings import SETTINGS
from services.privacy.store import PrivacyStore
from shared.config import load_common
from shared.kafka.factory import consumer_loop
from shared.logs import configure_logging
from shared.runtime import Runtime
from shared.worker import HelperLoops, serve_health

SERVICE = "privacy"
ROLLUP_EVERY_SECONDS = 3600
REPUBLISH_EVERY_SECONDS = 30
REPUBLISH_AFTER = timedelta(seconds=60)  # the API's own flush has had its 30 s
log = logging.getLogger(__name__)


def main() -> None:
    config = load_common(SETTINGS)
    configure_logging(SERVICE, config.log_level)
    runtime = Runtime(SERVICE, config)
    helpers = HelperLoops()
    built: list = []  # served before the loops are built, as shared.worker.run_worker does
    serve_health(SERVICE, config, {**runtime.readiness(), "helper_loops": helpers.check},
                 liveness={"consumer_loop": lambda: built and built[0].watch.check(),
                           "helper_loops": helpers.check_calls})
    loop = consumer_loop(config, SERVICE, GROUP, TOPICS, build_handlers(runtime),
                         producer=runtime.producer())
    built.append(loop)
    counting = consumer_loop(config, SERVICE, AGGREGATES_GROUP, AGGREGATES_TOPICS, {},
                             batch_handler=build_aggregate_counter(runtime),
                             batch_types=AGGREGATES_TYPES)

    def stop(*_args):
        loop.stop()
        helpers.stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    helpers.start(counting)
    store = PrivacyStore(runtime.db)
    next_rollup = next_republish = time.monotonic()
    log.info("worker started", extra={"group": loop.group})
    try:
        while not loop.stopping:
            loop.run_once()
            if time.monotonic() >= next_republish:
                next_republish = time.monotonic() + REPUBLISH_EVERY_SECONDS
                try:
                    republished = usecases.publish_unpublished(store, runtime.producer(),
                                                               REPUBLISH_AFTER)
                    if republished:
                        log.info("privacy requests published again",
                                 extra={"requests": republished})
                except Exception:  # the broker is still away: the next round retries
                    log.warning("publishing privacy requests again failed", exc_info=True)
            if time.monotonic() >= next_rollup:
                next_rollup = time.monotonic() + ROLLUP_EVERY_SECONDS
                try:
                    aggregates.roll_up(store, config.privacy_aggregate_rollup_days)
                except Exception:  # the next round retries; consuming goes on
                    log.exception("aggregate roll-up failed")
                try:
                    expired = usecases.expire_exports(store, config.privacy_export_days)
                    if expired:
                        log.info("access exports deleted", extra={"requests": expired})
                except Exception:  # the next round retries
                    log.exception("deleting old access exports failed")
    finally:
        stop()
        loop.shutdown()
        helpers.join(timeout=30)
    log.info("worker stopped")


if __name__ == "__main__":
    main()
