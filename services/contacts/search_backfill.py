"""Contacts whose `email_key` or `name_key` (the folded copies a search by
email or name prefix reads, domain.search_keys) are missing or do not match
their address and name get them right: contacts stored before the keys
existed, and those an older pod wrote during the rollout.

The contacts worker runs a pass soon after it starts and every ten minutes
until a pass finds nothing to change; that is recorded, and later starts
skip the pass: it reads the whole collection (on the local FerretDB, and
on MongoDB too, the keys having no index of their own to find them by).
deploy/k8s/README.md gives the rollout order."""
from __future__ import annotations

import logging

from pymongo import UpdateOne

from services.contacts import domain
from services.contacts.store import ContactsStore
from shared.mongo import documents_kept_out_of_errors

log = logging.getLogger(__name__)
# Named after the keys' rules: a change of them runs the passes again.
MARKER = f"contacts.search_keys.v{domain.SEARCH_KEY_RULES}"
BATCH = 500
READ = {"email": 1, "name": 1, "email_key": 1, "name_key": 1}


def backfill_search_keys(store: ContactsStore) -> int:
    """How many contacts this pass changed (0 once it has been done)."""
    migrations = store.contacts.database["migrations"]
    if migrations.find_one({"_id": MARKER}):
        return 0
    changed = 0
    updates: list[UpdateOne] = []
    # One cursor over the collection: a query per batch would read it from
    # the start each time on FerretDB.
    for contact in store.contacts.find({}, READ).batch_size(BATCH):
        keys = domain.search_keys(contact.get("email"), contact.get("name"))
        wrong = {key: value for key, value in keys.items()
                 if key not in contact or contact[key] != value}
        if wrong:
            # Only if the address and name are still what was read: a change
            # since wrote its own keys.
            updates.append(UpdateOne({"_id": contact["_id"], "email": contact.get("email"),
                                      "name": contact.get("name")}, {"$set": wrong}))
        if len(updates) == BATCH:
            changed += _write(store, updates)
            updates = []
    if updates:
        changed += _write(store, updates)
    if changed:
        log.info("search keys filled in", extra={"contacts": changed})
    else:
        migrations.update_one({"_id": MARKER}, {"$set": {"done_at": domain.now()}}, upsert=True)
    return changed


def _write(store: ContactsStore, updates: list[UpdateOne]) -> int:
    with documents_kept_out_of_errors():  # its error would quote the keys: names
        return store.contacts.bulk_write(updates, ordered=False).modified_count
