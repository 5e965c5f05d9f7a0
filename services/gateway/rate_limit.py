"""Per-key request limits shared by every gateway worker and replica.

A fixed one-minute window holds `limit` tickets, and a request is let
through only if it takes one: a document whose `_id` is
`<key id>:<window>:<n>` with 1 <= n <= limit. The unique `_id` makes taking
a ticket atomic, so the limit is exact however many processes count.

Why not one counter per window with `$inc`: FerretDB 1.24 applies an update
as a read-modify-write of the whole document, and concurrent `$inc`s on one
document are lost (measured: 8 threads x 50 increments left 120 of 400).
Inserts and `_id` look-ups are also the only operations it does without a
scan of the collection.

Each process remembers the next ticket it expects to be free, so a request
normally costs one insert; when another process took it, the first free
ticket is found by galloping, then bisecting, over `_id` look-ups (tickets
are taken lowest first, so the taken ones form a prefix).

Expired tickets are purged by a thread of each process, every
PURGE_SECONDS, not by a request: the purge reads every ticket (FerretDB
has no index on `expires_at` to use), and the request that ran it waited
for that read.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timedelta, timezone

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared.mongo import delete_all

COLLECTION = "rate_tickets"
INDEXES = {COLLECTION: []}  # `_id` is the only key it is read by
KEEP = timedelta(minutes=2)  # FerretDB has no TTL: older tickets are purged
PURGE_SECONDS = 30.0

log = logging.getLogger(__name__)


class RateLimiter:
    def __init__(self, db: Database, purge_seconds: float = PURGE_SECONDS):
        self.col = db[COLLECTION]
        self.purge_seconds = purge_seconds
        self._next: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._purger_pid: int | None = None

    def admit(self, key_id: str, window: int, limit: int) -> bool:
        """Take one of the window's `limit` tickets; False when none is left."""
        self._ensure_purger()
        slot = (key_id, window)
        with self._lock:
            ticket = self._next.get(slot, 1)
        expires_at = datetime.now(timezone.utc) + KEEP
        while ticket <= limit:
            try:
                self.col.insert_one({"_id": _ticket_id(key_id, window, ticket),
                                     "expires_at": expires_at})
                self._remember(slot, ticket + 1)
                return True
            except DuplicateKeyError:
                ticket = self._first_free(key_id, window, ticket + 1, limit)
        self._remember(slot, limit + 1)
        return False

    def spent(self, key_id: str, window: int, limit: int) -> bool:
        """Whether this process has seen the window's tickets run out (no
        database read: other processes may know sooner)."""
        with self._lock:
            return self._next.get((key_id, window), 1) > limit

    def purge(self) -> int:
        return delete_all(self.col,
                          {"expires_at": {"$lt": datetime.now(timezone.utc)}})

    def _ensure_purger(self) -> None:
        # Started by the first request of each process: threads do not
        # survive gunicorn's fork.
        if self._purger_pid == os.getpid():
            return
        with self._lock:
            if self._purger_pid == os.getpid():
                return
            self._purger_pid = os.getpid()
            threading.Thread(target=self._purge_forever, name="rate-ticket-purge",
                             daemon=True).start()

    def _purge_forever(self) -> None:
        while True:
            time.sleep(self.purge_seconds)
            try:
                self.purge()
            except Exception:  # the database away: the next round tries again
                log.warning("purging expired rate tickets failed; will retry", exc_info=True)

    def _first_free(self, key_id: str, window: int, low: int, limit: int) -> int:
        """The lowest ticket >= low not taken yet (limit + 1 if none)."""
        step = 1
        while low <= limit and self._taken(key_id, window, low):
            probe = min(low + step, limit + 1)
            if probe > limit or not self._taken(key_id, window, probe):
                high = probe  # low is taken; high is free or past the limit
                while high - low > 1:
                    middle = (low + high) // 2
                    if self._taken(key_id, window, middle):
                        low = middle
                    else:
                        high = middle
                return high
            low, step = probe + 1, step * 2
        return low

    def _taken(self, key_id: str, window: int, ticket: int) -> bool:
        return self.col.find_one({"_id": _ticket_id(key_id, window, ticket)}, {"_id": 1}) is not None

    def _remember(self, slot: tuple[str, int], next_ticket: int) -> None:
        with self._lock:
            if len(self._next) > 10_000:  # windows of past minutes
                self._next = {k: v for k, v in self._next.items() if k[1] >= slot[1]}
            self._next[slot] = max(self._next.get(slot, 1), next_ticket)


def _ticket_id(key_id: str, window: int, ticket: int) -> str:
    return f"{key_id}:{window}:{ticket}"
