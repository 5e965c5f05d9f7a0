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

from pymongo import MongoClient
from pymongo.database import Database
from pymongo.operations import IndexModel

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


def ensure_indexes(db: Database, indexes: dict[str, list[IndexModel]]) -> None:
    """Create the declared indexes (idempotent: existing ones are left alone)."""
    for collection, models in indexes.items():
        if models:
            db[collection].create_indexes(models)


def ping(uri: str) -> None:
    client(uri).admin.command("ping")
