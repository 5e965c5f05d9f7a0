"""Leases that only unique inserts take.

A lease taken over by "delete the expired document, then insert mine" is
not safe on FerretDB 1.24: a conditional delete reads the matching ids and
then deletes by id, so of two takers of one expired lease the second can
delete the document the first has just inserted, and both hold it.

Here a lease `name` is a series of documents `<name>@<era>`, the newest era
being the lease. A taker inserts the era after the newest once that one
has run out (the first era when there is none): of two takers, one insert
wins. A holder gives a lease back by ending its own era's time, never by
deleting it, so the next era is always one up and a taker that read an
older state cannot take an era already taken. Older eras are deleted by
exact id, which harms nobody.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pymongo.collection import Collection

from shared.mongo import IDS_PER_QUERY, delete_all, insert_new

# An era this long over is history nobody can still be acting on: deleted.
FORGOTTEN_AFTER = timedelta(days=1)


def current(collection: Collection, names: list[str]) -> dict[str, dict]:
    """name -> its newest era's document (names never taken left out)."""
    newest: dict[str, dict] = {}
    names = list(dict.fromkeys(names))
    for start in range(0, len(names), IDS_PER_QUERY):
        for doc in collection.find({"lease": {"$in": names[start:start + IDS_PER_QUERY]}}):
            held = newest.get(doc["lease"])
            if held is None or doc["era"] > held["era"]:
                newest[doc["lease"]] = doc
    return newest


def take(collection: Collection, names: list[str], holder: str, now: datetime,
         until: datetime, seen: dict[str, dict] | None = None) -> dict[str, str]:
    """Of these leases, the ones free now taken: name -> the era's id. `seen`:
    what `current` read for them (read here when not given)."""
    seen = current(collection, names) if seen is None else seen
    free = [name for name in dict.fromkeys(names)
            if name not in seen or _aware(seen[name]["until"]) <= now]
    docs = [{"_id": f"{name}@{era:012d}", "lease": name, "era": era, "holder": holder,
             "until": until}
            for name in free for era in [seen[name]["era"] + 1 if name in seen else 0]]
    taken = {doc["lease"]: doc["_id"] for doc, new in zip(docs, insert_new(collection, docs))
             if new}
    older = [seen[name]["_id"] for name in taken if name in seen]
    if older:
        collection.delete_many({"_id": {"$in": older}})
    return taken


def renew(collection: Collection, ids: list[str], holder: str, until: datetime) -> None:
    if ids:
        collection.update_many({"_id": {"$in": ids}, "holder": holder},
                               {"$set": {"until": until}})


def give_back(collection: Collection, ids: list[str], holder: str, now: datetime) -> None:
    """Ends these eras now: the next taker takes the one after."""
    if ids:
        collection.update_many({"_id": {"$in": ids}, "holder": holder},
                               {"$set": {"until": now}})


def forget_old(collection: Collection, now: datetime) -> int:
    return delete_all(collection, {"until": {"$lt": now - FORGOTTEN_AFTER}})


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)
