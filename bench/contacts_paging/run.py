"""Benchmark: contact list pagination, first page against a deep cursor.

    .venv/bin/python bench/contacts_paging/run.py [--contacts 200000] [--limit 50]

1. Inserts --contacts contacts of one account (and a tenth as many of a
   second account, so the account filter has something to skip) into a
   throwaway database of the stack's MongoDB server, with the contacts
   indexes the service creates (ensure_contacts_indexes), and the index of a
   searchable custom field, `city` (ContactsStore.index_field).
   One contact in ten is on a list, one in a hundred has bounced; each has
   one of 500 cities, and one contact a city of its own.
2. Pages through ContactsStore.search_contacts exactly as GET /contacts
   does (`limit` per page, cursor = last _id): the first page, and a page
   at a cursor 90% of the way through, with no filter, then with each kind
   of filter: the list (10% match), a status (1%), a city (0.2%), and an
   email prefix, a name and a city (one contact each), and a name prefix
   that one in nine matches. Each is timed --repeat times; the median is
   printed, with the server's explain of the query (MongoDB: the winning
   plan; FerretDB: what it pushed down to SQLite).
The database is dropped at the end. Keep N small on a shared machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from devstack.env import load_stack_env  # noqa: E402
from services.contacts import domain, usecases  # noqa: E402
from services.contacts.store import (ContactsStore, contact_document,  # noqa: E402
                                     ensure_contacts_indexes, is_ferretdb)
from shared import mongo  # noqa: E402

SALT = "bench-salt"
BATCH = 1000
RARE_CITY = "Solapur"


def rare_index(contacts: int) -> int:
    """The contact that alone matches the rare searches: three quarters of
    the way through."""
    return contacts * 3 // 4


def insert(store: ContactsStore, account_id: str, count: int, tag: str, list_id: str) -> list[str]:
    at = domain.now()
    ids: list[str] = []
    for start in range(0, count, BATCH):
        docs = [bench_contact(account_id, i, tag, list_id, at, rare=i == rare_index(count))
                for i in range(start, min(count, start + BATCH))]
        store.contacts.insert_many(docs, ordered=False)
        ids += [d["_id"] for d in docs]
    return ids


def bench_contact(account_id: str, i: int, tag: str, list_id: str, at, *, rare: bool) -> dict:
    city = RARE_CITY if rare else f"City {i % 500}"
    doc = contact_document(account_id, domain.address(f"{tag}{i}@mail{i % 40}.example.com", SALT),
                           name=f"Person {i}", fields={"city": city}, at=at,
                           origin={"via": "bench"})
    if i % 10 == 0:
        doc["lists"] = {list_id: domain.membership("subscribed", "api", at)}
        doc["list_ids"] = doc["subscribed_list_ids"] = [list_id]
    if i % 100 == 7:
        doc["status"] = "bounced"
    return doc


def filters(list_id: str, contacts: int) -> dict[str, dict]:
    """GET /contacts' filters, as usecases.search_query builds them."""
    rare = rare_index(contacts)
    return {"no filter": {}, "list (10%)": {"list_ids": list_id},
            "status (1%)": {"status": "bounced"}, "city (0.2%)": {"fields.city": "City 7"},
            "email prefix (1)": _search({"email_prefix": f"p{rare}@"}),
            "name (1)": _search({"name": f"Person {rare}"}),
            "name prefix (11%)": _search({"name": "Person 1"}),
            "city (1)": {"fields.city": RARE_CITY}}


def _search(args: dict) -> dict:
    """The query GET /contacts makes of a prefix (no store needed for it)."""
    return usecases.search_query(SimpleNamespace(store=None), "unused", {"limit": 50, **args})


def timed_page(store: ContactsStore, account_id: str, query: dict, after: str | None,
               limit: int, repeat: int) -> tuple[float, int]:
    times, got = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        got = len(store.search_contacts(account_id, query, after, limit))
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), got


def plan(store: ContactsStore, account_id: str, filter_: dict, after: str | None,
         limit: int) -> str:
    query = {**filter_, "account_id": account_id, **({"_id": {"$gt": after}} if after else {})}
    try:
        explained = store.contacts.find(query).sort("_id", 1).limit(limit + 1).explain()
    except Exception as exc:   # not every server explains
        return f"explain failed: {exc}"
    if "queryPlanner" in explained and "winningPlan" in explained["queryPlanner"]:
        stages, node = [], explained["queryPlanner"]["winningPlan"]
        while node:
            stages.append(node.get("stage", "?") + (f" {node['keyPattern']}"
                                                    if "keyPattern" in node else ""))
            node = node.get("inputStage")
        return " <- ".join(stages)
    return ", ".join(f"{k}={explained[k]}" for k in sorted(explained)
                     if "pushdown" in k.lower())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    env = load_stack_env()
    uri = os.environ.get("SANDESH_MONGO_URI") or env["SANDESH_MONGO_URI"]
    db_name = f"bench_paging_{uuid.uuid4().hex[:8]}"
    db = mongo.database(uri, db_name)
    store = ContactsStore(db)
    account_id, other_id = domain.new_id(), domain.new_id()
    try:
        ensure_contacts_indexes(db)
        store.index_field("city")
        server = "FerretDB" if is_ferretdb(db) else "MongoDB"
        indexes = [list(ix["key"].items()) for ix in store.contacts.list_indexes()]
        t = time.perf_counter()
        list_id = domain.new_id()
        ids = sorted(insert(store, account_id, args.contacts, "p", list_id))
        insert(store, other_id, args.contacts // 10, "o", domain.new_id())
        print(f"{server}: inserted {args.contacts:,} contacts (+{args.contacts // 10:,} of "
              f"another account) in {time.perf_counter() - t:.1f} s; contacts indexes: {indexes}")
        deep = ids[int(len(ids) * 0.9)]
        for name, query in filters(list_id, args.contacts).items():
            for label, after in (("first page", None), ("deep cursor (90%)", deep)):
                ms, got = timed_page(store, account_id, query, after, args.limit, args.repeat)
                print(f"{name:18} {label:18} {ms:9.1f} ms per page of "
                      f"{got - (got > args.limit)} (median of {args.repeat}); "
                      f"plan: {plan(store, account_id, query, after, args.limit)}")
    finally:
        mongo.client(uri).drop_database(db_name)


if __name__ == "__main__":
    main()
