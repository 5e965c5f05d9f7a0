"""The campaigns service's repository over its own MongoDB database.

FerretDB 1.24 (SQLite backend) applies an update as read-modify-write of
the whole document: two concurrent updates of one document lose one of them
(even on different fields; measured: a conditional update is no
compare-and-set and `$inc` loses increments). Only a unique index is a
reliable arbiter. So:
- the campaign document is written only by state changes (the API and the
  worker's sweep), never on the hot path;
- one-time moves (launch, completion) are decided by inserting a lease with
  a unique id; the winner moves the campaign;
- an event announcing a state change is written to `outbox` before the
  change, published and flushed after it, then deleted; the sweep publishes
  what a crash left, if the campaign's status still agrees with it;
- progress counts go to one `progress` document per campaign and worker
  process (a single writer each), and `job_outcomes` (one document per job
  and outcome kind, unique id) says which outcomes were counted, so
  redelivery counts nothing twice and the exact figures can be recomputed.
"""
from __future__ import annotations

import secrets
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError
from pymongo.operations import IndexModel

from services.campaigns import domain
from shared import era_leases, mongo

INDEXES = {
    "templates": [IndexModel([("account_id", ASCENDING), ("_id", ASCENDING)])],
    "template_versions": [IndexModel([("template_id", ASCENDING), ("version", ASCENDING)],
                                     unique=True)],
    "campaigns": [IndexModel([("account_id", ASCENDING), ("_id", ASCENDING)]),
                  IndexModel([("status", ASCENDING), ("send_at", ASCENDING)])],
    "outbox": [IndexModel([("created_at", ASCENDING)])],
    "progress": [IndexModel([("campaign_id", ASCENDING)]),
                 IndexModel([("account_id", ASCENDING)])],
    "job_outcomes": [IndexModel([("campaign_id", ASCENDING), ("final", ASCENDING)])],
    "test_sends": [IndexModel([("account_id", ASCENDING), ("at", ASCENDING)])],
    "leases": [IndexModel([("lease", ASCENDING)])],
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
        self.outbox = db["outbox"]
        self.leases = db["leases"]
        self.test_sends = db["test_sends"]

    # -- test sends: how many an account made lately (usecases.send_test) ----
    def tests_since(self, account_id: str, since: datetime) -> int:
        return sum(d["count"] for d in self.test_sends.find(
            {"account_id": account_id, "at": {"$gte": since}}, {"count": 1}))

    def note_tests(self, account_id: str, count: int, forget_before: datetime) -> str:
        """Reserve `count` test messages (and forget those of before the
        window); the reservation's id gives them back (forget_tests)."""
        reservation = uuid.uuid4().hex
        self.test_sends.insert_one({"_id": reservation, "account_id": account_id,
                                    "at": utcnow(), "count": count})
        self.test_sends.delete_many({"account_id": account_id, "at": {"$lt": forget_before}})
        return reservation

    def forget_tests(self, reservation: str) -> None:
        self.test_sends.delete_one({"_id": reservation})

    def create(self, account_id: str, fields: dict) -> dict:
        now = utcnow()
        campaign = {"_id": new_id(), "account_id": account_id, **fields,
                    "status": domain.DRAFT, "send_at": None, "created_at": now,
                    "updated_at": now}
        self.campaigns.insert_one(campaign)
        return campaign

    def get(self, account_id: str, campaign_id: str) -> dict | None:
        return self.campaigns.find_one({"_id": campaign_id, "account_id": account_id})

    def get_any(self, campaign_id: str) -> dict | None:
        return self.campaigns.find_one({"_id": campaign_id})

    def note_audience_missing(self, campaign_id: str, missing: dict) -> None:
        self.campaigns.update_one({"_id": campaign_id}, {"$set": {"audience_missing": missing}})

    def page(self, account_id: str, after: str | None, limit: int,
             status: str | None = None) -> list[dict]:
        query: dict[str, Any] = {"account_id": account_id}
        if status:
            query["status"] = status
        if after:
            query["_id"] = {"$gt": after}
        return list(self.campaigns.find(query).sort("_id", ASCENDING).limit(limit + 1))

    def update_draft(self, account_id: str, campaign_id: str, fields: dict) -> dict | None:
        return self.campaigns.find_one_and_update(
            {"_id": campaign_id, "account_id": account_id, "status": domain.DRAFT},
            {"$set": {**fields, "updated_at": utcnow()}}, return_document=ReturnDocument.AFTER)

    def transition(self, campaign_id: str, from_statuses: Iterable[str], to_status: str,
                   extra: dict | None = None, unchanged_since: datetime | None = None
                   ) -> dict | None:
        """Move from one of `from_statuses` to `to_status`; None when the
        campaign is in none of them (or, with `unchanged_since`, was changed
        after it). Not a compare-and-set on FerretDB: a move that must
        happen once takes a lease first."""
        query: dict = {"_id": campaign_id, "status": {"$in": list(from_statuses)}}
        if unchanged_since is not None:
            query["updated_at"] = unchanged_since
        return self.campaigns.find_one_and_update(
            query, {"$set": {"status": to_status, "updated_at": utcnow(), **(extra or {})}},
            return_document=ReturnDocument.AFTER)

    def take_lease(self, key: str, stale_after: timedelta) -> str | None:
        """A token for exactly one caller, or None for the others, until the
        holder gives it back (release_lease) or leaves it for `stale_after`
        (it crashed). An era lease (shared/era_leases.py): "delete the stale
        lease, then insert mine" let two takers of one stale lease both hold
        it on FerretDB."""
        now, token = utcnow(), uuid.uuid4().hex
        taken = era_leases.take(self.leases, [key], token, now, now + stale_after)
        return token if key in taken else None

    def release_lease(self, key: str, token: str | None = None) -> None:
        """Give back the lease `token` took: a holder that overran it ends
        its own era, never its successor's. Without a token, whoever holds
        it (tests, tools)."""
        now = utcnow()
        held = {"lease": key, "until": {"$gt": now}, **({"holder": token} if token else {})}
        self.leases.update_many(held, {"$set": {"until": now}})

    def forget_old_leases(self) -> int:
        """Leases are never deleted while they may be wanted (see
        era_leases.forget_old); a month after its last move a campaign's are."""
        return era_leases.forget_old(self.leases, utcnow(), forget_all_after=timedelta(days=30))

    # -- outbox ----------------------------------------------------------------
    def stage_event(self, event: dict) -> None:
        self.outbox.insert_one({**event, "_id": event["id"], "created_at": utcnow()})

    def drop_event(self, event_id: str) -> None:
        self.outbox.delete_one({"_id": event_id})

    def staged_events(self, older_than: timedelta, limit: int = 500) -> list[dict]:
        return list(self.outbox.find({"created_at": {"$lte": utcnow() - older_than}})
                    .sort("created_at", ASCENDING).limit(limit))

    def due_schedules(self, now: datetime, limit: int = 20) -> list[dict]:
        return list(self.campaigns.find({"status": domain.SCHEDULED, "send_at": {"$lte": now}})
                    .limit(limit))

    def delete_unlaunched(self, account_id: str, campaign_id: str) -> bool:
        """Delete a draft, or a campaign cancelled before it launched (the
        filter repeats domain.deletable, so a launch in between wins)."""
        return self.campaigns.delete_one(
            {"_id": campaign_id, "account_id": account_id,
             "status": {"$in": [domain.DRAFT, domain.CANCELLED]}, "launched_at": None}
        ).deleted_count == 1

    def active(self) -> list[dict]:
        return list(self.campaigns.find({"status": {"$in": list(domain.ACTIVE)}}))

    def count(self, account_id: str) -> int:
        return self.campaigns.count_documents({"account_id": account_id})


class ProgressStore:
    """Per-campaign counters, one document per (campaign, writer): each
    worker process writes only its own, so no update is ever lost; the
    `exact` document holds figures recomputed from job_outcomes."""

    EXACT = "exact"

    def __init__(self, db: Database, writer: str):
        self.progress = db["progress"]
        self.writer = writer

    def add(self, campaign_id: str, account_id: str | None, outcome: str,
            size_bytes: int) -> None:
        now = utcnow()
        inc = {f"counts.{outcome}": 1}
        if outcome == "sent" and size_bytes:
            inc["bytes"] = size_bytes
        update: dict[str, Any] = {"$inc": inc, "$set": {"campaign_id": campaign_id,
                                                        "last_outcome_at": now},
                                  "$min": {"first_outcome_at": now}}
        if account_id:
            update["$set"]["account_id"] = account_id
        self.progress.update_one({"_id": f"{campaign_id}:{self.writer}"}, update, upsert=True)

    def add_many(self, campaign_id: str, account_id: str | None, counts: dict[str, int],
                 size_bytes: int) -> None:
        now = utcnow()
        inc = {f"counts.{outcome}": n for outcome, n in counts.items() if n}
        if size_bytes:
            inc["bytes"] = size_bytes
        update: dict[str, Any] = {"$inc": inc, "$set": {"campaign_id": campaign_id,
                                                        "last_outcome_at": now},
                                  "$min": {"first_outcome_at": now}}
        if account_id:
            update["$set"]["account_id"] = account_id
        self.progress.update_one({"_id": f"{campaign_id}:{self.writer}"}, update, upsert=True)

    def set_audience_size(self, campaign_id: str, account_id: str, size: int) -> None:
        self.progress.update_one({"_id": f"{campaign_id}:{self.writer}"},
                                 {"$set": {"campaign_id": campaign_id, "account_id": account_id,
                                           "audience_size": size}}, upsert=True)

    def set_exact(self, campaign_id: str, account_id: str, counts: dict, size_bytes: int) -> None:
        doc = {"campaign_id": campaign_id, "account_id": account_id, "exact": True,
               "counts": counts, "bytes": size_bytes, "at": utcnow()}
        key = {"_id": f"{campaign_id}:{self.EXACT}"}
        try:
            self.progress.replace_one(key, doc, upsert=True)
        except DuplicateKeyError:
            # Two replicas' sweeps both found no document and both inserted
            # (FerretDB does not retry such an upsert, as MongoDB does): the
            # other's insert is there now, so this replace finds it.
            self.progress.replace_one(key, doc, upsert=True)

    def of(self, campaign_ids: list[str]) -> dict[str, dict]:
        """{campaign id: combined progress}: shard sums, never below the
        exact figures (a crash can leave a shard one short, never over)."""
        docs: dict[str, list[dict]] = {cid: [] for cid in campaign_ids}
        for doc in self.progress.find({"campaign_id": {"$in": campaign_ids}}):
            docs[doc["campaign_id"]].append(doc)
        return {cid: combine(rows) for cid, rows in docs.items()}

    def mailings(self, account_id: str) -> tuple[int, int]:
        docs: dict[str, list[dict]] = {}
        for doc in self.progress.find({"account_id": account_id},
                                      {"campaign_id": 1, "counts": 1, "bytes": 1, "exact": 1}):
            docs.setdefault(doc["campaign_id"], []).append(doc)
        sent = size = 0
        for rows in docs.values():
            combined = combine(rows)
            sent += combined["counts"].get("sent", 0)
            size += combined["bytes"]
        return sent, size


def combine(rows: list[dict]) -> dict:
    counts: dict[str, int] = {k: 0 for k in domain.COUNTED}
    exact: dict = {}
    size = exact_bytes = 0
    audience = None
    first = last = exact_at = None
    for row in rows:
        if row.get("exact"):
            exact, exact_bytes, exact_at = row.get("counts") or {}, int(row.get("bytes") or 0), \
                row.get("at")
            continue
        for key, value in (row.get("counts") or {}).items():
            counts[key] = counts.get(key, 0) + int(value)
        size += int(row.get("bytes") or 0)
        if row.get("audience_size") is not None:
            audience = max(audience or 0, int(row["audience_size"]))
        if row.get("first_outcome_at") and (first is None or row["first_outcome_at"] < first):
            first = row["first_outcome_at"]
        if row.get("last_outcome_at") and (last is None or row["last_outcome_at"] > last):
            last = row["last_outcome_at"]
    for key in domain.COUNTED:
        counts[key] = max(counts[key], int(exact.get(key, 0)))
    return {"counts": counts, "bytes": max(size, exact_bytes), "audience_size": audience,
            "first_outcome_at": first, "last_outcome_at": last, "exact_at": exact_at}


class JobStateStore:
    """Which outcomes of which job were counted: one document per (job,
    outcome kind), written by a plain insert whose unique _id says "counted
    already". Insert-only on purpose: a poll's worth of delivery events costs
    one insert, where checking first would add a query, and two workers
    could both pass the check."""

    def __init__(self, db: Database):
        self.outcomes = db["job_outcomes"]

    @staticmethod
    def outcome_doc(job_id: str, campaign_id: str, outcome: str, attempt: int,
                    size_bytes: int) -> dict:
        if outcome in domain.FINAL_OUTCOMES:
            return {"_id": f"{job_id}:final", "campaign_id": campaign_id, "final": outcome,
                    "size_bytes": size_bytes if outcome == "sent" else 0}
        suffix = f":{attempt}" if outcome == "deferred" else ""
        return {"_id": f"{job_id}:{outcome}{suffix}", "campaign_id": campaign_id,
                "kind": outcome}

    def record_many(self, docs: list[dict]) -> list[bool]:
        """Insert outcome documents; True for each one that was new."""
        return mongo.insert_new(self.outcomes, docs)

    def _first(self, doc: dict) -> bool:
        try:
            self.outcomes.insert_one(doc)
            return True
        except DuplicateKeyError:
            return False

    def settle(self, job_id: str, campaign_id: str, outcome: str, size_bytes: int = 0) -> bool:
        """Record the job's final outcome; False when it already had one."""
        return self._first({"_id": f"{job_id}:final", "campaign_id": campaign_id,
                            "final": outcome,
                            "size_bytes": size_bytes if outcome == "sent" else 0})

    def mark(self, job_id: str, campaign_id: str, kind: str, attempt: int | None = None) -> bool:
        """A deferred attempt or a bounce, once each; False when seen already."""
        key = f"{job_id}:{kind}" + (f":{attempt}" if attempt is not None else "")
        return self._first({"_id": key, "campaign_id": campaign_id, "kind": kind})

    def exact_counts(self, campaign_id: str) -> dict[str, int]:
        """{sent, failed, skipped, deferred, bounced, bytes} from the recorded
        outcomes themselves. (Deferred attempts and bounces were left out: a
        crash between recording them and counting them lost them for good,
        since their redelivery finds them recorded.)"""
        counts = {outcome: 0 for outcome in domain.COUNTED}
        counts["bytes"] = 0
        for row in self.outcomes.aggregate([
                {"$match": {"campaign_id": campaign_id}},
                {"$group": {"_id": {"final": "$final", "kind": "$kind"}, "n": {"$sum": 1},
                            "bytes": {"$sum": "$size_bytes"}}}]):
            outcome = row["_id"].get("final") or row["_id"].get("kind")
            if outcome in counts:
                counts[outcome] += int(row["n"])
            counts["bytes"] += int(row.get("bytes") or 0)
        return counts
