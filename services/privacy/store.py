"""The privacy service's repository over its own MongoDB database.

It holds ids and salted hashes, never an address: the request record of an
erasure must not itself become a copy of what was erased.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterable

from bson import ObjectId
from bson.regex import Regex
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from services.privacy import domain
from shared.erased_accounts import ErasedAccounts
from shared.erased_contacts import ErasedContacts
from shared.mongo import delete_all, insert_new
from shared.privacy_answers import PSEUDONYM_PREFIX

INDEXES = {
    "requests": [IndexModel([("account_id", ASCENDING), ("_id", ASCENDING)]),
                 IndexModel([("status", ASCENDING), ("due_at", ASCENDING)])],
    "export_parts": [IndexModel([("request_id", ASCENDING)])],
    "audit": [IndexModel([("account_id", ASCENDING), ("at", ASCENDING), ("_id", ASCENDING)])],
    "policies": [IndexModel([("published_at", ASCENDING)])],
    "notice_acks": [IndexModel([("account_id", ASCENDING), ("subject", ASCENDING)])],
    "agg_markers": [IndexModel([("account_id", ASCENDING), ("day", ASCENDING)]),
                    IndexModel([("day", ASCENDING)]),
                    IndexModel([("contact_id", ASCENDING)])],
    "aggregates": [IndexModel([("account_id", ASCENDING), ("day", ASCENDING)])],
    "erased_contacts": [IndexModel([("at", ASCENDING)]), IndexModel([("account_id", ASCENDING)])],
}


ERASED_TEXT = "(erased)"


def now() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    """Time-ordered (an ObjectId), so `_id` order is creation order."""
    return str(ObjectId())


def _page_filter(query: dict, after: str | None) -> dict:
    return {**query, "_id": {"$gt": after}} if after else query


class PrivacyStore:
    def __init__(self, db: Database):
        self.db = db

    # -- requests ------------------------------------------------------------
    def insert_request(self, request: dict) -> dict:
        self.db.requests.insert_one(request)
        return request

    def mark_published(self, request_id: str) -> None:
        self.db.requests.update_one({"_id": request_id}, {"$unset": {"unpublished": ""}})

    def unpublished(self, created_before: datetime, limit: int = 100) -> list[dict]:
        """Requests whose privacy.requested may not have gone out."""
        return list(self.db.requests.find({"unpublished": True,
                                           "created_at": {"$lt": created_before}}).limit(limit))

    def get_request(self, account_id: str | None, request_id: str) -> dict | None:
        query = {"_id": request_id}
        if account_id is not None:
            query["account_id"] = account_id
        return self.db.requests.find_one(query)

    def list_requests(self, account_id: str, limit: int, after: str | None,
                      open_only: bool = False) -> list[dict]:
        query = {"account_id": account_id}
        if open_only:
            query["status"] = {"$nin": list(domain.ENDED)}
        return list(self.db.requests.find(_page_filter(query, after))
                    .sort("_id", ASCENDING).limit(limit + 1))

    def open_requests(self, account_id: str | None = None) -> list[dict]:
        query: dict = {"status": {"$nin": list(domain.ENDED)}}
        if account_id is not None:
            query["account_id"] = account_id
        return list(self.db.requests.find(query))

    def add_extension(self, account_id: str, request_id: str, extension: dict,
                      due_at: datetime, expected_count: int) -> dict | None:
        # Guarded by the number of extensions read: two concurrent extensions
        # cannot both pass the two-month limit.
        return self.db.requests.find_one_and_update(
            {"_id": request_id, "account_id": account_id,
             "extensions": {"$size": expected_count}},
            {"$push": {"extensions": extension}, "$set": {"due_at": due_at}},
            return_document=ReturnDocument.AFTER)

    def set_answer(self, request_id: str, service: str, answer: dict) -> dict | None:
        return self.db.requests.find_one_and_update(
            {"_id": request_id}, {"$set": {f"answers.{service}": answer}},
            return_document=ReturnDocument.AFTER)

    def set_status(self, request_id: str, status: str, completed_at: datetime | None) -> None:
        self.db.requests.update_one({"_id": request_id},
                                    {"$set": {"status": status, "completed_at": completed_at}})

    def mark_resolved(self, request_id: str, contact_ids: list[str]) -> None:
        self.db.requests.update_one({"_id": request_id}, {"$set": {
            "subject.contact_id": contact_ids[0] if contact_ids else None,
            "subject.contact_ids": contact_ids, "resolved": True}})

    def reopen(self, request_id: str, failed: list[str]) -> dict | None:
        """Pending again, without the failed answers, to be published again
        (the worker's sweep sends it if this process cannot). Only from
        needs_attention: two retries at once reopen it once."""
        return self.db.requests.find_one_and_update(
            {"_id": request_id, "status": "needs_attention"},
            {"$set": {"status": "pending", "unpublished": True},
             "$unset": {f"answers.{service}": "" for service in failed}},
            return_document=ReturnDocument.AFTER)

    def close(self, request_id: str, reason: str, at: datetime) -> dict | None:
        """Ended unfulfilled, with the account's reason; a rectification's
        new values go (they were kept only to be applied)."""
        return self.db.requests.find_one_and_update(
            {"_id": request_id, "status": "needs_attention"},
            {"$set": {"status": domain.CLOSED, "closed_at": at, "close_reason": reason},
             "$unset": {"changes": ""}},
            return_document=ReturnDocument.AFTER)

    def clear_changes(self, request_id: str) -> None:
        """Rectification values are needed until every service applied them."""
        self.db.requests.update_one({"_id": request_id}, {"$unset": {"changes": ""}})

    def save_export_part(self, request_id: str, account_id: str, service: str,
                         data: dict) -> None:
        self.db.export_parts.replace_one(
            {"_id": f"{request_id}:{service}"},
            {"request_id": request_id, "account_id": account_id, "service": service,
             "data": data, "at": now()}, upsert=True)

    def expire_exports(self, completed_before: datetime, at: datetime) -> int:
        """Delete the exports of access requests completed before then;
        returns how many requests' exports went. The request keeps when."""
        expired = [r["_id"] for r in self.db.requests.find(
            {"kind": "access", "status": "complete", "completed_at": {"$lt": completed_before},
             "export_expired_at": {"$exists": False}}, {"_id": 1})]
        if expired:
            delete_all(self.db.export_parts, {"request_id": {"$in": expired}})
            self.db.requests.update_many({"_id": {"$in": expired}},
                                         {"$set": {"export_expired_at": at}})
        return len(expired)

    def drop_export_part(self, request_id: str, service: str) -> None:
        self.db.export_parts.delete_one({"_id": f"{request_id}:{service}"})

    def contact_erased(self, account_id: str, contact_ids: Iterable[str]) -> bool:
        return ErasedContacts(self.db).any_erased_now(account_id, contact_ids)

    def export_parts(self, request_id: str) -> dict[str, dict]:
        return {p["service"]: p["data"] for p in self.db.export_parts.find({"request_id": request_id})}

    # -- audit (append-only: no delete; an erasure replaces free-text reasons) --
    def append_audit(self, entry: dict) -> bool:
        try:
            self.db.audit.insert_one(entry)
            return True
        except DuplicateKeyError:  # the same event redelivered
            return False

    def list_audit(self, account_id: str, since: datetime | None, until: datetime | None,
                   limit: int, after: str | None) -> list[dict]:
        query: dict = {"account_id": account_id}
        if since or until:
            query["at"] = {**({"$gte": since} if since else {}), **({"$lt": until} if until else {})}
        return list(self.db.audit.find(_page_filter(query, after))
                    .sort("_id", ASCENDING).limit(limit + 1))

    # -- policies and notices ----------------------------------------------
    def insert_policy(self, policy: dict) -> dict:
        self.db.policies.insert_one(policy)
        return policy

    def get_policy(self, policy_id: str) -> dict | None:
        return self.db.policies.find_one({"_id": policy_id})

    def list_policies(self, limit: int, after: str | None) -> list[dict]:
        return list(self.db.policies.find(_page_filter({}, after))
                    .sort("_id", ASCENDING).limit(limit + 1))

    def policies_not_in(self, done: set[str], limit: int, after: str | None) -> list[dict]:
        """Up to limit+1 policy versions after `after`, but those in `done`."""
        query = _page_filter({}, after)
        if done:
            query["_id"] = {**query.get("_id", {}), "$nin": sorted(done)}
        return list(self.db.policies.find(query).sort("_id", ASCENDING).limit(limit + 1))

    def acknowledged(self, account_id: str, subject: str) -> set[str]:
        return {a["policy_id"] for a in
                self.db.notice_acks.find({"account_id": account_id, "subject": subject})}

    def acknowledge(self, policy_id: str, account_id: str, subject: str, ack: dict) -> dict:
        return self.db.notice_acks.find_one_and_update(
            {"_id": f"{policy_id}:{account_id}:{subject}"},
            {"$setOnInsert": {"policy_id": policy_id, "account_id": account_id,
                              "subject": subject, **ack}},
            upsert=True, return_document=ReturnDocument.AFTER)

    def acks_of(self, account_id: str, subject: str) -> list[dict]:
        return list(self.db.notice_acks.find({"account_id": account_id, "subject": subject}))

    # -- aggregate markers and roll-ups -------------------------------------
    def add_markers(self, markers: list[dict]) -> None:
        """One insert for many markers; one already there was counted before."""
        insert_new(self.db.agg_markers, markers)

    def forget_contacts(self, account_id: str, contact_ids: list[str]) -> None:
        """An erased contact leaves no marker and no earlier access export
        (an export is a copy of the contact's data)."""
        if not contact_ids:
            return
        # First, so that its deliveries still coming count under a pseudonym.
        ErasedContacts(self.db).mark(account_id, contact_ids)
        delete_all(self.db.agg_markers, {"account_id": account_id,
                                         "contact_id": {"$in": contact_ids}})
        theirs = {"account_id": account_id, **_naming_any_of(contact_ids)}
        accessed = [r["_id"] for r in self.db.requests.find({**theirs, "kind": "access"},
                                                            {"_id": 1})]
        if accessed:
            delete_all(self.db.export_parts, {"request_id": {"$in": accessed}})
        # A rectification's new values are the contact's data too; one that
        # never completed kept them for good.
        self.db.requests.update_many({**theirs, "changes": {"$exists": True}},
                                     {"$unset": {"changes": ""}})
        self._forget_reasons(theirs)
        requests = [r["_id"] for r in self.db.requests.find(theirs, {"_id": 1})]
        self._forget_audit_reasons({"account_id": account_id, "$or": [
            {"target_id": {"$in": contact_ids}}, {"request_id": {"$in": requests}}]})

    def forget_account(self, account_id: str) -> None:
        """A deleted account's exports, markers, rolled-up aggregates and
        notice acknowledgements, and its rectifications' new values.
        Requests (hashes and ids) and the audit log stay: they are the proof
        that the account's requests were answered. Its delivery events
        still in flight are not counted after this (shared/erased_accounts.py)."""
        ErasedAccounts(self.db).mark(account_id)
        for collection in ("export_parts", "agg_markers", "aggregates", "notice_acks"):
            delete_all(self.db[collection], {"account_id": account_id})
        ErasedContacts(self.db).forget_account(account_id)
        self.db.requests.update_many({"account_id": account_id, "changes": {"$exists": True}},
                                     {"$unset": {"changes": ""}})
        self._forget_reasons({"account_id": account_id})
        self._forget_audit_reasons({"account_id": account_id})

    def forget_erasure_reasons(self, account_id: str, request: dict) -> None:
        """A completed erasure's own reason, and those of the account's
        requests about the same address: forget_contacts replaces them by
        contact id, and an erasure that found no contact has none."""
        matches = [{"_id": request["_id"]}]
        if request["subject"].get("email_hash"):
            matches.append({"subject.email_hash": request["subject"]["email_hash"]})
        self._forget_reasons({"account_id": account_id, "$or": matches})

    def _forget_reasons(self, query: dict) -> None:
        """The free text the account wrote on these requests (why it made
        one, why it extended one) may name the person: replaced once the
        person or the account is erased. Ids, kinds and dates stay. Each
        reason is set in place: an extension added meanwhile is not lost."""
        for request in self.db.requests.find(query, {"reason": 1, "close_reason": 1,
                                                     "extensions": 1}):
            changes = {f"extensions.{i}.reason": ERASED_TEXT
                       for i, extension in enumerate(request.get("extensions") or [])
                       if extension.get("reason") not in (None, ERASED_TEXT)}
            for field in ("reason", "close_reason"):
                if request.get(field) not in (None, ERASED_TEXT):
                    changes[field] = ERASED_TEXT
            if changes:
                self.db.requests.update_one({"_id": request["_id"]}, {"$set": changes})

    def _forget_audit_reasons(self, query: dict) -> None:
        """An audit entry's `reason` may be a caller's free text (POST
        /privacy/audit, audit.recorded; an export download's until
        2026-12-07), which may name the person: replaced like a request's
        once the person the entry is about, or the account, is erased. The
        entry itself (who, what, when, the ids) stays: it is the proof."""
        self.db.audit.update_many({**query, "reason": {"$nin": [None, ERASED_TEXT]}},
                                  {"$set": {"reason": ERASED_TEXT}})

    def marker_counts(self, query: dict) -> list[dict]:
        """(account, day, provider, kind) -> count, from the markers: one
        count per outcome, and kind "contacts", the distinct contacts among
        them. (Markers of kind "contacts", one per contact, were written
        before the distinct count: they count as contacts and nothing else.)
        An erased contact's markers carry pseudonyms, a fresh one for each
        delivery still in flight at the erasure: counted as contacts, one
        person became several, and a group under k could pass as k. They
        count as no contact: a group must reach k with real ones."""
        group = {"account_id": "$account_id", "day": "$day", "provider": "$provider"}
        outcomes = self.db.agg_markers.aggregate([
            {"$match": {**query, "kind": {"$ne": "contacts"}}},
            {"$group": {"_id": {**group, "kind": "$kind"}, "count": {"$sum": 1}}},
        ])
        contacts = self.db.agg_markers.aggregate([
            {"$match": {**query, "contact_id": {"$not": Regex("^" + PSEUDONYM_PREFIX)}}},
            {"$group": {"_id": {**group, "contact_id": "$contact_id"}}},
            {"$group": {"_id": {name: f"$_id.{name}" for name in group}, "count": {"$sum": 1}}},
        ])
        return [*outcomes, *({"_id": {**row["_id"], "kind": "contacts"}, "count": row["count"]}
                             for row in contacts)]

    def rollups(self, query: dict) -> list[dict]:
        return list(self.db.aggregates.find(query))

    def save_rollup(self, row: dict) -> None:
        self.db.aggregates.replace_one({"_id": row["_id"]}, row, upsert=True)

    def delete_markers(self, query: dict) -> int:
        return delete_all(self.db.agg_markers, query)


def _naming_any_of(contact_ids: list[str]) -> dict:
    """Requests whose subject names one of these contacts: as its id, or
    among the ids an address resolved to (`contact_ids`)."""
    return {"$or": [{"subject.contact_id": {"$in": contact_ids}},
                    {"subject.contact_ids": {"$in": contact_ids}}]}
