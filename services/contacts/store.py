"""The contacts repository over MongoDB (database sandesh_contacts).

Collections:
  lists         {_id, account_id, name, description, created_at, updated_at}
  contacts      {_id, account_id, email (normalised), email_hash, name, fields{},
                 status (active|bounced|complained|restricted), suppressed,
                 lists{<list id>: {status, via, at, [import_id, row]}},
                 list_ids[], subscribed_list_ids[], origin{}, created_at, updated_at}
                 One contact per (account_id, email_hash): a unique index. The hash
                 folds the local part's case (shared.pii.email_hash), so Ann@x and
                 ann@x are one contact, exactly as they are one suppression entry.
                 list_ids / subscribed_list_ids mirror `lists` so that
                 "member of" / "subscribed to" are multikey-index lookups.
  fields        {_id, account_id, key, label, type, choices, searchable, search_seat}
                 A searchable field's values are indexed, `(account_id,
                 fields.<key>, _id)`: one index per key, shared by the accounts
                 whose field of that key is searchable (field_index).
                 `search_seat` counts the searchable ones (SEARCH_SEATS).
  suppressions  {_id, account_id (None: platform-wide), scope, email_hash, reason, ...}
                 Only the keyed hash of the address, never the address.
  suppression_log, consent: append-only.
  segments      {_id, account_id, name, definition}
  imports       see services/contacts/imports.py

Every method that reads account data takes the account id and filters by it.
"""
from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

from pymongo import ASCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError
from pymongo.operations import IndexModel

from services.contacts import domain
from services.contacts.segments import compile_condition, lists_reaching
from shared.mongo import IDS_PER_QUERY, ensure_indexes, id_batches, insert_new, is_duplicate_key

log = logging.getLogger(__name__)

PLATFORM = None  # account_id of platform-wide suppression entries
# MongoDB's error codes (FerretDB's too): an index that is not there, a
# build that a drop of the same index stopped, and a build refused (the
# collection's 64 indexes, or a clash with an index of the same name or keys).
INDEX_NOT_FOUND = 27
INDEX_BUILD_ABORTED = 276
INDEX_REFUSED = {67, 68, 85, 86}
# What a send job needs of a contact (services/contacts/fanout.send_job),
# and the hash the suppression re-check reads.
AUDIENCE_FIELDS = {"email": 1, "name": 1, "fields": 1, "email_hash": 1, "revision": 1,
                   "subscribed_list_ids": 1}  # a job's via_list_ids (fanout.via_lists)

SEAT_INDEX = IndexModel([("account_id", ASCENDING), ("search_seat", ASCENDING)], unique=True)
INDEXES = {
    "lists": [IndexModel([("account_id", ASCENDING), ("_id", ASCENDING)]),
              IndexModel([("account_id", ASCENDING), ("name", ASCENDING)], unique=True)],
    "contacts": [
        IndexModel([("account_id", ASCENDING), ("email_hash", ASCENDING)], unique=True),
        IndexModel([("account_id", ASCENDING), ("email", ASCENDING)]),      # segments' email
        IndexModel([("account_id", ASCENDING), ("email_key", ASCENDING)]),  # searches
        IndexModel([("email_hash", ASCENDING)]),
        IndexModel([("account_id", ASCENDING), ("_id", ASCENDING)]),
        IndexModel([("account_id", ASCENDING), ("subscribed_list_ids", ASCENDING), ("_id", ASCENDING)]),
        IndexModel([("account_id", ASCENDING), ("list_ids", ASCENDING), ("_id", ASCENDING)]),
        IndexModel([("account_id", ASCENDING), ("status", ASCENDING), ("_id", ASCENDING)]),
        IndexModel([("account_id", ASCENDING), ("name", ASCENDING)]),       # segments' name
        IndexModel([("account_id", ASCENDING), ("name_key", ASCENDING)]),   # searches
    ],
    "fields": [IndexModel([("account_id", ASCENDING), ("key", ASCENDING)], unique=True),
               IndexModel([("key", ASCENDING), ("searchable", ASCENDING)]),
               SEAT_INDEX],
    "suppressions": [IndexModel([("account_id", ASCENDING), ("email_hash", ASCENDING)], unique=True),
                     IndexModel([("email_hash", ASCENDING)])],
    "suppression_log": [IndexModel([("account_id", ASCENDING), ("email_hash", ASCENDING)])],
    "consent": [IndexModel([("account_id", ASCENDING), ("contact_ids", ASCENDING), ("_id", ASCENDING)])],
    "segments": [IndexModel([("account_id", ASCENDING), ("_id", ASCENDING)])],
    "imports": [IndexModel([("account_id", ASCENDING), ("_id", ASCENDING)]),
                IndexModel([("status", ASCENDING), ("lease_until", ASCENDING)])],
}


