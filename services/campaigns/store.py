"""The campaigns service's repository over its own MongoDB database.

FerretDB has no multi-document transactions, so every state change is one
atomic single-document update, and an event that must follow a state change
is written into the same document (`outbox.<event id>`) by that update; it
is removed once published and flushed, and the worker's sweep publishes
whatever a crash left behind. Progress counts each job's final outcome
once: `job_states` (one document per job id) says what was counted, and the
campaign's `counts` are a cache of it that the sweep reconciles.
"""
from __future__ import annotations

import secrets
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError
from pymongo.operations import IndexModel

from services.campaigns import domain
from shared import mongo

INDEXES = {
    "templates": [IndexModel([("account_id", ASCENDING), ("_id", ASCENDING)])],
    "template_versions": [IndexModel([("template_id", ASCENDING), ("version", ASCENDING)],
                                     unique=True)],
    "campaigns": [IndexModel([("account_id", ASCENDING), ("_id", ASCENDING)]),
                  IndexModel([("status", ASCENDING), ("send_at", ASCENDING)]),
                  IndexModel([("outbox_count", ASCENDING)])],
    "job_states": [IndexModel([("campaign_id", ASCENDING), ("final", ASCENDING)])],
}


def new_id() -> str:
    """Time-ordered (cursor pagination lists oldest first), 32 hex chars."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def ensure_indexes(db: Database) -> None:
    mongo.ensure_indexes(db, INDEXES)


class VersionConflict(Exception):
    """Someone saved the same template at the same moment."""


class TemplateStore:
    def __init__(self, db: Database):
        self.templates = db["templates"]
        self.versions = db["template_versions"]

    def create(self, account_id: str, meta: dict, parts: dict) -> tuple[dict, dict]:
        now = utcnow()
        template = {"_id": new_id(), "account_id": account_id, **meta, "version": 1,
                    "archived": False, "created_at": now, "updated_at": now}
        version = self._version_doc(template["_id"], account_id, 1, parts, now)
        self.versions.insert_one(version)
        self.templates.insert_one(template)
        return template, version

    def add_version(self, template: dict, meta: dict, parts: dict) -> tuple[dict, dict]:
        latest = self.latest_version(template["_id"])
        number = (latest["version"] if latest else 0) + 1
        now = utcnow()
        version = self._version_doc(template["_id"], template["account_id"], number, parts, now)
        try:
            self.versions.insert_one(version)
        except DuplicateKeyError:
            raise VersionConflict() from None
        updated = self.templates.find_one_and_update(
            {"_id": template["_id"]},
            {"$set": {**meta, "updated_at": now}, "$max": {"version": number}},
            return_document=ReturnDocument.AFTER)
        return updated, version

    @staticmethod
    def _version_doc(template_id, account_id, number, parts, now) -> dict:
        return {"_id": f"{template_id}:{number}", "template_id": template_id,
                "account_id": account_id, "version": number, **parts, "created_at": now}

    def get(self, account_id: str, template_id: str) -> dict | None:
        return self.templates.find_one({"_id": template_id, "account_id": account_id,
                                        "archived": False})

    def latest_version(self, template_id: str) -> dict | None:
        return self.versions.find_one({"template_id": template_id},
                                      sort=[("version", DESCENDING)])

    def version(self, template_id: str, number: int) -> dict | None:
        return self.versions.find_one({"template_id": template_id, "version": number})

    def page(self, account_id: str, after: str | None, limit: int) -> list[dict]:
        query: dict[str, Any] = {"account_id": account_id, "archived": False}
        if after:
            query["_id"] = {"$gt": after}
        return list(self.templates.find(query).sort("_id", ASCENDING).limit(limit + 1))

    def versions_page(self, template_id: str, after: int | None, limit: int) -> list[dict]:
        query: dict[str, Any] = {"template_id": template_id}
        if after:
            query["version"] = {"$gt": after}
        return list(self.versions.find(query).sort("version", ASCENDING).limit(limit + 1))

    def archive(self, account_id: str, template_id: str) -> bool:
        result = self.templates.update_one(
            {"_id": template_id, "account_id": account_id, "archived": False},
            {"$set": {"archived": True, "updated_at": utcnow()}})
        return result.modified_count == 1

    def count(self, account_id: str) -> int:
        return self.templates.count_documents({"account_id": account_id, "archived": False})


class CampaignStore:
    def __init__(self, db: Database):
        self.campaigns = db["campaigns"]

    def create(self, account_id: str, fields: dict) -> dict:
        now = utcnow()
        campaign = {"_id": new_id(), "account_id": account_id, **fields,
                    "status": domain.DRAFT, "send_at": None, "audience_size": None,
                    "counts": {}, "bytes": 0, "outbox": {}, "outbox_count": 0,
                    "created_at": now, "updated_at": now}
        self.campaigns.insert_one(campaign)
        return campaign

    def get(self, account_id: str, campaign_id: str) -> dict | None:
        return self.campaigns.find_one({"_id": campaign_id, "account_id": account_id})

    def get_any(self, campaign_id: str) -> dict | None:
        return self.campaigns.find_one({"_id": campaign_id})

    def page(self, account_id: str, after: str | None, limit: int,
             status: str | None = None) -> list[dict]:
        query: dict[str, Any] = {"account_id": account_id}
        if status:
            query["status"] = status
        if after:
            query["_id"] = {"$gt": after}
        return list(self.campaigns.find(query, {"outbox": 0}).sort("_id", ASCENDING)
                    .limit(limit + 1))

    def update_draft(self, account_id: str, campaign_id: str, fields: dict) -> dict | None:
        return self.campaigns.find_one_and_update(
            {"_id": campaign_id, "account_id": account_id, "status": domain.DRAFT},
            {"$set": {**fields, "updated_at": utcnow()}}, return_document=ReturnDocument.AFTER)

    def transition(self, campaign_id: str, from_statuses: Iterable[str], to_status: str,
                   events: Iterable[dict] = (), extra: dict | None = None,
                   condition: dict | None = None) -> dict | None:
        """Atomically move from one of `from_statuses` to `to_status`, writing
        the events that announce it into the outbox. None when the campaign
        was not in one of those states (someone else moved it first)."""
        events = list(events)
        now = utcnow()
        update: dict[str, Any] = {"$set": {"status": to_status, "updated_at": now,
                                           **(extra or {}),
                                           **{f"outbox.{e['id']}": e for e in events}}}
        if events:
            update["$inc"] = {"outbox_count": len(events)}
        query = {"_id": campaign_id, "status": {"$in": list(from_statuses)}, **(condition or {})}
        return self.campaigns.find_one_and_update(query, update,
                                                  return_document=ReturnDocument.AFTER)

    def clear_outbox(self, campaign_id: str, event_id: str) -> None:
        self.campaigns.update_one(
            {"_id": campaign_id, f"outbox.{event_id}": {"$exists": True}},
            {"$unset": {f"outbox.{event_id}": ""}, "$inc": {"outbox_count": -1}})

    def with_pending_outbox(self, older_than: timedelta) -> list[dict]:
        return list(self.campaigns.find({"outbox_count": {"$gt": 0},
                                         "updated_at": {"$lte": utcnow() - older_than}}))

    def due_schedules(self, now: datetime, limit: int = 20) -> list[dict]:
        return list(self.campaigns.find({"status": domain.SCHEDULED, "send_at": {"$lte": now}},
                                        {"outbox": 0}).limit(limit))

    def active(self) -> list[dict]:
        return list(self.campaigns.find({"status": {"$in": list(domain.ACTIVE)}}, {"outbox": 0}))

    # -- progress ------------------------------------------------------------
    def set_audience_size(self, campaign_id: str, size: int) -> dict | None:
        return self.campaigns.find_one_and_update(
            {"_id": campaign_id}, {"$set": {"audience_size": size, "updated_at": utcnow()}},
            {"outbox": 0}, return_document=ReturnDocument.AFTER)

    def add_outcome(self, campaign_id: str, outcome: str, size_bytes: int) -> dict | None:
        now = utcnow()
        inc = {f"counts.{outcome}": 1}
        if outcome == "sent" and size_bytes:
            inc["bytes"] = size_bytes
        update = {"$inc": inc, "$set": {"last_outcome_at": now}}
        if outcome in domain.FINAL_OUTCOMES:
            update["$min"] = {"first_outcome_at": now}
        return self.campaigns.find_one_and_update({"_id": campaign_id}, update, {"outbox": 0},
                                                  return_document=ReturnDocument.AFTER)

    def set_counts(self, campaign_id: str, counts: dict, size_bytes: int) -> None:
        self.campaigns.update_one({"_id": campaign_id},
                                  {"$set": {**{f"counts.{k}": v for k, v in counts.items()},
                                            "bytes": size_bytes, "reconciled_at": utcnow()}})

    def mark_reconciled(self, campaign_id: str) -> None:
        self.campaigns.update_one({"_id": campaign_id}, {"$set": {"reconciled_at": utcnow()}})

    def count(self, account_id: str) -> int:
        return self.campaigns.count_documents({"account_id": account_id})

    def mailings(self, account_id: str) -> tuple[int, int]:
        rows = list(self.campaigns.aggregate([
            {"$match": {"account_id": account_id}},
            {"$group": {"_id": None, "sent": {"$sum": "$counts.sent"},
                        "bytes": {"$sum": "$bytes"}}}]))
        if not rows:
            return 0, 0
        return int(rows[0].get("sent") or 0), int(rows[0].get("bytes") or 0)


class JobStateStore:
    """One document per job: which outcomes of it were already counted."""

    def __init__(self, db: Database):
        self.jobs = db["job_states"]

    def settle(self, job_id: str, campaign_id: str, outcome: str, size_bytes: int = 0) -> bool:
        """Record the job's final outcome; False when it already had one."""
        try:
            result = self.jobs.update_one(
                {"_id": job_id, "final": {"$exists": False}},
                {"$set": {"final": outcome, "campaign_id": campaign_id,
                          "size_bytes": size_bytes if outcome == "sent" else 0}}, upsert=True)
        except DuplicateKeyError:
            return False
        return bool(result.upserted_id is not None or result.modified_count)

    def mark(self, job_id: str, campaign_id: str, field: str, value: Any) -> bool:
        """Add `value` to the job's `field` set once (a deferred attempt, a
        bounce); False when it was already there."""
        try:
            result = self.jobs.update_one(
                {"_id": job_id, field: {"$ne": value}},
                {"$addToSet": {field: value}, "$set": {"campaign_id": campaign_id}}, upsert=True)
        except DuplicateKeyError:
            return False
        return bool(result.upserted_id is not None or result.modified_count)

    def exact_counts(self, campaign_id: str) -> dict[str, int]:
        """{sent, failed, skipped, bytes} from the job states themselves."""
        counts = {outcome: 0 for outcome in domain.FINAL_OUTCOMES}
        counts["bytes"] = 0
        for row in self.jobs.aggregate([{"$match": {"campaign_id": campaign_id}},
                                        {"$group": {"_id": "$final", "n": {"$sum": 1},
                                                    "bytes": {"$sum": "$size_bytes"}}}]):
            if row["_id"] in domain.FINAL_OUTCOMES:
                counts[row["_id"]] = int(row["n"])
                counts["bytes"] += int(row.get("bytes") or 0)
        return counts
