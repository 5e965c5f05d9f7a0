"""A campaign's per-domain concurrency when senders cannot simply split it.

Each sender takes its share of a campaign's `per_domain_concurrency` (the
part of send.jobs it reads), which holds exactly while every sender's share
comes to one transaction or more: always when the limit is at least the
number of send.jobs partitions (a sender reads one at least). Below that (a
limit of 2 with 3 senders, or of 4 over 12 partitions read 3, 3, 2, 2, 2 by
five senders) every sender agrees, from the limit and the partition count
alone, to count the campaign's transactions in MongoDB instead: it may only
open one to a domain for each of the limit's slots it holds, documents
`<campaign>:<domain>#<n>` (a unique _id, one holder) taken for a batch and
given back when the batch's transactions are over.

A batch takes what it wants of all its domains in a few inserts (one round
per slot number). A holder that dies keeps its slots until the lease runs
out. A holder that gives a slot back and wants it again at once steps aside
if another sender asked for it within the last `courtesy_seconds`:
otherwise the sender that just gave it back, back first, kept it batch after
batch and the other sent nothing of the domain until the first had run out
of jobs.

Only inserts of unique _ids and single-document writes (FerretDB has no
transactions and loses concurrent `$inc`s; see MongoWindowCounter).
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from pymongo.database import Database
from shared.mongo import delete_all, find_by_ids, insert_new

Key = tuple[str, str]  # (campaign id, recipient domain)


class DomainSlots:
    def __init__(self, db: Database, holder: str, lease_seconds: float,
                 courtesy_seconds: float = 1.0, clock: Callable[[], float] = time.time):
        self.col = db["domain_slots"]
        self.holder = holder
        self.lease = timedelta(seconds=lease_seconds)
        self.courtesy = timedelta(seconds=courtesy_seconds)
        self.clock = clock
        self.held: dict[Key, list[str]] = {}    # the slot ids this sender holds
        self._given_back: dict[Key, datetime] = {}
        self._last_sweep = 0.0

    def take(self, wants: dict[Key, tuple[int, int]]) -> dict[Key, int]:
        """{(campaign, domain): (the campaign's limit, how many wanted)} ->
        how many slots this sender holds for each now (those held since a
        batch that failed included, their lease renewed)."""
        now = self._now()
        self._sweep(now)
        expires = now + self.lease
        still_held = [slot for key in wants for slot in self.held.get(key, ())]
        if still_held:
            self.col.update_many({"_id": {"$in": still_held}, "holder": self.holder},
                                 {"$set": {"expires_at": expires}})
        stepping_aside = self._stepping_aside(
            [key for key in wants if key not in self.held], now)
        short = {key: (limit, want) for key, (limit, want) in wants.items()
                 if key not in stepping_aside and len(self.held.get(key, ())) < want}
        for number in range(max((limit for limit, _ in short.values()), default=0)):
            round_ = {key: _slot_id(key, number) for key, (limit, want) in short.items()
                      if number < limit and len(self.held.get(key, ())) < want
                      and _slot_id(key, number) not in self.held.get(key, ())}
            self._insert(round_, expires)
        self._take_over_expired({key: limit for key, (limit, want) in short.items()
                                 if not self.held.get(key)}, now, expires)
        got = {key: len(self.held.get(key, ())) for key in wants}
        self._ask([key for key, n in got.items() if n == 0], now)
        self._unask([key for key, n in got.items() if n > 0])
        return got

    def give_back(self, keys: list[Key] | None = None) -> None:
        """The slots of these keys (all held, without), at the end of a batch."""
        keys = list(self.held) if keys is None else [k for k in keys if k in self.held]
        slots = [slot for key in keys for slot in self.held.pop(key)]
        if slots:
            delete_all(self.col, {"_id": {"$in": slots}, "holder": self.holder})
        now = self._now()
        self._given_back.update({key: now for key in keys})

    def _insert(self, slots: dict[Key, str], expires: datetime) -> None:
        keys = list(slots)
        docs = [{"_id": slots[key], "holder": self.holder, "expires_at": expires} for key in keys]
        for key, new in zip(keys, insert_new(self.col, docs)):
            if new:
                self.held.setdefault(key, []).append(slots[key])

    def _take_over_expired(self, limits: dict[Key, int], now: datetime,
                           expires: datetime) -> None:
        """Keys that got nothing: a slot whose holder died (its lease over)."""
        ids = {_slot_id(key, n): key for key, limit in limits.items() for n in range(limit)}
        for slot, doc in find_by_ids(self.col, ids).items():
            key = ids[slot]
            if self.held.get(key) or _aware(doc["expires_at"]) >= now:
                continue
            if self.col.delete_one({"_id": slot, "expires_at": doc["expires_at"]}).deleted_count:
                self._insert({key: slot}, expires)

    def _stepping_aside(self, keys: list[Key], now: datetime) -> set[Key]:
        """The keys this sender gave back just now and another sender asked for
        since: it lets that one have them. Once: two senders that had each
        just given one back would otherwise both step aside for the other."""
        recent = [key for key in keys
                  if key in self._given_back and now - self._given_back[key] <= self.courtesy]
        if not recent:
            return set()
        asked = {doc["key"] for doc in self.col.find(
            {"key": {"$in": [_key_text(key) for key in recent]}, "holder": {"$ne": self.holder},
             "at": {"$gt": now - self.courtesy}}, {"key": 1})}
        aside = {key for key in recent if _key_text(key) in asked}
        for key in aside:
            del self._given_back[key]
        return aside

    def _ask(self, keys: list[Key], now: datetime) -> None:
        """Let the holders know someone waits (they step aside at their next
        batch): one ask per sender and key, written anew."""
        if not keys:
            return
        self._unask(keys)
        insert_new(self.col, [{"_id": self._ask_id(key), "key": _key_text(key),
                               "holder": self.holder, "at": now,
                               "expires_at": now + self.lease} for key in keys])

    def _unask(self, keys: list[Key]) -> None:
        if keys:
            self.col.delete_many({"_id": {"$in": [self._ask_id(key) for key in keys]}})

    def _ask_id(self, key: Key) -> str:
        return f"{_key_text(key)}?{self.holder}"

    def _sweep(self, now: datetime) -> None:
        # FerretDB has no TTL index: slots of dead holders and old asks go by hand.
        if time.monotonic() - self._last_sweep > 60:
            self._last_sweep = time.monotonic()
            delete_all(self.col, {"expires_at": {"$lt": now}})
            self._given_back = {k: at for k, at in self._given_back.items()
                                if now - at <= self.courtesy}

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), timezone.utc)


def _slot_id(key: Key, number: int) -> str:
    return f"{_key_text(key)}#{number}"


def _key_text(key: Key) -> str:
    return f"{key[0]}:{key[1]}"


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)
