"""The tracking worker: consumes its topics (see handlers.py) until SIGTERM."""
from services.tracking import retention
from services.tracking.counting import start_repairs_in_background
from services.tracking.handlers import (COUNTED_TYPES, EXTRA_SETTINGS, GROUP, TOPICS,
                                        build_batch_handler, build_counter, build_handlers)
from services.tracking.merging import start_merging_in_background
from services.tracking.store import INDEXES, TrackingStore
from shared import mongo
from shared.config import load_common
from shared.kafka.factory import consumer_loop
from shared.runtime import Runtime
from shared.worker import run_worker

SERVICE = "tracking"


def main() -> None:
    config = load_common(EXTRA_SETTINGS)
    runtime = Runtime(SERVICE, config)

    def build_loop():
        mongo.ensure_indexes(runtime.db, INDEXES)
        return consumer_loop(config, SERVICE, GROUP, TOPICS, build_handlers(runtime),
                             producer=runtime.producer(),
                             batch_handler=build_batch_handler(runtime),
                             batch_types=COUNTED_TYPES)

    retention.start_in_background(runtime.db)
    start_repairs_in_background(build_counter(runtime))
    start_merging_in_background(TrackingStore(runtime.db))
    run_worker(SERVICE, config, build_loop, runtime.readiness())


if __name__ == "__main__":
    main()
