"""Erased contacts, so that what still carries their id is not recorded under it.

A contact's erasure replaces its id with a pseudonym in every record a
service keeps. Things naming the id keep coming after it: delivery events
still in flight (Kafka does not order them with privacy.requested), and
opens, clicks, bounces and unsubscribes from mail the person still has.
Recorded as they came, they put the erased id back: a delivery record, a
per-contact marker, an aggregate marker, an event on the analytics stream.

So each service that records such events notes the erased contact here
(in its own database, as a hash of the account and contact ids: the note
says that an id was erased, and cannot list the ids) and screens the
events: a delivery or bounce is counted under a fresh pseudonym, like the
records the erasure renamed; an open, click, unsubscribe or complaint,
whose marker is per contact and would count the pseudonym as someone new,
is not recorded at all.

Erasures are rare next to events, so each process keeps the whole set in
memory (8 bytes an entry: see KeySet) and reads only what was added since
its last read, at most once every `refresh_seconds`. A worker screens a
batch from memory, writes it, then looks up the batch's contacts (one `_id`
query a batch) and erases again what was erased in between: an erasure
renames what is written when it runs, and the batch's writes may land just
after (`erased_since`). A web process
reads the set once before its first answer, then refreshes it from a
thread of its own, so that no hit or request waits for the database after
that, and an outage leaves it with the set as last read. (So a hit in the
second after an erasure may still reach tracking.events with the id; the
worker still counts it under none.)
"""
from __future__ import annotations

import bisect
import dataclasses
import hashlib
import heapq
import logging
import os
import sys
import threading
import time
from array import array
from datetime import datetime, timedelta, timezone
from typing import Iterable

from pymongo.database import Database

from shared.events import Event
from shared.mongo import as_utc, delete_all
from shared.privacy_answers import is_pseudonym, pseudonym

log = logging.getLogger(__name__)

# Entries written by another process whose clock is behind this one's are
# read again for this long after the newest entry seen.
CLOCK_OVERLAP = timedelta(minutes=10)

# Per-contact facts: under a new pseudonym each would count a new person.
NOT_RECORDED = frozenset({"tracking.opened", "tracking.clicked", "tracking.unsubscribed",
                          "tracking.complained"})


def _key(account_id: str, contact_id: str) -> str:
    return hashlib.sha256(f"{account_id}|{contact_id}".encode()).hexdigest()


def _stored_key(stored: str) -> str:
    """An entry's key. The first version of this module stored
    "<account>|<contact>" itself; such an entry still counts."""
    if "|" in stored:
        return hashlib.sha256(stored.encode()).hexdigest()
    return stored


class KeySet:
    """A set of the entries' keys (sha256 hex digests), 8 bytes each: their
    first 64 bits in a sorted array, the latest additions in a small set
    until they are merged in (when it reaches an eighth of the array, so a
    first read of a million entries merges a few dozen times, not 250). As
    a set of the hex strings it took ~140 bytes an entry: ~140 MB a process
    at a million erased contacts, in every worker and web process.

    Two different keys agree in their first 64 bits with a probability of
    2^-64: with a million entries, one look-up in ~10^13 finds an entry it
    should not, and that contact's event is recorded under a pseudonym."""

    MERGE_AT = 4096

    def __init__(self):
        self._sorted = array("Q")
        self._recent: set[int] = set()
        self._writing = threading.Lock()  # look-ups take none: see _merge

    def add(self, key: str) -> None:
        self.update((key,))

    def update(self, keys: Iterable[str]) -> None:
        with self._writing:
            for key in keys:
                prefix = int(key[:16], 16)
                if not self._in_sorted(prefix):
                    self._recent.add(prefix)
            if len(self._recent) >= max(self.MERGE_AT, len(self._sorted) // 8):
                self._merge()

    def __contains__(self, key: str) -> bool:
        prefix = int(key[:16], 16)
        return prefix in self._recent or self._in_sorted(prefix)

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)

    def compact(self) -> None:
        """Everything into the array (after a first read: up to an eighth
        of it would stay as Python ints, ~90 bytes each, until the set grew)."""
        with self._writing:
            if self._recent:
                self._merge()

    def memory_bytes(self) -> int:
        return self._sorted.itemsize * len(self._sorted) + sys.getsizeof(self._recent) \
            + sum(sys.getsizeof(prefix) for prefix in self._recent)

    def _in_sorted(self, prefix: int) -> bool:
        keys = self._sorted  # one array, though a merge may replace it meanwhile
        at = bisect.bisect_left(keys, prefix)
        return at < len(keys) and keys[at] == prefix

    def _merge(self) -> None:
        # The merged array first, then the recent set emptied: a look-up in
        # between finds a key in both, never in neither.
        self._sorted = array("Q", heapq.merge(self._sorted, sorted(self._recent)))
        self._recent = set()


