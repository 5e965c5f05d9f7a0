"""A campaign's per-domain concurrency below one transaction per sender.

Each sender takes its share of a campaign's `per_domain_concurrency` (the
part of send.jobs it reads), which is exact while the share comes to one
transaction or more. Below that (a limit of 2 with 4 senders) a sender may
only open a transaction to the domain while it holds one of the limit's
slots: a document `<campaign>:<domain>#<n>` (a unique _id, one holder), taken
for a batch and given back when the batch's transactions are over.

A holder that dies keeps its slot until the lease runs out. A holder that
gives a slot back and wants it again at once steps aside if another sender
asked for it within the last `courtesy_seconds`: otherwise the sender that
just gave it back, back first, kept it batch after batch and the other
sent nothing of the domain until the first had run out of jobs.

Only inserts of unique _ids and single-document writes (FerretDB has no
transactions and loses concurrent `$inc`s; see MongoWindowCounter).
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared.mongo import delete_all, insert_new


class DomainSlots:
    def __init__(self, db: Database, holder: str, lease_seconds: float,
                 courtesy_seconds: float = 1.0, clock: Callable[[], float] = time.time):
        self.col = db["domain_slots"]
        self.holder = holder
        self.lease = timedelta(seconds=lease_seconds)
        self.courtesy = timedelta(seconds=courtesy_seconds)
        self.clock = clock
        self._given_back: dict[tuple[str, str], datetime] = {}
        self._last_sweep = 0.0

    def take(self, campaign_id: str, domain: str, limit: int) -> bool:
        """One of the campaign's `limit` slots for `domain`, held until
        give_back (or the lease's end). True when this sender holds one,
        including one it held already."""
        now = self._now()
        self._sweep(now)
        key = (campaign_id, domain)
        ids = _slot_ids(campaign_id, domain, limit)
        if self._should_step_aside(key, now):
            # Once: two senders that had each just given it back would
            # otherwise both step aside for the other.
            del self._given_back[key]
            self._ask(campaign_id, domain, now)
            return False
        expires = now + self.lease
        docs = [{"_id": slot, "holder": self.holder, "expires_at": expires} for slot in ids]
        for doc in docs:  # one at a time: taking two would hold a slot for nothing
            if insert_new(self.col, [doc])[0]:
                return True
        mine = self.col.find_one_and_update({"_id": {"$in": ids}, "holder": self.holder},
                                            {"$set": {"expires_at": expires}})
        if mine is not None:  # a batch that failed left it held; it is run again
            return True
        for doc in docs:  # a holder that died: its lease is over
            if self.col.delete_one({"_id": doc["_id"], "expires_at": {"$lt": now}}).deleted_count \
                    and insert_new(self.col, [doc])[0]:
                return True
        self._ask(campaign_id, domain, now)
        return False

    def give_back(self, campaign_id: str, domain: str, limit: int) -> None:
        self.col.delete_many({"_id": {"$in": _slot_ids(campaign_id, domain, limit)},
                              "holder": self.holder})
        self._given_back[(campaign_id, domain)] = self._now()

    def _should_step_aside(self, key: tuple[str, str], now: datetime) -> bool:
        given_back = self._given_back.get(key)
        if given_back is None or now - given_back > self.courtesy:
            return False
        asked = self.col.find_one({"_id": _asked_id(*key)})
        return bool(asked) and asked["holder"] != self.holder \
            and _aware(asked["at"]) > now - self.courtesy

    def _ask(self, campaign_id: str, domain: str, now: datetime) -> None:
        """Let the holder know someone waits (it steps aside at its next batch)."""
        try:
            self.col.replace_one({"_id": _asked_id(campaign_id, domain)},
                                 {"holder": self.holder, "at": now,
                                  "expires_at": now + self.lease}, upsert=True)
        except DuplicateKeyError:
            pass  # another sender asked at the same moment: the holder steps aside for it

    def _sweep(self, now: datetime) -> None:
        # FerretDB has no TTL index: slots of dead holders and old asks go by hand.
        if time.monotonic() - self._last_sweep > 60:
            self._last_sweep = time.monotonic()
            delete_all(self.col, {"expires_at": {"$lt": now}})
            self._given_back = {k: at for k, at in self._given_back.items()
                                if now - at <= self.courtesy}

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), timezone.utc)


def _slot_ids(campaign_id: str, domain: str, limit: int) -> list[str]:
    return [f"{campaign_id}:{domain}#{n}" for n in range(limit)]


def _asked_id(campaign_id: str, domain: str) -> str:
    return f"{campaign_id}:{domain}?"


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)
