"""The contacts worker: consumes its topics (see handlers.py) until SIGTERM,
and beside the consumer loop runs CSV imports (see imports.py), claiming
one at a time with a lease so that several workers share the queue and a
dead worker's import is resumed by another from its checkpoint, and the
fan-out's watcher (see fanout.py), a loop of its own because a fan-out
holds the main loop for as long as it runs."""
from __future__ import annotations

import logging
import threading

from services.contacts import fanout, imports
from services.contacts.handlers import GROUP, TOPICS, build_handlers
from services.contacts.settings import SETTINGS
from services.contacts.store import ContactsStore, ensure_contacts_indexes
from shared import topics
from shared.config import Config, load_common
from shared.kafka.consumer import ConsumerLoop
from shared.kafka.factory import consumer_loop, hot_event_producer
from shared.runtime import Runtime
from shared.worker import HelperLoops, run_worker

SERVICE = "contacts"
log = logging.getLogger(__name__)


def run_imports(runtime: Runtime, config: Config, stop: threading.Event) -> None:
    store = ContactsStore(runtime.db)
    owner = imports.worker_name()
    while not stop.is_set():
        try:
            worked = imports.run_pending(store, runtime.producer(), config.pii_salt,
                                         config.import_dir, owner, config.import_batch_rows,
                                         config.import_lease_seconds)
        except Exception:  # an outage: the lease expires and the import resumes later
            log.exception("import failed; it resumes from its checkpoint")
            worked = False
        if not worked:
            stop.wait(config.import_poll_seconds)


def fanout_watcher(runtime: Runtime, config: Config,
                   topic: str = topics.CAMPAIGNS_EVENTS) -> ConsumerLoop:
    """The loop that marks running fan-outs cancelled or paused. A new group
    starts at the end of the topic: an event from before it existed has no
    running fan-out to stop, and replaying the history would mark
    long-finished ones."""
    return consumer_loop(config, SERVICE, fanout.WATCH_GROUP, [topic],
                         fanout.watch_handlers(runtime.db),
                         source_options={"auto.offset.reset": "latest"})


def main() -> None:
    config = load_common(SETTINGS)
    # The fan-out publishes one send job per recipient and an import one
    # contact.created per row: kafka-python spent ~85 us of CPU on each.
    runtime = Runtime(SERVICE, config, make_producer=hot_event_producer)
    stop = threading.Event()
    helpers = HelperLoops()

    def build_loop():
        ensure_contacts_indexes(runtime.db)
        loop = consumer_loop(config, SERVICE, GROUP, TOPICS,
                             build_handlers(runtime, should_stop=stop.is_set),
                             producer=runtime.producer())
        threading.Thread(target=run_imports, name="contacts-imports", daemon=True,
                         args=(runtime, config, stop)).start()
        helpers.start(fanout_watcher(runtime, config))
        return loop

    try:
        # The stop reaches the fan-out and the imports at once, not only when
        # the loop's handler returns (a fan-out holds it for minutes).
        run_worker(SERVICE, config, build_loop,
                   {**runtime.readiness(), "helper_loops": helpers.check}, on_stop=stop.set)
    finally:
        stop.set()
        helpers.stop()
        helpers.join()


if __name__ == "__main__":
    main()