def is_ferretdb(db: Database) -> bool:
    return "ferretdbVersion" in db.client.admin.command("buildInfo")


# The indexes the local FerretDB reads a prefix search through (its patch
# 10). Both cost the import: bench/import, 200,000 rows, against a bare
# insert_many, 0.63-0.69 without either, 0.54-0.59 with both, until
# FerretDB's writes took turns (patch 11) and the import kept three inserts
# in flight: 0.63-0.68 with both, where issue 3 asks for 0.6.
SEARCH_KEY_INDEXES_ON_FERRETDB = ("account_id_1_email_key_1", "account_id_1_name_key_1")


FIELD_INDEX_NAME = re.compile(r"account_id_1_fields\.([a-z][a-z0-9_]*)_1__id_1")  # field_index's


def field_index(key: str) -> IndexModel:
    """The index a search of a searchable custom field's value reads through
    (GET /contacts?field=&value=, a segment's equality on the field). The
    local FerretDB reads an equality on a nested field through it, at the
    top level or in a top-level $and (devstack/ferretdb_patches.py, patch
    12), not in the $or of a campaign's audience."""
    return IndexModel([("account_id", ASCENDING), (f"fields.{key}", ASCENDING), ("_id", ASCENDING)],
                      name=f"account_id_1_fields.{key}_1__id_1")


def ensure_contacts_indexes(db: Database) -> None:
    """All the indexes on MongoDB. On FerretDB 1.x (the local stack) only the
    unique ones and the search keys': its SQLite backend answers the other
    queries by scanning whatever the indexes (measured: an equality find on
    an indexed field costs the same as on an unindexed one), so those
    secondary indexes would only make every write slower (an import ran at a
    third of the speed); a prefix search of the email or the name reads
    through its key's (devstack/ferretdb_patches.py, patch 10). On both,
    every searchable field's (field_index)."""
    seat_unseated_fields(db)  # before the seats' unique index is built below
    if is_ferretdb(db):
        ensure_indexes(db, {name: [m for m in models if m.document.get("unique")
                                   or m.document["name"] in SEARCH_KEY_INDEXES_ON_FERRETDB]
                            for name, models in INDEXES.items()})
    else:
        ensure_indexes(db, INDEXES)
    # what a stop, or a failure after the field was written, left undone:
    # a searchable field's index built, an index no field searches dropped
    searchable = db["fields"].distinct("key", {"searchable": True})
    ensure_indexes(db, {"contacts": [field_index(key) for key in sorted(searchable)]})
    store = ContactsStore(db)
    for name in db["contacts"].index_information():
        key = FIELD_INDEX_NAME.fullmatch(name)
        if key and key[1] not in searchable:
            store.unindex_field(key[1])


class SeatsTaken(Exception):
    """Every one of the account's searchable seats is taken (SEARCH_SEATS)."""


# SEARCH_SEATS. An account's searchable fields are at most
# domain.MAX_SEARCHABLE_FIELDS, to the unit, whatever requests run at once:
# a searchable field holds a seat, `search_seat` 0, 1, ... of its account,
# which a unique index of (account_id, search_seat) gives to one field only;
# any other field's seat is its own id. The flag and the seat are one write,
# so a crash cannot leave a seat taken by a field that does not search.
SEATS = range(domain.MAX_SEARCHABLE_FIELDS)


