"""Leases that only unique inserts take.

A lease taken over by "delete the expired document, then insert mine" is
not safe on FerretDB 1.24: a conditional delete reads the matching ids and
then deletes by id, so of two takers of one expired lease the second can
delete the document the first has just inserted, and both hold it.

Here a lease `name` is a series of documents `<name>@<era>`, the newest era
being the lease. A taker inserts the era after the newest it read, once
that one has run out (the first era when there is none): of two takers one
insert wins. A holder gives a lease back by ending its era's time, never by
deleting it, so the next era is one up.

An era is deleted only once a newer one exists and it ended more than
FORGET_AFTER ago (`forget_old`), and a take whose read is older than
MAX_TAKE_SECONDS when its insert returns gives back what it got: a taker
that read era e as the newest can only insert e + 1 while e + 1, if anyone
took it since, is still there to clash with.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from pymongo.collection import Collection

from shared.mongo import IDS_PER_QUERY, as_utc, insert_new

MAX_TAKE_SECONDS = 5.0
# Far past MAX_TAKE_SECONDS, and past any skew between the pods' clocks.
FORGET_AFTER = timedelta(minutes=2)


@dataclass
class Seen:
    """What `current` read: name -> its newest era's document, and when."""
    newest: dict[str, dict]
    read_at: float  # time.monotonic() before the read

    def free(self, name: str, now: datetime) -> bool:
        doc = self.newest.get(name)
        return doc is None or as_utc(doc["until"]) <= now


def current(collection: Collection, names: list[str]) -> Seen:
    started = time.monotonic()
    newest: dict[str, dict] = {}
    names = list(dict.fromkeys(names))
    for start in range(0, len(names), IDS_PER_QUERY):
        for doc in collection.find({"lease": {"$in": names[start:start + IDS_PER_QUERY]}}):
            held = newest.get(doc["lease"])
            if held is None or doc["era"] > held["era"]:
                newest[doc["lease"]] = doc
    return Seen(newest, started)


def take(collection: Collection, names: list[str], holder: str, now: datetime,
         until: datetime, seen: Seen | None = None) -> dict[str, str]:
    """Of these leases, the ones free now taken: name -> the era's id. `seen`:
    what `current` read for them (read here when not given)."""
    seen = current(collection, names) if seen is None else seen
    free = [name for name in dict.fromkeys(names) if seen.free(name, now)]
    docs = [{"_id": f"{name}@{era:012d}", "lease": name, "era": era, "holder": holder,
             "until": until}
            for name in free for era in [seen.newest[name]["era"] + 1
                                         if name in seen.newest else 0]]
    taken = {doc["lease"]: doc["_id"] for doc, new in zip(docs, insert_new(collection, docs))
             if new}
    if taken and time.monotonic() - seen.read_at > MAX_TAKE_SECONDS:
        give_back(collection, list(taken.values()), holder, now)   # read too long ago
        return {}
    return taken


def give_back(collection: Collection, ids: list[str], holder: str, now: datetime) -> None:
    """Ends these eras now: the next taker takes the one after."""
    if ids:
        collection.update_many({"_id": {"$in": ids}, "holder": holder},
                               {"$set": {"until": now}})


def forget_old(collection: Collection, now: datetime,
               forget_all_after: timedelta | None = None) -> int:
    """Deletes the eras that have a newer one and ended FORGET_AFTER ago.
    Never a lease's newest: deleted while a taker reads it, the next taker
    would start again at the first era, beside the one after it. With
    `forget_all_after`, the leases whose newest era ended that long ago go
    entirely: only for leases nobody can want any more (a finished
    campaign's), as that race stays."""
    ended = list(collection.find({"lease": {"$exists": True},
                                  "until": {"$lt": now - FORGET_AFTER}},
                                 {"lease": 1, "era": 1}))
    if not ended:
        return 0
    newest = current(collection, [doc["lease"] for doc in ended]).newest
    old = []
    for doc in ended:
        top = newest.get(doc["lease"])   # None: another sweep took the whole lease
        if top is None:
            continue
        if doc["era"] < top["era"] or (forget_all_after is not None
                                       and as_utc(top["until"]) < now - forget_all_after):
            old.append(doc["_id"])
    for start in range(0, len(old), IDS_PER_QUERY):
        collection.delete_many({"_id": {"$in": old[start:start + IDS_PER_QUERY]}})
    return len(old)
