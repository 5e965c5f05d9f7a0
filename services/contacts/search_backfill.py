"""Contacts stored before `email_key` and `name_key` existed (the folded
copies a search by email or name prefix reads, domain.search_keys) get them.

The contacts worker runs it shortly after it starts. Once a pass has found
nothing left to fill, that is recorded, and later starts skip the pass: on
the local FerretDB the query reads the whole collection. Roll the contacts
web pods out before the workers, so that no old pod writes a contact
without keys after the pass (deploy/k8s/README.md)."""
from __future__ import annotations

import logging

from pymongo import UpdateOne

from services.contacts import domain
from services.contacts.store import ContactsStore

log = logging.getLogger(__name__)
MARKER = "contacts.search_keys"
BATCH = 500


def backfill_search_keys(store: ContactsStore) -> int:
    """How many contacts were given their keys by this pass."""
    migrations = store.contacts.database["migrations"]
    if migrations.find_one({"_id": MARKER}):
        return 0
    filled = 0
    updates: list[UpdateOne] = []
    # One cursor over the collection: a query per batch would read it from
    # the start each time on FerretDB.
    missing = store.contacts.find({"email_key": {"$exists": False}}, {"email": 1, "name": 1})
    for contact in missing.batch_size(BATCH):
        # Only if still without keys: a change made since wrote its own.
        updates.append(UpdateOne({"_id": contact["_id"], "email_key": {"$exists": False}},
                                 {"$set": domain.search_keys(contact["email"],
                                                             contact.get("name"))}))
        if len(updates) == BATCH:
            filled += _write(store, updates)
            updates = []
    if updates:
        filled += _write(store, updates)
    migrations.update_one({"_id": MARKER}, {"$set": {"done_at": domain.now(), "filled": filled}},
                          upsert=True)
    if filled:
        log.info("search keys filled in", extra={"contacts": filled})
    return filled


def _write(store: ContactsStore, updates: list[UpdateOne]) -> int:
    return store.contacts.bulk_write(updates, ordered=False).modified_count