def seat_unseated_fields(db: Database) -> None:
    """Fields written before seats: each one gets its own id as its seat
    (before the unique index, which two seatless fields of one account would
    break), then every searchable one a numbered seat while one is free.
    Searchable fields past the limit, from before it was enforced, stay
    searchable on their own id. Idempotent; run at each start."""
    fields = db["fields"]
    for doc in fields.find({"search_seat": {"$exists": False}}, {"_id": 1}):
        fields.update_one({"_id": doc["_id"], "search_seat": {"$exists": False}},
                          {"$set": {"search_seat": doc["_id"]}})
    ensure_indexes(db, {"fields": [SEAT_INDEX]})
    for doc in fields.find({"searchable": True}, {"account_id": 1, "search_seat": 1}):
        if doc.get("search_seat") == doc["_id"]:
            try:
                _take_seat(fields, {"_id": doc["_id"], "search_seat": doc["_id"]}, {})
            except SeatsTaken:
                pass  # past the limit: searchable on its own id, as it was


def _take_seat(fields, query: dict, changes: dict) -> dict | None:
    """The field `query` finds, updated with `changes`, searchable, on the
    first free seat of its account; None if `query` finds none. SeatsTaken
    when every seat is taken."""
    for seat in SEATS:
        try:
            return fields.find_one_and_update(
                query, {"$set": {**changes, "searchable": True, "search_seat": seat}},
                return_document=ReturnDocument.AFTER)
        except OperationFailure as exc:  # DuplicateKeyError, or FerretDB's way of saying it
            if not is_duplicate_key(exc):
                raise
    raise SeatsTaken()


class Conflict(Exception):
    """A unique index refused the write; `field` is what the client sent
    that clashes (named in the 409, as a 400 names its field)."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


class IndexRefused(Exception):
    """The database would not build an index (MongoDB keeps at most 64 on a
    collection); the message is the server's."""


