"""The fan-out's records in the contacts database (see fanout.py).

- `fanouts`: one document per launched campaign: its audience, how many
  recipients were produced, whether it is done (and cut short by a cancel),
  `paused_after` while a pause has stopped it, the lease of the fan-out
  thread running it, and until it is done the key of its job ids
  (shared/jobs.py; a document from before the keys has none, and its
  fan-out goes on with the plain ids it started with).
- `fanout_batches`: the contact ids of each batch produced, until done.
- `fanout_marks`: the cancels, pauses and resumes of its campaign, one
  document per event.
- `fanout_claims`: one document per (fan-out, attempt): who claimed it.

A fan-out's document is written by the thread holding its lease. The main
loop only inserts it (and fills in what a document from an older version
lacks, before any thread can claim it); marks and claims are only ever
inserted. FerretDB 1.24 applies an update as a read-modify-write of the
whole document, so a conditional update is no compare-and-set: the unique
`_id` of a claim is what makes one thread, and only one, the winner of an
attempt. Only a holder that overran its lease (blocked past it, say, by a
broker outage) can race the next holder: the loser finds out at its next
renewal, and meanwhile at most a batch is produced twice, with the same job
ids, which the senders claim once.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from pymongo import ASCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError
from pymongo.operations import IndexModel

from shared.events import Event
from shared.jobs import new_job_id_key
from shared.mongo import delete_all

INDEXES = {"fanouts": [IndexModel([("account_id", ASCENDING)]),
                       IndexModel([("done", ASCENDING), ("lease_until", ASCENDING)])],
           "fanout_batches": [IndexModel([("campaign_id", ASCENDING)]),
                              IndexModel([("account_id", ASCENDING)])],
           "fanout_marks": [IndexModel([("campaign_id", ASCENDING)]),
                            IndexModel([("account_id", ASCENDING)])],
           "fanout_claims": [IndexModel([("campaign_id", ASCENDING)]),
                             IndexModel([("account_id", ASCENDING)])]}
MARK_KINDS = {"campaign.cancelled": "cancel", "campaign.paused": "pause",
              "campaign.resumed": "resume"}
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
FREE_LEASE = {"lease_owner": None, "lease_until": EPOCH}


class LeaseLost(Exception):
    """Another thread holds the fan-out now (its holder overran the lease),
    or the fan-out is gone (the account was erased)."""


class Marks(NamedTuple):
    cancel: bool
    pause: bool


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class FanoutStore:
    def __init__(self, db: Database):
        self.fanouts = db["fanouts"]
        self.batches = db["fanout_batches"]
        self.marks_ = db["fanout_marks"]
        self.claims = db["fanout_claims"]

    # -- the main loop's writes -------------------------------------------------
    def start(self, campaign_id: str, account_id: str, audience: dict) -> dict:
        """The campaign's fan-out document, inserted ready to be claimed
        unless it exists (a redelivered launch)."""
        found = self.fanouts.find_one({"_id": campaign_id})
        if found is not None:
            return self.adopt(found, audience)
        doc = {"_id": campaign_id, "account_id": account_id, "audience": audience,
               "produced": 0, "done": False, "attempts": 0, **FREE_LEASE,
               "started_at": utcnow(), "job_id_key": new_job_id_key()}
        self.fanouts.insert_one(doc)
        return doc

    def adopt(self, found: dict, audience: dict | None = None) -> dict:
        """Make a fan-out started by an older version claimable: it kept no
        lease (its fan-out ran in the main loop), and before that no
        audience (the launch redelivered across the upgrade brings it).
        No thread can hold a document without a lease yet, so this write
        races nobody's."""
        missing: dict = {}
        if "audience" not in found and audience is not None:
            missing["audience"] = audience
        if "lease_until" not in found and not found.get("done"):
            missing.update(FREE_LEASE, attempts=0)
        if missing:
            self.fanouts.update_one({"_id": found["_id"]}, {"$set": missing})
        return {**found, **missing}

    def get(self, campaign_id: str) -> dict | None:
        return self.fanouts.find_one({"_id": campaign_id})

    def unfinished(self, campaign_id: str) -> dict | None:
        """The fan-out document of a started fan-out that is not done."""
        found = self.get(campaign_id)   # by _id alone: FerretDB's one query without a scan
        return found if found is not None and not found.get("done") else None

    # -- marks --------------------------------------------------------------
    def mark(self, event: Event) -> None:
        """Record a campaign.cancelled, paused or resumed; idempotent."""
        campaign_id = event.data["campaign_id"]
        kind = MARK_KINDS[event.type]
        mark_id = f"{campaign_id}:cancel" if kind == "cancel" else f"{campaign_id}:{event.id}"
        try:
            self.marks_.insert_one({"_id": mark_id, "campaign_id": campaign_id,
                                    "account_id": event.account_id, "kind": kind,
                                    "at": datetime.fromisoformat(event.time),
                                    **({"version": event.data["version"]}
                                       if event.data.get("version") else {})})
        except DuplicateKeyError:
            pass  # a redelivery

    def marks(self, campaign_id: str) -> Marks:
        return self.marks_of([campaign_id]).get(campaign_id, Marks(False, False))

    def marks_of(self, campaign_ids: list[str]) -> dict[str, Marks]:
        """{campaign id: Marks} for those with any: cancelled, and paused
        (the latest pause or resume by event time; the fan-out thread reads
        them asynchronously to the loop that records them)."""
        found: dict[str, list[dict]] = {}
        for mark in self.marks_.find({"campaign_id": {"$in": campaign_ids}},
                                     {"campaign_id": 1, "kind": 1, "at": 1, "version": 1}):
            found.setdefault(mark["campaign_id"], []).append(mark)
        return {campaign_id: _marks(marks) for campaign_id, marks in found.items()}

    # -- the lease --------------------------------------------------------------
    def claim(self, owner: str, lease_seconds: float, now: datetime) -> dict | None:
        """Take an unfinished fan-out that nobody holds (or whose holder
        died: its lease expired) and that no pause holds back. One paused
        before it started is taken once, to record that it stopped at 0."""
        candidates = list(self.fanouts.find({"done": False, "lease_until": {"$lte": now}},
                                             {"account_id": 1, "attempts": 1,
                                              "paused_after": 1}))
        marks = self.marks_of([c["_id"] for c in candidates]) if candidates else {}
        for candidate in sorted(candidates, key=lambda c: c["_id"]):
            held_back = marks.get(candidate["_id"])
            if held_back and held_back.pause and not held_back.cancel \
                    and candidate.get("paused_after") is not None:
                continue
            if not self._claim_attempt(candidate, owner, lease_seconds, now):
                continue  # another thread took this attempt
            claimed = self.fanouts.find_one_and_update(
                {"_id": candidate["_id"]},
                {"$set": {"lease_owner": owner,
                          "lease_until": now + timedelta(seconds=lease_seconds)},
                 "$inc": {"attempts": 1}},
                return_document=ReturnDocument.AFTER)
            if claimed is not None:
                return claimed
            self._delete_records(candidate["_id"])   # erased with its account meanwhile
        return None

    def _claim_attempt(self, candidate: dict, owner: str, lease_seconds: float,
                       now: datetime) -> bool:
        claim = {"_id": f"{candidate['_id']}:{candidate['attempts']}", "owner": owner,
                 "campaign_id": candidate["_id"], "account_id": candidate["account_id"],
                 "at": now}
        try:
            self.claims.insert_one(claim)
            return True
        except DuplicateKeyError:
            pass
        # A claim older than a lease on an attempt still not taken: its
        # thread died (or lost the database) between the claim and the
        # lease. Without this the fan-out would wait for good.
        stale = self.claims.delete_one(
            {"_id": claim["_id"], "at": {"$lt": now - timedelta(seconds=lease_seconds)}})
        if stale.deleted_count == 0:
            return False
        try:
            self.claims.insert_one(claim)
            return True
        except DuplicateKeyError:
            return False

    def renew(self, campaign_id: str, owner: str, until: datetime) -> None:
        self._as_holder(campaign_id, owner, {"lease_until": until})

    def release(self, campaign_id: str, owner: str, until: datetime = EPOCH,
                paused_after: int | None = None) -> None:
        """Let go of a fan-out; another thread may claim it from `until`.
        `paused_after`: let go because a pause stopped it (see below)."""
        changes = {"lease_owner": None, "lease_until": until}
        if paused_after is not None:
            changes["paused_after"] = paused_after
        self._as_holder(campaign_id, owner, changes)

    def paused_after(self, campaign_id: str, owner: str, produced: int | None) -> None:
        """How many were produced when a pause stopped the fan-out (None:
        running again). An operator's answer to "why no audience size yet"."""
        self._as_holder(campaign_id, owner, {"paused_after": produced})

    def _as_holder(self, campaign_id: str, owner: str, changes: dict) -> None:
        result = self.fanouts.update_one(
            {"_id": campaign_id, "lease_owner": owner, "done": False}, {"$set": changes})
        if result.matched_count == 0:
            raise LeaseLost(campaign_id)

    # -- progress -------------------------------------------------------------
    def record_batch(self, campaign_id: str, account_id: str, contact_ids: list[str],
                     email_hashes: list[str] = ()) -> None:
        self.batches.insert_one({"campaign_id": campaign_id, "account_id": account_id,
                                 "contact_ids": contact_ids, "email_hashes": list(email_hashes),
                                 "at": utcnow()})

    def produced_ids(self, campaign_id: str) -> set[str]:
        return self.produced(campaign_id)[0]

    def produced(self, campaign_id: str) -> tuple[set[str], set[str]]:
        """The contact ids and address hashes of the jobs produced so far."""
        ids: set[str] = set()
        hashes: set[str] = set()
        for doc in self.batches.find({"campaign_id": campaign_id},
                                     {"contact_ids": 1, "email_hashes": 1}):
            ids.update(doc["contact_ids"])
            hashes.update(doc.get("email_hashes") or ())
        return ids, hashes

    def finish(self, campaign_id: str, owner: str, produced: int,
               cut_short: bool = False) -> None:
        """Done: no job of the campaign will be made again, so the key of its
        job ids goes (shared/jobs.py), and with it any way back from a job id
        to a contact."""
        self._as_holder(campaign_id, owner, {
            "done": True, "produced": produced, "cut_short": cut_short, "paused_after": None,
            **FREE_LEASE, "finished_at": utcnow(), "job_id_key": None})
        self._delete_records(campaign_id)

    def forget_if_erased(self, campaign_id: str) -> bool:
        """After a lost lease: when the fan-out's document is gone (its
        account was erased while a thread ran it), delete what that thread
        recorded after the erasure. True if it was gone."""
        if self.get(campaign_id) is not None:
            return False
        self._delete_records(campaign_id)
        return True

    def _delete_records(self, campaign_id: str) -> None:
        for records in (self.batches, self.marks_, self.claims):
            delete_all(records, {"campaign_id": campaign_id})


def _marks(found: list[dict]) -> Marks:
    # The latest by event time, of the marks no newer control version has
    # overtaken: a staged event published again carries the time it went
    # out, after the user's next move, and an older version than it. Marks
    # without a version (an older campaigns or contacts replica's, in a
    # rolling upgrade) keep their time: a version did not outrank them. A
    # tie goes to the resume: a fan-out left running only lets the senders
    # park jobs, one stopped by mistake would wait for good.
    moves = [m for m in found if m["kind"] != "cancel"]
    newest = max((m.get("version") or 0 for m in moves), default=0)
    current = [m for m in moves if not m.get("version") or m["version"] == newest]
    latest = max(current, key=lambda m: (m["at"], m["kind"] == "resume"), default=None)
    return Marks(any(m["kind"] == "cancel" for m in found),
                 latest is not None and latest["kind"] == "pause")
