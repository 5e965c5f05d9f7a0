"""Account users (the platform's own customers' people) in the gateway's
database: the one place their address and name live."""
from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from services.gateway.store import new_id, now
from shared.mongo import delete_all, is_duplicate_key

INDEXES = {
    "users": [IndexModel([("account_id", ASCENDING), ("email_key", ASCENDING)], unique=True),
              IndexModel([("account_id", ASCENDING), ("created_at", ASCENDING),
                          ("_id", ASCENDING)])],
}


class DuplicateUser(Exception):
    pass


class UserStore:
    def __init__(self, db: Database):
        self.users = db["users"]

    def create(self, account_id: str, email: str, email_key: str, name: str) -> dict:
        user = {"_id": new_id(), "account_id": account_id, "email": email, "email_key": email_key,
                "name": name, "created_at": now(), "updated_at": now()}
        try:
            self.users.insert_one(user)
        except DuplicateKeyError:
            raise DuplicateUser(email) from None
        return user

    def get(self, account_id: str, user_id: str) -> dict | None:
        return self.users.find_one({"_id": user_id, "account_id": account_id})

    def page(self, account_id: str, limit: int,
             after: tuple[datetime, str] | None) -> list[dict]:
        """Up to `limit` + 1 users, oldest first, after (created_at, id). Ids
        are random: in their order, a user added while a client paged could
        land behind its cursor and be missed."""
        query: dict = {"account_id": account_id}
        if after is not None:
            created_at, user_id = after
            query["$or"] = [{"created_at": {"$gt": created_at}},
                            {"created_at": created_at, "_id": {"$gt": user_id}}]
        return list(self.users.find(query).sort([("created_at", ASCENDING), ("_id", ASCENDING)])
                    .limit(limit + 1))

    def count(self, account_id: str) -> int:
        return self.users.count_documents({"account_id": account_id})

    def all_of(self, account_id: str) -> list[dict]:
        return list(self.users.find({"account_id": account_id}))

    def address_taken(self, account_id: str, email_key: str, user_id: str) -> bool:
        """Another user of the account has this address."""
        return self.users.find_one({"account_id": account_id, "email_key": email_key,
                                    "_id": {"$ne": user_id}}, {"_id": 1}) is not None

    def update(self, account_id: str, user_id: str, changes: dict) -> dict | None:
        try:
            return self.users.find_one_and_update(
                {"_id": user_id, "account_id": account_id},
                {"$set": {**changes, "updated_at": now()}}, return_document=ReturnDocument.AFTER)
        except PyMongoError as exc:  # FerretDB says an update's clash with code 1
            if is_duplicate_key(exc):
                raise DuplicateUser(changes.get("email", "")) from None
            raise

    def delete(self, account_id: str, user_id: str) -> bool:
        return self.users.delete_one({"_id": user_id, "account_id": account_id}).deleted_count == 1

    def delete_account(self, account_id: str) -> int:
        return delete_all(self.users, {"account_id": account_id})

    @staticmethod
    def erase_account_record(db: Database, account_id: str) -> None:
        """What stays of a deleted account: its id and status, so its keys
        stay dead and its id is never reused; name and postal address go."""
        db["accounts"].update_one({"_id": account_id}, {
            "$set": {"status": "deleted", "deleted_at": now(), "name": "", "postal_address": ""}})
        db["api_keys"].update_many({"account_id": account_id, "revoked_at": None},
                                   {"$set": {"revoked_at": now()}})