class ContactsStore:
    def __init__(self, db: Database, salt: str | None = None):
        self.db = db
        self.salt = salt  # the address hash's key: a segment's `email` conditions need it
        self.lists = db["lists"]
        self.contacts = db["contacts"]
        self.deleted_contacts = db["deleted_contacts"]
        self.fields = db["fields"]
        self.suppressions = db["suppressions"]
        self.suppression_log = db["suppression_log"]
        self.consent = db["consent"]
        self.segments = db["segments"]
        self.imports = db["imports"]
        self.import_claims = db["import_claims"]  # one marker per (import, attempt)

    # -- generic paging ----------------------------------------------------
    @staticmethod
    def _page(collection, query: dict, after: str | None, limit: int,
              projection: dict | None = None) -> list[dict]:
        if after:
            query = {**query, "_id": {"$gt": after}}
        return list(collection.find(query, projection).sort("_id", ASCENDING).limit(limit + 1))

    # -- lists -------------------------------------------------------------
    def insert_list(self, doc: dict) -> dict:
        try:
            self.lists.insert_one(doc)
        except DuplicateKeyError:
            raise Conflict("a list with this name exists", "name") from None
        return doc

    def get_list(self, account_id: str, list_id: str) -> dict | None:
        return self.lists.find_one({"_id": list_id, "account_id": account_id})

    def page_lists(self, account_id: str, after: str | None, limit: int) -> list[dict]:
        return self._page(self.lists, {"account_id": account_id}, after, limit)

    def update_list(self, account_id: str, list_id: str, changes: dict) -> dict | None:
        try:
            return self.lists.find_one_and_update({"_id": list_id, "account_id": account_id},
                                                  {"$set": changes},
                                                  return_document=ReturnDocument.AFTER)
        except PyMongoError as exc:
            if is_duplicate_key(exc):
                raise Conflict("a list with this name exists", "name") from None
            raise

    def delete_list(self, account_id: str, list_id: str) -> bool:
        """Remove the list and every membership of it; contacts stay."""
        if self.lists.delete_one({"_id": list_id, "account_id": account_id}).deleted_count == 0:
            return False
        self.drop_memberships(account_id, list_id)
        return True

    def drop_memberships(self, account_id: str, list_id: str) -> None:
        """Every contact's membership of a list that is gone."""
        self.contacts.update_many({"account_id": account_id, "list_ids": list_id},
                                  {"$unset": {f"lists.{list_id}": ""},
                                   "$pull": {"list_ids": list_id, "subscribed_list_ids": list_id}})

    def list_ids(self, account_id: str) -> set[str]:
        return {d["_id"] for d in self.lists.find({"account_id": account_id}, {"_id": 1})}

    def count_members(self, account_id: str, list_id: str) -> dict[str, int]:
        """Members by status, counted by the database (one $group), so a
        million members never travel to Python."""
        counts = dict.fromkeys(domain.MEMBER_STATUSES, 0)
        by_status = self.contacts.aggregate([
            {"$match": {"account_id": account_id, "list_ids": list_id}},
            {"$group": {"_id": f"$lists.{list_id}.status", "n": {"$sum": 1}}}])  # 32 hex digits
        for group in by_status:
            if group["_id"] in counts:
                counts[group["_id"]] = group["n"]
        counts["total"] = sum(counts.values())
        return counts

    # -- custom fields -----------------------------------------------------
    def field_definitions(self, account_id: str) -> dict[str, dict]:
        return {d["key"]: d for d in self.fields.find({"account_id": account_id})}

    def insert_field(self, doc: dict) -> dict:
        """Inserted with its seat (SEARCH_SEATS): Conflict when the account
        has a field of that key, SeatsTaken when it is to be searchable and
        the account's seats are taken."""
        seats = SEATS if doc.get("searchable") else [doc["_id"]]
        for seat in seats:
            try:
                self.fields.insert_one({**doc, "search_seat": seat})
                return doc
            except DuplicateKeyError:
                if self.fields.find_one({"account_id": doc["account_id"], "key": doc["key"]},
                                        {"_id": 1}):
                    raise Conflict("a field with this key exists", "key") from None
        raise SeatsTaken()

    def get_field(self, account_id: str, field_id: str) -> dict | None:
        return self.fields.find_one({"_id": field_id, "account_id": account_id})

    def page_fields(self, account_id: str, after: str | None, limit: int) -> list[dict]:
        return self._page(self.fields, {"account_id": account_id}, after, limit)

    def update_field(self, account_id: str, field_id: str, changes: dict) -> dict | None:
        """None if there is no such field. A field made searchable takes a
        seat (SeatsTaken when there is none); made unsearchable, it leaves it."""
        query = {"_id": field_id, "account_id": account_id}
        if changes.get("searchable"):
            seated = self.fields.find_one_and_update(
                {**query, "searchable": True}, {"$set": changes},
                return_document=ReturnDocument.AFTER)  # searchable already: its seat stays
            return seated or _take_seat(self.fields, query, changes)
        if changes.get("searchable") is False:
            changes = {**changes, "search_seat": field_id}
        return self.fields.find_one_and_update(query, {"$set": changes},
                                               return_document=ReturnDocument.AFTER)

    def index_field(self, key: str, attempts: int = 3) -> None:
        """Build the key's index (field_index), if it is not there yet. The
        field's `searchable` is written first (see unindex_field). On MongoDB
        a drop of the index stops a build in progress: the build is started
        again, since the drop's own check then finds the field searchable."""
        for attempt in range(attempts):
            try:
                self.contacts.create_indexes([field_index(key)])
                return
            except OperationFailure as exc:
                if exc.code in INDEX_REFUSED:
                    raise IndexRefused((exc.details or {}).get("errmsg") or str(exc)) from None
                if exc.code != INDEX_BUILD_ABORTED or attempt == attempts - 1:
                    raise

    def unindex_field(self, key: str) -> None:
        """Drop the key's index once no account's field of that key is
        searchable. The check is made again after the drop: a field made
        searchable meanwhile wrote its flag before building the index, so
        either that check sees the flag and builds the index again, or the
        field's own build comes after the drop.

        Called once the field's change is written: a failure here is logged,
        not raised, and the service's start (ensure_contacts_indexes) puts
        the index right."""
        try:
            if self._searched(key):
                return
            try:
                self.contacts.drop_index(field_index(key).document["name"])
            except OperationFailure as exc:
                if exc.code != INDEX_NOT_FOUND:
                    raise
            if self._searched(key):
                self.index_field(key)
        except (PyMongoError, IndexRefused) as exc:
            log.warning("custom field index %s left for the next start: %s", key, exc)

    def _searched(self, key: str) -> bool:
        """Whether any account's field of that key is searchable."""
        return self.fields.find_one({"key": key, "searchable": True}, {"_id": 1}) is not None

    def remove_field_definition(self, account_id: str, field_id: str) -> None:
        """The field's document only: the values contacts were given while
        it existed stay (delete_field removes those too)."""
        self.fields.delete_one({"_id": field_id, "account_id": account_id})

    def delete_field(self, account_id: str, field_id: str) -> dict | None:
        doc = self.fields.find_one_and_delete({"_id": field_id, "account_id": account_id})
        if doc:
            self.contacts.update_many({"account_id": account_id, f"fields.{doc['key']}": {"$exists": True}},
                                      {"$unset": {f"fields.{doc['key']}": ""}})
        return doc

    # -- contacts ----------------------------------------------------------
    def insert_contact(self, doc: dict) -> dict:
        try:
            self.contacts.insert_one(doc)
        except DuplicateKeyError:
            raise Conflict("a contact with this address exists", "email") from None
        return doc

    def get_contact(self, account_id: str, contact_id: str) -> dict | None:
        return self.contacts.find_one({"_id": contact_id, "account_id": account_id})

    def contact_by_hash(self, account_id: str, hash_: str) -> dict | None:
        return self.contacts.find_one({"account_id": account_id, "email_hash": hash_})

    def contacts_by_hashes(self, account_id: str, hashes: list[str],
                           projection: dict | None = None) -> dict[str, dict]:
        if not hashes:
            return {}
        return {d["email_hash"]: d for d in self.contacts.find(
            {"account_id": account_id, "email_hash": {"$in": hashes}}, projection)}

    def update_contact(self, account_id: str, contact_id: str, update: dict) -> dict | None:
        try:
            return self.contacts.find_one_and_update({"_id": contact_id, "account_id": account_id},
                                                     update, return_document=ReturnDocument.AFTER)
        except PyMongoError as exc:  # the unique (account, email hash) index
            if is_duplicate_key(exc):
                raise Conflict("a contact with this address exists", "email") from None
            raise

    def delete_contact(self, account_id: str, contact_id: str) -> dict | None:
        return self.contacts.find_one_and_delete({"_id": contact_id, "account_id": account_id})

    # -- contacts deleted through the API ------------------------------------
    # Mail the person still has names the deleted id: a complaint, an
    # unsubscribe or a bounce about it, and a rights request by address,
    # must still find the address (as its hash) and the consent entries.
    def remember_deleted(self, contact: dict) -> None:
        self.deleted_contacts.replace_one(
            {"_id": contact["_id"]},
            {"account_id": contact["account_id"], "email_hash": contact["email_hash"],
             "deleted_at": datetime.now(timezone.utc)}, upsert=True)

    def deleted_contact(self, account_id: str, contact_id: str) -> dict | None:
        return self.deleted_contacts.find_one({"_id": contact_id, "account_id": account_id})

    def deleted_contacts_of(self, account_id: str, subject: dict) -> list[dict]:
        """The account's deleted contacts a privacy request's subject names."""
        if subject.get("contact_id"):
            found = self.deleted_contact(account_id, subject["contact_id"])
            return [found] if found else []
        if subject.get("email_hash"):
            return list(self.deleted_contacts.find({"account_id": account_id,
                                                    "email_hash": subject["email_hash"]}))
        return []

    def forget_deleted(self, contact_ids: list[str]) -> None:
        self.deleted_contacts.delete_many({"_id": {"$in": contact_ids}})

    def search_contacts(self, account_id: str, query: dict, after: str | None,
                        limit: int) -> list[dict]:
        """`query` was built by the use case from validated arguments only."""
        return self._page(self.contacts, {**query, "account_id": account_id}, after, limit)

    def find_contacts(self, account_id: str, query: dict, after: str | None = None,
                      batch_size: int = 1000) -> Iterator[list[dict]]:
        """Every contact matching `query`, in _id order, one batch at a time
        (each batch is its own query: no cursor is held open between them)."""
        while True:
            batch = self._page(self.contacts, {**query, "account_id": account_id}, after,
                               batch_size - 1)
            if not batch:
                return
            yield batch
            if len(batch) < batch_size:
                return
            after = batch[-1]["_id"]

    def contact_ids(self, account_id: str, batch_size: int = 1000) -> Iterator[list[str]]:
        """The ids of every contact of the account, a batch at a time, from
        one query (find_contacts' pages are a query each)."""
        return id_batches(self.contacts, {"account_id": account_id}, batch_size)

    def count_contacts(self, account_id: str, query: dict | None = None) -> int:
        return self.contacts.count_documents({**(query or {}), "account_id": account_id})

    def set_status_by_id(self, contact_id: str, status: str, at: datetime) -> dict | None:
        """Global status from a platform event (ids only, any account)."""
        return self.contacts.find_one_and_update(
            {"_id": contact_id}, {"$set": {"status": status, "updated_at": at}},
            return_document=ReturnDocument.BEFORE)

    def mark_suppressed(self, account_id: str | None, hash_: str, suppressed: bool) -> None:
        """Keep the contacts' `suppressed` flag in step with the list; the
        audience re-checks the list anyway (see stream_audience)."""
        query: dict = {"email_hash": hash_}
        if account_id is not PLATFORM:
            query["account_id"] = account_id
        self.contacts.update_many(query, {"$set": {"suppressed": suppressed}})

    # -- suppression -------------------------------------------------------
    def add_suppression(self, doc: dict) -> bool:
        """True when the entry is new (idempotent on (account, hash)). An
        entry whose lift was begun and not finished stays, and the lift is
        called off: the address was suppressed again since."""
        try:
            self.suppressions.insert_one(doc)
        except DuplicateKeyError:
            self.suppressions.update_one({"account_id": doc["account_id"],
                                          "email_hash": doc["email_hash"],
                                          "lifting": {"$exists": True}},
                                         {"$unset": {"lifting": ""}})
            return False
        return True

    def note_erasure(self, account_id: str, hash_: str) -> None:
        """Remember on the platform-wide entry which accounts erased this
        address (ids only): those never store it again."""
        self.suppressions.update_one({"account_id": PLATFORM, "email_hash": hash_},
                                     {"$addToSet": {"erased_in": account_id}})

    def erased_in_account(self, account_id: str, hashes: set[str]) -> set[str]:
        """Those of these address hashes the account has erased (note_erasure,
        or its own entry for an address it never held)."""
        if not hashes:
            return set()
        found: set[str] = set()
        ordered = sorted(hashes)
        for start in range(0, len(ordered), IDS_PER_QUERY):
            part = {"$in": ordered[start:start + IDS_PER_QUERY]}
            found.update(entry["email_hash"] for entry in self.suppressions.find(
                {"email_hash": part, "$or": [
                    {"account_id": PLATFORM, "erased_in": account_id},
                    {"account_id": account_id, "erased": True}]},  # never held: see _erase
                {"email_hash": 1}))
        return found

    def erased_platform_wide_by(self, account_id: str, hash_: str) -> bool:
        """The account erased the address as one it held (note_erasure)."""
        return self.suppressions.count_documents(
            {"account_id": PLATFORM, "email_hash": hash_, "erased_in": account_id}, limit=1) > 0

    def mark_erased_in_account(self, account_id: str, hash_: str) -> None:
        """The account's own entry for an address it erased without holding
        it (or a contact's former one): never lifted, never stored again.
        A mark, not the reason: an entry it had already (manual, an
        unsubscribe) keeps its reason and stopped being liftable all the same."""
        self.suppressions.update_one({"account_id": account_id, "email_hash": hash_},
                                     {"$set": {"erased": True}, "$unset": {"lifting": ""}})

    def begin_lift(self, account_id: str, hash_: str, lift: dict) -> dict | None:
        """The account's entry for the address, marked `lifting`; the entry
        keeps suppressing until end_lift. A lift begun before and not
        finished keeps its own mark (its reason, actor, time and log id)."""
        self.suppressions.update_one({"account_id": account_id, "email_hash": hash_,
                                      "lifting": {"$exists": False}, "erased": {"$ne": True}},
                                     {"$set": {"lifting": lift}})
        # None for an entry an erasure marked, though checked before: one
        # that came since is never lifted (mark_erased_in_account ends a lift).
        return self.suppressions.find_one({"account_id": account_id, "email_hash": hash_,
                                           "lifting": {"$exists": True}})

    def end_lift(self, entry: dict) -> None:
        """The entry goes, unless it was suppressed again since the lift began."""
        self.suppressions.delete_one({"_id": entry["_id"], "lifting.id": entry["lifting"]["id"],
                                      "erased": {"$ne": True}})

    def suppression_entries(self, account_id: str, hashes: Iterable[str]) -> list[dict]:
        """Entries of this account and platform-wide ones for these hashes."""
        hashes = list(hashes)
        if not hashes:
            return []
        return list(self.suppressions.find({"email_hash": {"$in": hashes},
                                            "account_id": {"$in": [account_id, PLATFORM]}}))

    def page_suppressions(self, account_id: str, after: str | None, limit: int) -> list[dict]:
        return self._page(self.suppressions, {"account_id": account_id}, after, limit)

    def log_suppression(self, doc: dict) -> None:
        """Once per _id: a retried lift logs the lift its first try began."""
        insert_new(self.suppression_log, [doc])

    # -- consent log (append-only: nothing here updates or deletes) --------
    def append_consent(self, doc: dict) -> None:
        self.consent.insert_one(doc)

    def page_consent(self, account_id: str, contact_id: str, after: str | None,
                     limit: int) -> list[dict]:
        return self._page(self.consent, {"account_id": account_id, "contact_ids": contact_id},
                          after, limit)

    # -- segments ----------------------------------------------------------
    def insert_segment(self, doc: dict) -> dict:
        self.segments.insert_one(doc)
        return doc

    def get_segment(self, account_id: str, segment_id: str) -> dict | None:
        return self.segments.find_one({"_id": segment_id, "account_id": account_id})

    def page_segments(self, account_id: str, after: str | None, limit: int) -> list[dict]:
        return self._page(self.segments, {"account_id": account_id}, after, limit)

    def update_segment(self, account_id: str, segment_id: str, changes: dict) -> dict | None:
        return self.segments.find_one_and_update({"_id": segment_id, "account_id": account_id},
                                                 {"$set": changes}, return_document=ReturnDocument.AFTER)

    def delete_segment(self, account_id: str, segment_id: str) -> bool:
        return self.segments.delete_one({"_id": segment_id, "account_id": account_id}).deleted_count == 1

    def compile_segment(self, account_id: str, segment_id: str, now: datetime | None = None) -> dict:
        """The MongoDB filter of a saved segment as a campaign's audience
        (account id included), or LookupError when the account has no such
        segment. The definition is compiled afresh: a custom field or list
        deleted since it was saved makes it invalid (SegmentError) rather
        than silently broader."""
        segment = self.get_segment(account_id, segment_id)
        if segment is None:
            raise LookupError("segment not found")
        return self.compile_definition(account_id, segment["definition"], now=now or domain.now(),
                                       salt=self.salt, audience=True)

    def segment_lists(self, account_id: str, segment_id: str) -> list[str]:
        """The lists a campaign to the saved segment reaches its contacts
        through (segments.lists_reaching); none for a segment gone."""
        segment = self.get_segment(account_id, segment_id)
        return sorted(lists_reaching(segment["definition"])) if segment else []

    def compile_definition(self, account_id: str, definition, *, now: datetime,
                           salt: str | None, audience: bool) -> dict:
        """A segment definition's MongoDB filter for this account, checked
        against its fields and lists (SegmentError if it does not compile).
        `salt` keys the address hashes of `email` conditions; `audience`
        as segments.compile_condition has it."""
        by_hash = (lambda text: domain.address_hash(text, salt)) if salt else None
        condition = compile_condition(definition, self.field_definitions(account_id),
                                      list_ids=self.list_ids(account_id), now=now,
                                      address_hash=by_hash, audience=audience)
        return {"$and": [{"account_id": account_id}, condition]}

    # -- the campaign audience ---------------------------------------------
    def audience_filter(self, account_id: str, list_ids: list[str],
                        segment_filter: dict | None) -> dict:
        """Who may be mailed: active, not flagged suppressed, and subscribed to
        one of `list_ids` or (if given) matching `segment_filter` while
        subscribed to at least one list of the account (a segment never reaches
        someone who is subscribed nowhere)."""
        reach = []
        if list_ids:
            reach.append({"subscribed_list_ids": {"$in": list(list_ids)}})
        if segment_filter:
            reach.append({"$and": [segment_filter, {"subscribed_list_ids": {"$ne": []}}]})
        if not reach:
            raise ValueError("an audience needs list ids or a segment filter")
        return {"account_id": account_id, "status": "active", "suppressed": {"$ne": True},
                "$or": reach}

    def stream_audience(self, account_id: str, list_ids: list[str], segment_filter: dict | None,
                        batch_size: int = 1000) -> Iterator[list[dict]]:
        """Yield batches (lists) of contact documents of a campaign audience,
        in the database's own order.

        A contact is in the audience when its global status is active, it is
        subscribed to any of `list_ids` or matches `segment_filter` (from
        `compile_segment`) while subscribed to some list, and its address is
        not on the account's or the platform's suppression list. Addresses
        are unique per account, so the audience is deduplicated by address.

        One query, its cursor read `batch_size` at a time, and no sort: on
        the local FerretDB it reads the account's contacts once, through the
        `(account_id, ...)` index, and decodes each of them (~0.07 ms of its
        CPU a contact), with the first batch after 0.1 s and the reading
        spread over the stream (pages, each its own query, would each walk
        the `_id` index past the contacts that are not in the audience,
        decoding those of the account). So there is no order to
        resume from: the fan-out records the ids it has produced and skips
        them (services/contacts/fanout.py). A cursor lost on the way raises
        CursorNotFound for the same reason. Only AUDIENCE_FIELDS come back:
        FerretDB spent a fifth of its reading time encoding the rest (3.0 s
        of CPU for 20,000 contacts, 2.4 s).

        Each batch's hashes are re-checked against the suppression
        collection, so an address suppressed a moment ago is left out even
        if its contact's flag is not yet set; a batch may hold fewer than
        `batch_size` contacts (suppressed ones removed).
        """
        query = self.audience_filter(account_id, list_ids, segment_filter)
        cursor = self.contacts.find(query, AUDIENCE_FIELDS).batch_size(batch_size)
        batch: list[dict] = []
        try:
            for contact in cursor:
                batch.append(contact)
                if len(batch) == batch_size:
                    yield self._not_suppressed(account_id, batch)
                    batch = []
        finally:
            cursor.close()
        if batch:
            yield self._not_suppressed(account_id, batch)

    def _not_suppressed(self, account_id: str, batch: list[dict]) -> list[dict]:
        suppressed = {e["email_hash"] for e in
                      self.suppression_entries(account_id, {c["email_hash"] for c in batch})}
        return [c for c in batch if c["email_hash"] not in suppressed]

    # -- usage -------------------------------------------------------------
    def usage(self, account_id: str) -> dict[str, int]:
        return {"lists": self.lists.count_documents({"account_id": account_id}),
                "contacts": self.contacts.count_documents({"account_id": account_id})}


def contact_document(account_id: str, addr: domain.Address, *, name: str | None, fields: dict,
                     at: datetime, origin: dict[str, Any], suppressed: bool = False) -> dict:
    return {"_id": domain.new_id(), "account_id": account_id, "email": addr.email,
            "email_hash": addr.hash, "name": name, **domain.search_keys(addr.email, name),
            "fields": fields, "status": "active",
            "suppressed": suppressed, "lists": {}, "list_ids": [], "subscribed_list_ids": [],
            "origin": origin, "created_at": at, "updated_at": at}
