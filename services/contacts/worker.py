"""The contacts worker: consumes its topics (see handlers.py) until SIGTERM,
and beside the consumer loop runs
- CSV imports (see imports.py), claiming one at a time with a lease so
  that several workers share the queue and a dead worker's import is
  resumed by another from its checkpoint;
- campaign fan-outs (see fanout.py), claimed the same way by a few threads:
  the loop only records a launch, so it never waits for an audience;
- a sweep of imports over whose rejected rows still hold addresses erased
  since (see rejected_rows.py);
- until a pass finds none, the missing or stale search keys of contacts
  (see search_backfill.py)."""
from __future__ import annotations

import logging
import threading

from services.contacts import fanout, imports, rejected_rows, search_backfill
from services.contacts.fanout_store import FanoutStore
from services.contacts.handlers import GROUP, TOPICS, build_handlers
from services.contacts.settings import SETTINGS
from services.contacts.store import ContactsStore, ensure_contacts_indexes
from shared.config import Config, load_common
from shared.ids import worker_owner
from shared.kafka.factory import consumer_loop, hot_event_producer
from shared.runtime import Runtime
from shared.worker import every, run_worker

SERVICE = "contacts"
STOP_GRACE_SECONDS = 20   # for a fan-out thread to let go (k8s gives the pod 40)
log = logging.getLogger(__name__)


def run_imports(runtime: Runtime, config: Config, stop: threading.Event) -> None:
    store = ContactsStore(runtime.db)
    owner = worker_owner()
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


def fanout_runners(runtime: Runtime, config: Config,
                   stop: threading.Event) -> list[fanout.FanoutRunner]:
    contacts = ContactsStore(runtime.db, config.pii_salt)  # segments' email conditions
    stream = fanout.contacts_stream(contacts)
    # A producer of their own: the main loop flushes its producer before each
    # commit, which should not wait for a thousand send jobs in flight.
    producer = hot_event_producer(config, SERVICE)
    return [fanout.FanoutRunner(FanoutStore(runtime.db), stream, producer,
                                fanout.owner_name(number), should_stop=stop.is_set,
                                lease_seconds=config.fanout_lease_seconds,
                                missing=fanout.audience_check(contacts),
                                segment_lists=contacts.segment_lists)
            for number in range(config.fanout_threads)]


def start_fanout_threads(runners: list[fanout.FanoutRunner], wake: threading.Event,
                         stop: threading.Event, poll_seconds: float) -> list[threading.Thread]:
    threads = [threading.Thread(target=fanout.run_fanouts, name=f"contacts-fanout-{number}",
                                args=(runner, wake, stop, poll_seconds), daemon=True)
               for number, runner in enumerate(runners)]
    for thread in threads:
        thread.start()
    return threads


def main() -> None:
    config = load_common(SETTINGS)
    # The fan-out publishes one send job per recipient and an import one
    # contact.created per row: kafka-python spent ~85 us of CPU on each.
    runtime = Runtime(SERVICE, config, make_producer=hot_event_producer)
    stop, wake = threading.Event(), threading.Event()
    fanout_threads: list[threading.Thread] = []

    def build_loop():
        ensure_contacts_indexes(runtime.db)
        loop = consumer_loop(config, SERVICE, GROUP, TOPICS,
                             build_handlers(runtime, wake_fanouts=wake.set),
                             producer=runtime.producer(), prompt=True)  # launches start fan-outs
        threading.Thread(target=run_imports, name="contacts-imports", daemon=True,
                         args=(runtime, config, stop)).start()
        # Imports over whose rejected rows were not scrubbed when they ended
        # (a worker that died, a failed scrub): once a minute, as the query
        # reads every import on FerretDB.
        every("contacts-rejected-rows", lambda: 60.0,
              lambda: rejected_rows.scrub_finished_imports(
                  ContactsStore(runtime.db), config.import_dir, config.pii_salt),
              first_wait=10.0)
        # Missing or stale search keys: soon after the start, then every ten
        # minutes until a pass finds none (recorded: later starts skip it).
        every("contacts-search-keys", lambda: 600.0,
              lambda: search_backfill.backfill_search_keys(ContactsStore(runtime.db)),
              first_wait=1.0)
        fanout_threads.extend(start_fanout_threads(fanout_runners(runtime, config, stop), wake,
                                                   stop, config.fanout_poll_seconds))
        return loop

    try:
        # The stop reaches the fan-outs and the imports at once, not only
        # when the loop returns: a fan-out lets go for another worker.
        run_worker(SERVICE, config, build_loop, runtime.readiness(), on_stop=stop.set)
    finally:
        stop.set()
        wake.set()   # an idle fan-out thread waits on it (not set in the signal
        # handler: the main loop may hold the event's lock at that moment)
        for thread in fanout_threads:
            thread.join(STOP_GRACE_SECONDS)


if __name__ == "__main__":
    main()
