"""The little of MongoDB that the sender's stores use (DeliveryStore,
ParkedJobs, HeldJobs), in memory, for the send loop's fuzz world: unique
_ids; filters of equality, $in, $nin, $ne, $exists, $lt, $lte, $or on
dotted paths; updates of $set, $unset, $rename, $inc, $setOnInsert.

Each operation is a point (`on_point(name)`): before it (`claims.find`),
and after it, applied but its answer not back yet (`claims.find>`). A
point may raise (a failure, a death) or let other work run. MongoDB's
single-document writes are atomic. With `ferretdb`, as FerretDB 1.24
does them, an update or a delete reads the documents its filter matches,
then writes (or deletes) each whole by _id: a point between the two
(`claims.update_one~`) lets another write come in between, which the
update overwrites, or the delete deletes though it no longer matches
(store.py: "a conditional update is no compare-and-set").
"""
from __future__ import annotations

import copy
from typing import Any, Callable

from pymongo.errors import BulkWriteError, DuplicateKeyError

DUPLICATE_KEY = 11000
MISSING = object()


class Collections(dict):
    """The database's documents: collection name -> {_id: document}."""

    def __missing__(self, name):
        self[name] = {}
        return self[name]


class Database:
    """One client's view of the shared documents: each of its operations
    is reported to `on_point` (None: nothing is)."""

    def __init__(self, docs: Collections, on_point: Callable[[str], None] | None = None,
                 ferretdb: bool = False):
        self.docs, self.on_point, self.ferretdb = docs, on_point, ferretdb

    def __getitem__(self, name) -> "Collection":
        return Collection(self, name)


class Result:
    def __init__(self, matched=0, deleted=0):
        self.matched_count = self.modified_count = matched
        self.deleted_count = deleted


class Cursor(list):
    def limit(self, n):
        return Cursor(self[:n] if n else self)

    def batch_size(self, _n):
        return self


class Collection:
    def __init__(self, db: Database, name: str):
        self.db, self.name = db, name

    @property
    def docs(self) -> dict:
        return self.db.docs[self.name]

    def _point(self, op):
        if self.db.on_point:
            self.db.on_point(f"{self.name}.{op}")

    def _found(self, query) -> list[dict]:
        return [doc for doc in self.docs.values() if matches(doc, query)]

    # -- reads ---------------------------------------------------------------
    def find(self, query=None, projection=None):
        self._point("find")
        found = Cursor(copy.deepcopy(doc) for doc in self._found(query or {}))
        self._point("find>")
        return found

    def find_one(self, query=None):
        self._point("find_one")
        found = self._found(query or {})
        self._point("find_one>")
        return copy.deepcopy(found[0]) if found else None

    def count_documents(self, query, limit=0):
        self._point("count_documents")
        n = len(self._found(query))
        self._point("count_documents>")
        return min(n, limit) if limit else n

    def distinct(self, key):
        self._point("distinct")
        values = []
        for doc in self.docs.values():
            value = get_path(doc, key)
            if value is not MISSING and value not in values:
                values.append(value)
        self._point("distinct>")
        return values

    # -- writes --------------------------------------------------------------
    def insert_one(self, doc):
        self._point("insert_one")
        if doc["_id"] in self.docs:
            raise DuplicateKeyError(f"E11000 {self.name} {doc['_id']}", DUPLICATE_KEY)
        self.docs[doc["_id"]] = copy.deepcopy(doc)
        self._point("insert_one>")

    def insert_many(self, docs, ordered=True):
        self._point("insert_many")
        errors = []
        for index, doc in enumerate(docs):
            if doc["_id"] in self.docs:
                errors.append({"index": index, "code": DUPLICATE_KEY})
                if ordered:
                    break
            else:
                self.docs[doc["_id"]] = copy.deepcopy(doc)
        self._point("insert_many>")
        if errors:
            raise BulkWriteError({"writeErrors": errors, "writeConcernErrors": []})

    def update_one(self, query, update, upsert=False):
        return self._update(query, update, upsert, many=False, op="update_one")

    def update_many(self, query, update, upsert=False):
        return self._update(query, update, upsert, many=True, op="update_many")

    def _update(self, query, update, upsert, many, op):
        self._point(op)
        read = [copy.deepcopy(doc) for doc in self._found(query)]
        if not many:
            read = read[:1]
        if self.db.ferretdb:
            self._point(f"{op}~")  # read, then the whole document written
        for doc in read:
            if doc["_id"] in self.docs:
                self.docs[doc["_id"]] = apply(doc, update, inserting=False)
        if not read and upsert:
            base = {key: value for key, value in query.items()
                    if not key.startswith("$") and not isinstance(value, dict)}
            doc = apply(base, update, inserting=True)
            if doc["_id"] in self.docs:
                raise DuplicateKeyError(f"E11000 {self.name} {doc['_id']}", DUPLICATE_KEY)
            self.docs[doc["_id"]] = doc
        self._point(f"{op}>")
        return Result(matched=len(read))

    def replace_one(self, query, doc, upsert=False):
        self._point("replace_one")
        found = self._found(query)[:1]
        if found or upsert:
            key = found[0]["_id"] if found else doc.get("_id", query.get("_id"))
            self.docs[key] = copy.deepcopy({**doc, "_id": key})
        self._point("replace_one>")
        return Result(matched=len(found))

    def bulk_write(self, requests, ordered=True):
        self._point("bulk_write")
        for request in requests:  # pymongo's ReplaceOne: _filter, _doc, _upsert
            found = self._found(request._filter)[:1]
            if found or request._upsert:
                key = found[0]["_id"] if found else request._doc["_id"]
                self.docs[key] = copy.deepcopy(request._doc)
        self._point("bulk_write>")

    def delete_one(self, query):
        return self._delete(query, "delete_one", many=False)

    def delete_many(self, query):
        return self._delete(query, "delete_many", many=True)

    def _delete(self, query, op, many):
        self._point(op)
        ids = [doc["_id"] for doc in self._found(query)][:None if many else 1]
        if self.db.ferretdb:
            self._point(f"{op}~")  # read, then deleted by _id
        deleted = [key for key in ids if self.docs.pop(key, None) is not None]
        self._point(f"{op}>")
        return Result(deleted=len(deleted))