class ErasedContacts:
    def __init__(self, db: Database, refresh_seconds: float = 1.0, clock=time.monotonic,
                 in_background: bool = False):
        """`in_background`: refreshed by a thread of the process (a web
        process), never by the caller."""
        self.col = db["erased_contacts"]
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.in_background = in_background
        self._keys = KeySet()
        self._newest: datetime | None = None
        self._read_at: float | None = None
        self._thread_pid: int | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def mark(self, account_id: str, contact_ids: Iterable[str]) -> None:
        at = datetime.now(timezone.utc)
        for contact_id in contact_ids:
            key = _key(account_id, contact_id)
            self.col.update_one({"_id": key},
                                {"$setOnInsert": {"account_id": account_id, "at": at}},
                                upsert=True)
            self._keys.add(key)

    def erased_now(self, account_id: str, contact_id: str | None) -> bool:
        """One lookup by _id, no set kept in memory: for a rare caller (an
        audit entry about the contact)."""
        if not contact_id or is_pseudonym(contact_id):
            return False
        keys = [_key(account_id, contact_id), f"{account_id}|{contact_id}"]
        return self.col.count_documents({"_id": {"$in": keys}}, limit=1) > 0

    def forget_account(self, account_id: str) -> None:
        """A deleted account's entries: its events are dropped whole from
        then on (shared/erased_accounts.py)."""
        delete_all(self.col, {"account_id": account_id})

    def erased(self, account_id: str, contact_id: str | None) -> bool:
        if not contact_id or is_pseudonym(contact_id):
            return False
        if self.in_background:
            self._ensure_thread()
        elif self._read_at is None or self.clock() - self._read_at >= self.refresh_seconds:
            self.refresh()
        return _key(account_id, contact_id) in self._keys

    def screen(self, events: list[Event]) -> list[Event]:
        """The events to record: those of erased contacts either left out
        (NOT_RECORDED) or carrying a fresh pseudonym instead of the id."""
        screened = []
        for event in events:
            if not self.erased(event.account_id, event.data.get("contact_id")):
                screened.append(event)
            elif event.type not in NOT_RECORDED:
                screened.append(dataclasses.replace(
                    event, data={**event.data, "contact_id": pseudonym()}))
        return screened

    def any_erased_now(self, account_id: str, contact_ids: Iterable[str]) -> bool:
        """Whether any of these contacts is erased, read from the database
        now (one `_id` look-up), not from this process's copy of the set."""
        keys = [_key(account_id, c) for c in contact_ids if c and not is_pseudonym(c)]
        return bool(keys) and self.col.count_documents({"_id": {"$in": keys}}, limit=1) > 0

    def erased_since(self, events: list[Event]) -> list[tuple[str, str]]:
        """After the screened events were written: (account, contact) of
        those whose contact was erased meanwhile, read from the database now
        (by their keys: one `_id` look-up a batch, bounded by its size).
        Its erasure may have renamed before these writes landed."""
        pairs = {(e.account_id, e.data["contact_id"]) for e in events
                 if e.data.get("contact_id") and not is_pseudonym(e.data["contact_id"])}
        if not pairs:
            return []
        keys = {_key(*pair): pair for pair in pairs}
        found = {doc["_id"] for doc in self.col.find({"_id": {"$in": list(keys)}}, {"_id": 1})}
        self._keys.update(_stored_key(key) for key in found)
        return sorted(keys[key] for key in found)

    def refresh(self) -> None:
        """Read what was added since the last read (all of it the first time)."""
        first = self._newest is None
        query = {} if first else {"at": {"$gte": self._newest - CLOCK_OVERLAP}}
        newest, added = self._newest, []
        for doc in self.col.find(query, {"at": 1}):  # a cursor: a first read may be millions
            added.append(_stored_key(doc["_id"]))
            if len(added) >= KeySet.MERGE_AT:
                self._keys.update(added)
                added = []
            at = doc.get("at")
            if at is not None:
                at = as_utc(at)
                newest = at if newest is None else max(newest, at)
        self._keys.update(added)
        # Only once the whole cursor is read: it runs in key order, not by
        # time, and a read cut short would have the next one skip, for good,
        # every older entry it had not reached.
        self._newest = newest
        if first:
            self._keys.compact()
        self._read_at = self.clock()

    def _ensure_thread(self) -> None:
        # Threads do not survive gunicorn's fork: one per process.
        if self._thread_pid == os.getpid():
            return
        with self._lock:   # the others wait here for the first read
            if self._thread_pid != os.getpid():
                self._refresh_quietly()   # the first read, before the first answer
                threading.Thread(target=self._refresh_forever, name="erased-contacts",
                                 daemon=True).start()
                self._thread_pid = os.getpid()

    def close(self) -> None:
        """Stop the refreshing thread (the process lives on without it)."""
        self._closed.set()

    def _refresh_forever(self) -> None:
        while not self._closed.wait(self.refresh_seconds):
            self._refresh_quietly()

    def _refresh_quietly(self) -> None:
        try:
            self.refresh()
        except Exception:  # the database away: the set as last read stands
            log.warning("erased contacts could not be read; will retry", exc_info=True)
