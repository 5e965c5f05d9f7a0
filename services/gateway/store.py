"""The gateway's repository over its own MongoDB database."""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone

from pymongo import ASCENDING, IndexModel
from pymongo.database import Database

INDEXES = {
    "accounts": [],
    "api_keys": [IndexModel([("prefix", ASCENDING)], unique=True),
                 IndexModel([("account_id", ASCENDING), ("created_at", ASCENDING),
                             ("_id", ASCENDING)])],
}


def now() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex


_ID = re.compile(r"[0-9a-f]{32}")


def is_id(value: object) -> bool:
    """An id as new_id() makes it, and as every service makes its own
    (uuid4's 32 hex digits): anything else names nothing, unlooked-up."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


class LastKey(Exception):
    """The key is the account's last working one."""


class GatewayStore:
    def __init__(self, db: Database):
        self.db = db

    # accounts
    def create_account(self, name: str, postal_address: str, rate_limit_per_minute: int) -> dict:
        account = {"_id": new_id(), "name": name, "postal_address": postal_address,
                   "rate_limit_per_minute": rate_limit_per_minute, "status": "active",
                   "created_at": now()}
        self.db.accounts.insert_one(account)
        return account

    def get_account(self, account_id: str) -> dict | None:
        return self.db.accounts.find_one({"_id": account_id})

    # keys
    def add_key(self, account_id: str, prefix: str, digest: str, name: str,
                rate_limit_per_minute: int | None) -> dict:
        key = {"_id": new_id(), "account_id": account_id, "prefix": prefix, "digest": digest,
               "name": name, "rate_limit_per_minute": rate_limit_per_minute,
               "created_at": now(), "revoked_at": None, "last_used_at": None}
        self.db.api_keys.insert_one(key)
        return key

    def key_by_prefix(self, prefix: str) -> dict | None:
        return self.db.api_keys.find_one({"prefix": prefix})

    def list_keys(self, account_id: str, limit: int,
                  after: tuple[datetime, str] | None = None) -> list[dict]:
        """Up to `limit` keys, oldest first, after (created_at, id). Key ids
        are random, so the creation time orders them and the id breaks ties."""
        query: dict = {"account_id": account_id}
        if after is not None:
            created_at, key_id = after
            query["$or"] = [{"created_at": {"$gt": created_at}},
                            {"created_at": created_at, "_id": {"$gt": key_id}}]
        return list(self.db.api_keys.find(query)
                    .sort([("created_at", ASCENDING), ("_id", ASCENDING)]).limit(limit))

    def count_active_keys(self, account_id: str) -> int:
        return self.db.api_keys.count_documents({"account_id": account_id, "revoked_at": None})

    def revoke_key(self, account_id: str, key_id: str) -> dict | None:
        """The key, revoked; one revoked before keeps the time it was (a
        second DELETE rewrote it, and the record of when a key stopped
        working with it). LastKey when it is the account's last working
        key: nothing issues a key to an account that has none, so revoking
        it locked the account out for good."""
        changed = self.db.api_keys.update_one(
            {"_id": key_id, "account_id": account_id, "revoked_at": None},
            {"$set": {"revoked_at": now()}}).modified_count
        if changed and not self.count_active_keys(account_id):
            # Looked at after the write, not before: of two revoking the
            # last two keys at once, each sees the other's, and both undo.
            self.db.api_keys.update_one({"_id": key_id}, {"$set": {"revoked_at": None}})
            raise LastKey(key_id)
        return self.db.api_keys.find_one({"_id": key_id, "account_id": account_id})