def get_path(doc, path):
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return MISSING
        doc = doc[part]
    return doc


def set_path(doc, path, value):
    *parents, last = path.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    doc[last] = value


def unset_path(doc, path):
    *parents, last = path.split(".")
    for part in parents:
        doc = doc.get(part)
        if not isinstance(doc, dict):
            return
    doc.pop(last, None)


def matches(doc, query) -> bool:
    for key, condition in query.items():
        if key == "$or":
            if not any(matches(doc, sub) for sub in condition):
                return False
            continue
        value = get_path(doc, key)
        if isinstance(condition, dict) and condition and all(k.startswith("$")
                                                             for k in condition):
            for op, operand in condition.items():
                if not _holds(op, value, operand):
                    return False
        elif value is MISSING or value != condition:
            return False
    return True


def _holds(op: str, value: Any, operand: Any) -> bool:
    if op == "$in":
        return value is not MISSING and value in operand
    if op == "$nin":
        return value is MISSING or value not in operand
    if op == "$ne":
        return value is MISSING or value != operand
    if op == "$exists":
        return (value is not MISSING) == bool(operand)
    if op == "$lt":
        return value is not MISSING and value < operand
    if op == "$lte":
        return value is not MISSING and value <= operand
    raise NotImplementedError(op)


def apply(doc: dict, update: dict, inserting: bool) -> dict:
    doc = copy.deepcopy(doc)
    for op, fields in update.items():
        if op == "$setOnInsert" and not inserting:
            continue
        for path, value in fields.items():
            if op in ("$set", "$setOnInsert"):
                set_path(doc, path, copy.deepcopy(value))
            elif op == "$unset":
                unset_path(doc, path)
            elif op == "$rename":
                moved = get_path(doc, path)
                if moved is not MISSING:
                    unset_path(doc, path)
                    set_path(doc, value, moved)
            elif op == "$inc":
                current = get_path(doc, path)
                set_path(doc, path, (0 if current is MISSING else current) + value)
            else:
                raise NotImplementedError(op)
    return doc
