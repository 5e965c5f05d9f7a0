"""Erased contacts, so that what still carries their id is not recorded under it.

A contact's erasure replaces its id with a pseudonym in every record a
service keeps. Things naming the id keep coming after it: delivery events
still in flight (Kafka does not order them with privacy.requested), and
opens, clicks, bounces and unsubscribes from mail the person still has.
Recorded as they came, they put the erased id back: a delivery record, a
per-contact marker, an aggregate marker, an event on the analytics stream.

So each service that records such events notes the erased contact here
(in its own database: the account id and the contact id, which its
records held anyway) and screens the events: a delivery or bounce is
counted under a fresh pseudonym, like the records the erasure renamed; an
open, click, unsubscribe or complaint, whose marker is per contact and
would count the pseudonym as someone new, is not recorded at all.

Erasures are rare next to events, so each process keeps the whole set in
memory and reads only what was added since its last read, at most once
every `refresh_seconds`: one small query a second however many events
pass, instead of a lookup per batch on the send path.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Iterable

from pymongo.database import Database
from pymongo.errors import PyMongoError

from shared.events import Event
from shared.mongo import delete_all
from shared.privacy_answers import pseudonym

log = logging.getLogger(__name__)

# Entries written by another process whose clock is behind this one's are
# read again for this long after the newest entry seen.
CLOCK_OVERLAP = timedelta(minutes=10)

# Per-contact facts: under a new pseudonym each would count a new person.
NOT_RECORDED = frozenset({"tracking.opened", "tracking.clicked", "tracking.unsubscribed",
                          "tracking.complained"})


def _key(account_id: str, contact_id: str) -> str:
    return f"{account_id}|{contact_id}"


class ErasedContacts:
    def __init__(self, db: Database, refresh_seconds: float = 1.0, clock=time.monotonic,
                 tolerate_outage: bool = False):
        """`tolerate_outage`: when the database cannot be read, go on with
        the set as last read (a web process answering people) instead of
        raising (a worker, whose batch is then redelivered)."""
        self.col = db["erased_contacts"]
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.tolerate_outage = tolerate_outage
        self._keys: set[str] = set()
        self._newest: datetime | None = None
        self._read_at: float | None = None

    def mark(self, account_id: str, contact_ids: Iterable[str]) -> None:
        at = datetime.now(timezone.utc)
        for contact_id in contact_ids:
            key = _key(account_id, contact_id)
            self.col.update_one({"_id": key},
                                {"$setOnInsert": {"account_id": account_id, "at": at}},
                                upsert=True)
            self._keys.add(key)

    def forget_account(self, account_id: str) -> None:
        """A deleted account's entries: its events are dropped whole from
        then on (shared/erased_accounts.py)."""
        delete_all(self.col, {"account_id": account_id})

    def erased(self, account_id: str, contact_id: str | None) -> bool:
        if not contact_id:
            return False
        self._refresh()
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

    def _refresh(self) -> None:
        now = self.clock()
        if self._read_at is not None and now - self._read_at < self.refresh_seconds:
            return
        query = {} if self._newest is None else {"at": {"$gte": self._newest - CLOCK_OVERLAP}}
        try:
            found = list(self.col.find(query, {"at": 1}))
        except PyMongoError:
            if not self.tolerate_outage:
                raise
            log.warning("erased contacts could not be read; going on with the set as last read",
                        exc_info=True)
            self._read_at = now
            return
        for doc in found:
            self._keys.add(doc["_id"])
            at = doc.get("at")
            if at is not None:
                at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
                self._newest = at if self._newest is None else max(self._newest, at)
        self._read_at = now
