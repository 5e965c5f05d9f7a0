"""MongoDB: one client per process, created on first use (never at import,
and anew after a fork), and indexes ensured at start-up.

The local stack runs FerretDB 1.24 (SQLite backend); the code uses plain
pymongo and only what FerretDB supports: no TTL or partial indexes, no
$lookup/$facet, no change streams, no multi-document transactions. Where a
service needs atomicity it uses single-document updates and unique indexes.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator, TypeVar

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import (AutoReconnect, BulkWriteError, ConnectionFailure, DuplicateKeyError,
                            OperationFailure, PyMongoError, ServerSelectionTimeoutError)
from pymongo.operations import IndexModel

T = TypeVar("T")
_lock = threading.Lock()
_client: MongoClient | None = None
_client_pid: int | None = None
_client_uri: str | None = None


def client(uri: str) -> MongoClient:
    global _client, _client_pid, _client_uri
    with _lock:
        if _client is None or _client_pid != os.getpid() or _client_uri != uri:
            _client = MongoClient(uri, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000,
                                  retryWrites=False, tz_aware=True, appname="sandesh")
            _client_pid = os.getpid()
            _client_uri = uri
        return _client


def database(uri: str, name: str) -> Database:
    return client(uri)[name]


def ensure_indexes(db: Database, indexes: dict[str, list[IndexModel]],
                   wait_seconds: float = 60.0) -> None:
    """Create the declared indexes (idempotent: existing ones are left alone).

    Runs at start-up, when the database may still be coming up (a whole stack
    starting at once, a pod before its database): connection failures are
    retried until `wait_seconds` have passed, then raised."""
    def create():
        for collection, models in indexes.items():
            # One at a time: FerretDB 1.24 drops the connection ("slice
            # bounds out of range") when several already-existing indexes
            # are created in one createIndexes command.
            for model in models:
                db[collection].create_indexes([model])

    retry_unreachable(create, wait_seconds, first_pause=0.5, max_pause=5.0,
                      errors=(AutoReconnect, ServerSelectionTimeoutError))


def retry_unreachable(action: Callable[[], T], patience: float, *, first_pause: float = 0.25,
                      max_pause: float = 2.0,
                      errors: tuple[type[Exception], ...] = (ConnectionFailure,)) -> T:
    """action(), tried again while the server cannot be reached (pauses
    doubling from `first_pause` to `max_pause`) until `patience` seconds
    have passed; then the last error is raised. Only for idempotent work."""
    deadline, pause = time.monotonic() + patience, first_pause
    while True:
        try:
            return action()
        except errors:
            if time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(2 * pause, max_pause)


def ping(uri: str) -> None:
    client(uri).admin.command("ping")


# FerretDB 1.24 deletes the documents a filter matched with one SQL statement
# naming each of them, and fails past SQLite's ~32,766 variables ("too many
# SQL variables"): an account or a retention round with more documents than
# that could never be deleted. Each chunk is another read of the whole
# collection there, so chunks are as large as that limit allows.
DELETE_CHUNK = 32_000


def delete_all(collection: Collection, query: dict, chunk: int = DELETE_CHUNK) -> int:
    """delete_many that works however many documents match: one delete when
    the server takes it, else the ids are read with one cursor and deleted
    `chunk` at a time (every delete is a read of the whole collection on
    FerretDB, so the chunked way is kept for when it is needed). Returns how
    many were deleted."""
    try:
        return collection.delete_many(query).deleted_count
    except OperationFailure as exc:
        if "too many SQL variables" not in str(exc):
            raise
    return sum(collection.delete_many({"_id": {"$in": ids}}).deleted_count
               for ids in id_batches(collection, query, chunk))


def id_batches(collection: Collection, query: dict, size: int) -> Iterator[list]:
    """The _ids of the matching documents, `size` at a time, from one cursor:
    a single read of the collection (on FerretDB every query without an _id
    condition reads the whole of it, so a query per batch reads it per batch)."""
    batch: list = []
    for doc in collection.find(query, {"_id": 1}).batch_size(size):
        batch.append(doc["_id"])
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# The local FerretDB looks up an `_id` $in of up to 10,000 values through the
# `_id` index (devstack/ferretdb_patches.py) and reads the whole collection for
# a longer one, so longer lists are looked up 1,000 at a time.
IDS_PER_QUERY = 1_000


def find_by_ids(collection: Collection, ids: Iterable) -> dict:
    """The documents with these _ids, by _id (the missing ones left out)."""
    ids = list(dict.fromkeys(ids))
    found: dict = {}
    for start in range(0, len(ids), IDS_PER_QUERY):
        for doc in collection.find({"_id": {"$in": ids[start:start + IDS_PER_QUERY]}}):
            found[doc["_id"]] = doc
    return found


DUPLICATE_KEY = 11000


def is_duplicate_key(exc: BaseException) -> bool:
    """A write refused by a unique index. MongoDB says so with code 11000
    (DuplicateKeyError) for every write; FerretDB 1.24 only for inserts and
    upserts: an update or findAndModify that would break a unique index
    fails with code 1 and SQLite's "UNIQUE constraint failed", which a bare
    `except DuplicateKeyError` let through as a 500."""
    if isinstance(exc, DuplicateKeyError) or getattr(exc, "code", None) == DUPLICATE_KEY:
        return True
    return isinstance(exc, OperationFailure) and "UNIQUE constraint failed" in str(exc)


class WriteRefused(PyMongoError):
    """A bulk write the server refused, told by its error codes and indexes
    alone: pymongo's BulkWriteError carries every failed document (a
    contact's name and fields), and an error's text reaches the logs."""

    def __init__(self, exc: BulkWriteError):
        errors = exc.details.get("writeErrors", [])
        listed = ", ".join(f"#{e.get('index')} code {e.get('code')}" for e in errors[:20])
        more = f" and {len(errors) - 20} more" if len(errors) > 20 else ""
        concern = len(exc.details.get("writeConcernErrors", []))
        super().__init__(f"{len(errors)} write(s) refused ({listed}{more}); "
                         f"{concern} write concern error(s)")
        self.codes = [e.get("code") for e in errors]


@contextmanager
def documents_kept_out_of_errors() -> Iterator[None]:
    """Raise a bulk write's failure as WriteRefused, without its documents."""
    try:
        yield
    except BulkWriteError as exc:
        raise WriteRefused(exc) from None


def insert_new(collection: Collection, docs: list[dict]) -> list[bool]:
    """Insert documents in one unordered command; True for each one that
    was new, False for one that clashed with a unique key (its _id, or a
    unique index: "done once", "exists already"). Any error but a duplicate
    key is raised. On FerretDB one insert_many of a few hundred documents
    costs about what two insert_one calls do (~1 ms each), so per-event
    markers are written a batch at a time."""
    if not docs:
        return []
    try:
        collection.insert_many(docs, ordered=False)
        return [True] * len(docs)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if not errors or any(error.get("code") != DUPLICATE_KEY for error in errors):
            raise WriteRefused(exc) from None
        seen = {error["index"] for error in errors}
        return [index not in seen for index in range(len(docs))]


def as_utc(when: datetime) -> datetime:
    """UTC-aware: MongoDB gives datetimes back without a zone."""
    return when.astimezone(timezone.utc) if when.tzinfo else when.replace(tzinfo=timezone.utc)
