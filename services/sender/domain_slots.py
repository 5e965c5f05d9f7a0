"""A campaign's per-domain concurrency when senders cannot simply split it.

Each sender takes its share of a campaign's `per_domain_concurrency` (the
part of send.jobs it reads), which holds exactly while every sender's share
comes to one transaction or more: always when the limit is at least the
number of send.jobs partitions (a sender reads one at least). Below that (a
limit of 2 with 3 senders, or of 4 over 12 partitions read 3, 3, 2, 2, 2 by
five senders) every sender agrees, from the limit and the partition count
alone, to count the campaign's transactions in MongoDB instead: it may only
open one to a domain for each of the limit's slots it holds, leases named
`<campaign>:<domain's hash>#<n>` (shared/era_leases.py: taken by unique
inserts only) taken for a batch and given back when the batch's
transactions are over. The domain is kept as a keyed hash (the PII salt):
a recipient's own domain names its owner (ann@annlee.me), and slots
outlive their campaign by 30 days, erasures and all.

A batch takes what it wants of all its domains in one read and one insert.
A holder that dies keeps its slots until the lease runs out. A holder that
gives a slot back and wants it again at once steps aside if another sender
asked for it within the last `courtesy_seconds`: otherwise the sender that
just gave it back, back first, kept it batch after batch and the other sent
nothing of the domain until the first had run out of jobs.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from pymongo.database import Database
from shared import era_leases
from shared.mongo import delete_all, insert_new

Key = tuple[str, str]  # (campaign id, recipient domain)

# Slots named before 2026-12-07 carry the recipient's domain in clear (a
# domain has a dot, the keyed hash none). No sender reads them once every
# sender runs this code: an ended one goes after a day, not 30.
PLAINTEXT_SLOT = {"lease": {"$regex": r"^[^:#]*:[^#]*\.[^#]*#"}}
PLAINTEXT_KEPT = timedelta(days=1)


class DomainSlots:
    def __init__(self, db: Database, holder: str, lease_seconds: float,
                 courtesy_seconds: float = 1.0, clock: Callable[[], float] = time.time,
                 salt: str | None = None):
        self.col = db["domain_slots"]
        self.salt = (salt or "").encode()
        self.holder = holder
        self.lease = timedelta(seconds=lease_seconds)
        self.courtesy = timedelta(seconds=courtesy_seconds)
        self.clock = clock
        self.held: dict[Key, list[str]] = {}    # the slots (their eras' ids) this sender holds
        self._given_back: dict[Key, datetime] = {}
        self._last_sweep = 0.0
        self._plaintext_gone = False

    def take(self, wants: dict[Key, tuple[int, int]]) -> dict[Key, int]:
        """{(campaign, domain): (the campaign's limit, how many wanted)} ->
        how many slots this sender holds for each now."""
        self._sweep(self._now())
        now = self._now()   # after the sweep: a lease runs its whole length
        stepping_aside = self._stepping_aside(list(wants), now)
        short = {key: (limit, want - len(self.held.get(key, ())))
                 for key, (limit, want) in wants.items()
                 if key not in stepping_aside and len(self.held.get(key, ())) < want}
        if short:
            names = {self._slot_name(key, n): key for key, (limit, _) in short.items()
                     for n in range(limit)}
            seen = era_leases.current(self.col, list(names))
            chosen: list[str] = []
            for key, (limit, missing) in short.items():
                free = [name for name in (self._slot_name(key, n) for n in range(limit))
                        if seen.free(name, now)]
                chosen += free[:missing]
            taken = era_leases.take(self.col, chosen, self.holder, now, now + self.lease,
                                    seen=seen)
            for name, era_id in taken.items():
                self.held.setdefault(names[name], []).append(era_id)
        got = {key: len(self.held.get(key, ())) for key in wants}
        self._ask([key for key, n in got.items() if n == 0], now)
        self._unask([key for key, n in got.items() if n > 0])
        return got

    def give_back(self, keys: list[Key] | None = None) -> None:
        """All the slots of these keys (of every key, without)."""
        keys = list(self.held) if keys is None else [k for k in keys if k in self.held]
        now = self._now()
        era_leases.give_back(self.col, [era for key in keys for era in self.held.pop(key)],
                             self.holder, now)
        self._given_back.update({key: now for key in keys})

    def abandon(self) -> None:
        """A batch that failed while sending: its transactions may still be
        on the wire, so its slots are neither used again nor given back;
        they run out with their lease."""
        self.held = {}

    def keep(self, key: Key, count: int) -> None:
        """Give back what this sender holds of `key` beyond `count`."""
        if count <= 0:
            self.give_back([key])
            return
        extra = self.held.get(key, [])[count:]
        if extra:
            era_leases.give_back(self.col, extra, self.holder, self._now())
            del self.held[key][count:]

    def _stepping_aside(self, keys: list[Key], now: datetime) -> set[Key]:
        """The keys this sender gave back just now and another sender asked for
        since: it lets that one have them. Once: two senders that had each
        just given one back would otherwise both step aside for the other."""
        recent = [key for key in keys
                  if key in self._given_back and now - self._given_back[key] <= self.courtesy]
        if not recent:
            return set()
        asked = {doc["key"] for doc in self.col.find(
            {"key": {"$in": [self._key_text(key) for key in recent]}, "holder": {"$ne": self.holder},
             "at": {"$gt": now - self.courtesy}}, {"key": 1})}
        aside = {key for key in recent if self._key_text(key) in asked}
        for key in aside:
            del self._given_back[key]
        return aside

    def _ask(self, keys: list[Key], now: datetime) -> None:
        """Let the holders know someone waits (they step aside at their next
        batch): one ask per sender and key, written anew."""
        if not keys:
            return
        self._unask(keys)
        insert_new(self.col, [{"_id": self._ask_id(key), "key": self._key_text(key),
                               "holder": self.holder, "at": now,
                               "expires_at": now + self.lease} for key in keys])

    def _unask(self, keys: list[Key]) -> None:
        if keys:
            self.col.delete_many({"_id": {"$in": [self._ask_id(key) for key in keys]}})

    def _ask_id(self, key: Key) -> str:
        return f"{self._key_text(key)}?{self.holder}"

    def _sweep(self, now: datetime) -> None:
        # FerretDB has no TTL index: old slots and asks go by hand.
        if time.monotonic() - self._last_sweep > 60:
            self._last_sweep = time.monotonic()
            # A campaign's slots untaken for 30 days are a finished
            # campaign's (a pause ends one after 7): they go entirely.
            era_leases.forget_old(self.col, now, forget_all_after=timedelta(days=30))
            delete_all(self.col, {"key": {"$exists": True}, "expires_at": {"$lt": now}})
            self._forget_plaintext(now)
            self._given_back = {k: at for k, at in self._given_back.items()
                                if now - at <= self.courtesy}

    def _forget_plaintext(self, now: datetime) -> None:
        if self._plaintext_gone:
            return
        delete_all(self.col, {**PLAINTEXT_SLOT, "until": {"$lt": now - PLAINTEXT_KEPT}})
        self._plaintext_gone = not self.col.count_documents(PLAINTEXT_SLOT, limit=1)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), timezone.utc)

    def _slot_name(self, key: Key, number: int) -> str:
        return f"{self._key_text(key)}#{number}"

    def _key_text(self, key: Key) -> str:
        domain = hmac.new(self.salt, key[1].encode(), hashlib.sha256).hexdigest()[:32]
        return f"{key[0]}:{domain}"
