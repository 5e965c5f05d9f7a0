"""Open and click events leave the request without waiting on Kafka.

A request puts its event in an in-process queue and answers from memory; a
background thread per web process publishes the queue in batches every
SANDESH_HIT_FLUSH_SECONDS. If Kafka is down the queue grows up to
SANDESH_HIT_QUEUE_LIMIT, then new hits are dropped and counted
(sandesh_tracking_hits_dropped_total): a pixel hit is not worth a slow or
failed response. A batch that fails to flush is published again (same event
ids: the stats worker counts each event once).

The same thread relays the events that could not be published synchronously
(unsubscribes, parked in MongoDB, see usecases.py).
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from typing import Callable, Union

from prometheus_client import Counter

from shared.events import Event, InvalidEvent
from shared.kafka.producer import EventProducer

log = logging.getLogger(__name__)

HITS_DROPPED = Counter("sandesh_tracking_hits_dropped_total",
                       "Open/click events dropped because the in-memory queue was full",
                       ["service"])
PUBLISH_FAILURES = Counter("sandesh_tracking_publish_failures_total",
                           "Batches of tracking events that failed to reach Kafka (retried)",
                           ["service"])
HITS_OF_ERASED = Counter("sandesh_tracking_hits_of_erased_contacts_total",
                         "Open/click events not published: their contact was erased "
                         "(mail the person still has)", ["service"])
HITS_INVALID = Counter("sandesh_tracking_hits_invalid_total",
                       "Open/click events dropped because they fail their schema or "
                       "cannot be built (a bug)",
                       ["service"])

MAX_BATCH = 5000

# What a request queues: the event, or what builds it. Requests queue a
# builder so the envelope (ids, time formatting, JSON) is made by the
# publisher thread, off the request's latency; it is built once, so a batch
# published again carries the same event ids.
Pending = Union[Event, Callable[[], Event]]
RELAY_EVERY_SECONDS = 5.0


class HitPublisher:
    def __init__(self, producer: Callable[[], EventProducer], *, limit: int,
                 flush_seconds: float, relay: Callable[[EventProducer], None] | None = None,
                 withheld: Callable[[Event], bool] | None = None, service: str = "tracking"):
        """`withheld`: true for an event that must not be published (its
        contact was erased: see shared/erased_contacts.py)."""
        self._producer = producer
        self._relay = relay
        self._withheld = withheld
        self.limit = limit
        self.flush_seconds = flush_seconds
        self._queue: deque[tuple[str, Pending, str]] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._dropped = HITS_DROPPED.labels(service)
        self._failures = PUBLISH_FAILURES.labels(service)
        self._invalid = HITS_INVALID.labels(service)
        self._of_erased = HITS_OF_ERASED.labels(service)
        self._last_relay = 0.0

    def submit(self, topic: str, event: Pending, key: str) -> bool:
        """Queue the event; False (and counted) when the queue is full."""
        self.ensure_running()
        if len(self._queue) >= self.limit:
            self._dropped.inc()
            return False
        self._queue.append((topic, event, key))
        return True

    def pending(self) -> int:
        return len(self._queue)

    def ensure_running(self) -> None:
        """Start this process's thread if it has none: the first hit does,
        and so must an event parked for the relay (a process may park one
        before it ever serves a hit)."""
        if self._pid != os.getpid():
            self._start()

    def _start(self) -> None:
        # Threads do not survive gunicorn's fork: start one per process.
        with self._lock:
            if self._pid == os.getpid():
                return
            self._queue.clear()
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="hit-publisher", daemon=True)
            self._thread.start()
            atexit.register(self.drain, 5.0)

    def _run(self) -> None:
        backoff = self.flush_seconds
        while True:
            self._wake.wait(backoff)
            self._wake.clear()
            ok = self.publish_batch()
            backoff = self.flush_seconds if ok else min(max(backoff * 2, 0.5), 10.0)
            if ok and self._relay and time.monotonic() - self._last_relay > RELAY_EVERY_SECONDS:
                self._last_relay = time.monotonic()
                try:
                    self._relay(self._producer())
                except Exception:
                    log.warning("relay of parked events failed; will retry", exc_info=True)

    def publish_batch(self) -> bool:
        """Publish up to MAX_BATCH queued events; False if Kafka failed (the
        batch goes back to the front of the queue)."""
        batch = []
        while self._queue and len(batch) < MAX_BATCH:
            batch.append(self._queue.popleft())
        if not batch:
            return True
        try:
            producer = self._producer()
            for n, (topic, pending, key) in enumerate(batch):
                event = pending if isinstance(pending, Event) else self._built(pending)
                batch[n] = (topic, event, key)
                if event is None:
                    continue
                if self._withheld is not None and self._withheld(event):
                    self._of_erased.inc()
                    continue
                try:
                    producer.publish(topic, event, key)
                except InvalidEvent:
                    # Never valid, so never publishable: it must not hold up the others.
                    self._invalid.inc()
                    log.error("dropped a %s event that fails its schema", event.type,
                              exc_info=True)
                if n % 50 == 49:
                    time.sleep(0)  # let request threads have the GIL: they answer people
            producer.flush(timeout=30)
            return True
        except Exception:
            self._failures.inc()
            log.warning("publishing %d tracking events failed; will retry", len(batch),
                        exc_info=True)
            batch = [item for item in batch if item[1] is not None]
            room = max(0, self.limit - len(self._queue))
            if room < len(batch):
                self._dropped.inc(len(batch) - room)
            self._queue.extendleft(reversed(batch[:room]))
            return False

    def _built(self, build: Callable[[], Event]) -> Event | None:
        """The hit's event; None (dropped, counted) if it cannot be built:
        raised inside the batch, it sent the whole batch back to the queue,
        to fail again there for good, and every later hit of the process
        with it. Logged by type only: a hit's data is an IP and a user agent."""
        try:
            return build()
        except Exception as exc:
            self._invalid.inc()
            log.error("dropped a hit whose event could not be built: %s", type(exc).__name__)
            return None

    def drain(self, timeout: float) -> None:
        """Best effort on shutdown: publish what is queued."""
        deadline = time.monotonic() + timeout
        while self._queue and time.monotonic() < deadline:
            if not self.publish_batch():
                break
