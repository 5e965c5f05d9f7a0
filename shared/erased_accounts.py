"""Deleted accounts, so that their events still in flight are dropped.

An account's erasure arrives on privacy.requested; its send jobs, delivery
events and hits travel on other topics, which Kafka does not order with
it. A service that erased the account's data and then counted one of its
late events would bring part of that data back (a delivery record, a
progress counter, an aggregate marker). So each service notes the account
here before it erases, in its own database, and drops the account's events
from then on.

Only the account id is kept: the platform keeps it anyway (the gateway
marks the account deleted).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Iterable, Protocol, TypeVar

from pymongo.database import Database


class _HasAccount(Protocol):
    account_id: str


E = TypeVar("E", bound=_HasAccount)


class ErasedAccounts:
    def __init__(self, db: Database, cache_seconds: float = 1.0, clock=time.monotonic):
        self.col = db["erased_accounts"]
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, bool]] = {}  # account id -> (when read, erased)

    def mark(self, account_id: str) -> None:
        self.col.update_one({"_id": account_id},
                            {"$setOnInsert": {"at": datetime.now(timezone.utc)}}, upsert=True)
        self._cache[account_id] = (self.clock(), True)

    def among(self, account_ids: Iterable[str]) -> set[str]:
        """The erased ones among these accounts (as of `cache_seconds` ago
        at most: one read per second however many events come)."""
        wanted, now = set(account_ids), self.clock()
        stale = [a for a in wanted
                 if (cached := self._cache.get(a)) is None or now - cached[0] >= self.cache_seconds]
        if stale:
            erased = {d["_id"] for d in self.col.find({"_id": {"$in": stale}}, {"_id": 1})}
            self._cache.update({a: (now, a in erased) for a in stale})
        return {a for a in wanted if self._cache[a][1]}

    def drop_events(self, events: list[E]) -> list[E]:
        """The events whose account is not erased."""
        erased = self.among(e.account_id for e in events)
        return [e for e in events if e.account_id not in erased] if erased else events
