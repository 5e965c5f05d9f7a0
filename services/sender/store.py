"""The sender's own MongoDB database (sandesh_sender).

- `campaigns`: what campaigns.events said (frozen template, limits, status);
  written by the "sender-campaigns" consumer, read by every sender through
  a one-second cache, so a pause or cancel reaches every pod within seconds.
- `contacts`: unsubscribe / suppression / erasure state from contacts.events
  and tracking.events (ids only), checked at send time.
- `blocked_addresses`: salted address hashes suppressed for an account or
  platform-wide (contact.suppressed), checked against each job's address.
- `claims` and `deliveries`: who sends a job, then its final outcome
  (_id = job id). A job recorded sent is never sent again. `takeovers`:
  one marker per expired claim taken over, so only one sender takes it.
- `rate_windows`: per-campaign blocks of the rate limits' windows (see MongoWindowCounter).
- `domain_slots`: a campaign's per-domain concurrency below one transaction
  per sender (services/sender/domain_slots.py).

Only single-document atomic operations and unique _ids (FerretDB has no
transactions); every batch is a handful of round trips.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Iterable

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure
from pymongo.operations import IndexModel, ReplaceOne

from services.sender.domain import (CANCELLED, CONTACT_CHANGED, DEFERRED, FINAL, RELEASED, SENDING,
                                    TEST_SENDS, Campaign, Job, parked_job_id)
from shared.erased_accounts import ErasedAccounts
from shared.ids import unique_hex
from shared.mongo import as_utc, delete_all, find_by_ids, insert_new, retry_unreachable
from shared.pii import email_hash
from shared.privacy_answers import pseudonym

INDEXES = {
    "claims": [IndexModel([("campaign_id", 1)])],
    # A campaign's jobs due by now (ParkedJobs.take), and a contact's for
    # its access export and erasure, read through an index rather than the
    # whole collection (on FerretDB the first key alone is pushed down).
    "parked_jobs": [IndexModel([("campaign_id", 1), ("due_at", 1)]),
                    IndexModel([("contact_id", 1)])],
    "held_jobs": [IndexModel([("ask_again_at", 1)]), IndexModel([("account_id", 1)])],
    "rate_windows": [IndexModel([("expires_at", 1)]), IndexModel([("window", 1)])],
    "blocked_addresses": [IndexModel([("account_id", 1)])],
    "domain_slots": [IndexModel([("lease", 1)])],
}

BLOCKING_STATUSES = ("bounced", "complained", "erased")
ERASED_ADDRESS = "erased@invalid"  # what an erased contact's parked jobs carry instead


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class CampaignStore:
    def __init__(self, db: Database, cache_seconds: float = 1.0, clock=time.monotonic):
        self.col = db["campaigns"]
        self.erased = ErasedAccounts(db, cache_seconds, clock)
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, Campaign | None]] = {}

    # -- written by the campaigns.events consumer -------------------------
    def launched(self, account_id: str, data: dict) -> None:
        # A relaunch (resume after a crash, or the same event redelivered)
        # keeps a pause or cancel that came after it; the status changes
        # only through paused / resumed / cancelled.
        self.col.update_one({"_id": data["campaign_id"]},
                            {"$set": {"account_id": account_id, "launched": data,
                                      "updated_at": utcnow()},
                             "$setOnInsert": {"status": SENDING}}, upsert=True)

    def set_status(self, campaign_id: str, status: str, version: int | None = None) -> None:
        """`version`: a pause's or resume's control version. One older than
        the last applied is dropped (a staged event published again after
        the user's next move); one without (published before versions) is
        applied as it comes."""
        update: dict[str, Any] = {"$set": {"updated_at": utcnow()}}
        if status == CANCELLED:
            update["$set"]["status"] = CANCELLED
            self.col.update_one({"_id": campaign_id}, update, upsert=True)
            return
        # a cancelled campaign stays cancelled
        update["$set"]["status"] = status
        query: dict[str, Any] = {"_id": campaign_id, "status": {"$ne": CANCELLED}}
        if version is not None:
            update["$set"]["control_version"] = version
            query["$or"] = [{"control_version": {"$exists": False}},
                            {"control_version": {"$lt": version}}]
        self.col.update_one(query, update)
        self.col.update_one({"_id": campaign_id},
                            {"$setOnInsert": {"status": status,
                                              **({"control_version": version} if version else {})}},
                            upsert=True)

    # -- read by the senders ----------------------------------------------
    def erased_accounts(self, account_ids: Iterable[str]) -> set[str]:
        """Deleted accounts (marked by the privacy handler): their queued
        jobs are dropped, since a job whose campaign is unknown would hold
        its partition, everyone's jobs behind it."""
        return self.erased.among(account_ids)

    def get_many(self, campaign_ids: Iterable[str]) -> dict[str, Campaign | None]:
        now = self.clock()
        found, missing = {}, []
        for cid in set(campaign_ids):
            cached = self._cache.get(cid)
            if cached and now - cached[0] < self.cache_seconds:
                found[cid] = cached[1]
            else:
                missing.append(cid)
        if missing:
            docs = find_by_ids(self.col, missing)
            for cid in missing:
                doc = docs.get(cid)
                campaign = None
                if doc and doc.get("launched"):
                    campaign = Campaign.from_launched(doc["account_id"], doc["launched"],
                                                      doc.get("status", SENDING))
                    # Not known yet is not cached: its jobs come back for it
                    # within 0.1 s (Engine), and its launch may be written by then.
                    self._cache[cid] = (now, campaign)
                found[cid] = campaign
        return found


class ContactStateStore:
    """What the send-time check knows of contacts: per contact id (lists
    unsubscribed from, all lists, suppressed, status) and per salted address
    hash (suppressed for an account, or platform-wide for every account).

    Unsubscribes and complaints arrive twice, from tracking.events and later
    from contacts.events, and Kafka keeps no order across topics: a change
    carrying its event time is applied only if no later change of the same
    list (or status) is recorded, so a late or replayed unsubscribe never
    undoes a re-subscription that came after it.

    Without `salt`, jobs are checked by contact id only."""

    def __init__(self, db: Database, salt: str | None = None):
        self.col = db["contacts"]
        self.addresses = db["blocked_addresses"]
        self.salt = salt

    # The owner's changes (from contacts.events and tracking.events, whose
    # account is the contact's) record that account, so its erasure finds
    # the state; a privacy request's mark, which any account can place on
    # any id, never does.
    def unsubscribed(self, account_id: str, contact_id: str, list_id: str | None,
                     at: datetime | None = None) -> None:
        if list_id is None:
            self._change(account_id, contact_id, "all", at, {"$set": {"all_lists": True}})
        else:
            self._change(account_id, contact_id, f"list:{list_id}", at,
                         {"$addToSet": {"lists": list_id}})

    def subscribed(self, account_id: str, contact_id: str, list_id: str | None,
                   at: datetime | None = None) -> None:
        # Only a contact with a state is updated: every import subscribes, and
        # a document per contact would only grow what the send-time check reads.
        if list_id is None:
            self._change(account_id, contact_id, "all", at, {"$set": {"all_lists": False}},
                         upsert=False)
        else:
            self._change(account_id, contact_id, f"list:{list_id}", at,
                         {"$pull": {"lists": list_id}}, upsert=False)
            # A subscription after an unsubscribe from everything (a logged
            # re-consent: contacts announces no list-less subscribe) ends it;
            # the other lists stay blocked one by one, as contacts
            # unsubscribed each of them too. all_lists was never cleared,
            # and every job of a re-consented contact was skipped.
            self._change(account_id, contact_id, "all", at, {"$set": {"all_lists": False}},
                         upsert=False)

    def suppressed(self, account_id: str, contact_id: str) -> None:
        self.col.update_one({"_id": contact_id},
                            _owned({"$set": {"suppressed": True}}, account_id), upsert=True)

    # A privacy request names its contact id as the caller gave it: its
    # erasure or restriction holds for the requesting account's jobs only,
    # so no account can silence another's contact.
    def erased_by(self, account_id: str, contact_id: str) -> None:
        self.col.update_one({"_id": contact_id}, {"$addToSet": {"erased_by": account_id}},
                            upsert=True)

    def restricted_by(self, account_id: str, contact_id: str) -> None:
        self.col.update_one({"_id": contact_id}, {"$addToSet": {"restricted_by": account_id}},
                            upsert=True)

    def unsuppressed(self, account_id: str, contact_id: str) -> None:
        self.col.update_one({"_id": contact_id},
                            _owned({"$unset": {"suppressed": ""}}, account_id))

    def revised(self, account_id: str, contact_id: str, revision: int) -> None:
        """The contact's address, name or fields changed (contact.updated):
        a job read before `revision` is stale. Upserted, like a suppression:
        a job fanned out before the change may be queued or parked."""
        self.col.update_one({"_id": contact_id},
                            _owned({"$max": {"revision": revision}}, account_id), upsert=True)

    def status(self, account_id: str, contact_id: str, status: str,
               at: datetime | None = None) -> None:
        self._change(account_id, contact_id, "status", at, {"$set": {"status": status}})

    def held_for(self, account_id: str, contact_id: str) -> dict:
        """What the send-time check holds on the contact for this account (an
        access export): the owner's state (lists unsubscribed from, status,
        suppression) only when the contact is this account's, and this
        account's own marks."""
        state = self.col.find_one({"_id": contact_id}) or {}
        held = {}
        if state.get("account_id") == account_id:
            held = {key: state[key] for key in ("status", "suppressed", "all_lists", "lists")
                    if key in state}
        for mark in ("erased_by", "restricted_by"):
            if account_id in state.get(mark, ()):
                held[mark.removesuffix("_by")] = True
        return held

    def forget_account(self, account_id: str) -> None:
        """An erased account: the states of its contacts go, and so do its
        privacy marks on any other id (they only held its own jobs back)."""
        delete_all(self.col, {"account_id": account_id})
        marked = [d["_id"] for d in self.col.find(
            {"$or": [{"erased_by": account_id}, {"restricted_by": account_id}]}, {"_id": 1})]
        for mark in ("erased_by", "restricted_by"):
            self.col.update_many({mark: account_id}, {"$pull": {mark: account_id}})
        # A state that held nothing but that account's marks is empty now.
        empty = [d["_id"] for d in self.col.find({"_id": {"$in": marked}})
                 if not set(d) - {"_id", "erased_by", "restricted_by"}
                 and not d.get("erased_by") and not d.get("restricted_by")]
        if empty:
            delete_all(self.col, {"_id": {"$in": empty}})

    def _change(self, account_id: str, contact_id: str, what: str, at: datetime | None,
                update: dict, upsert: bool = True) -> None:
        query: dict[str, Any] = {"_id": contact_id}
        update = _owned(update, account_id)
        if at is not None:
            stamp = f"changed_at.{what}"
            query["$or"] = [{stamp: {"$exists": False}}, {stamp: {"$lte": at}}]
            update = {**update, "$set": {**update.get("$set", {}), stamp: at}}
        try:
            self.col.update_one(query, update, upsert=upsert)
        except DuplicateKeyError:
            pass  # the contact has a later change of this list or status: keep it

    def address_suppressed(self, hash_: str, account_id: str | None, reason: str) -> None:
        """account_id None: platform-wide, every account's jobs to the address."""
        self.addresses.update_one(
            {"_id": _address_key(hash_, account_id)},
            {"$setOnInsert": {"account_id": account_id, "reason": reason, "at": utcnow()}},
            upsert=True)

    def address_unsuppressed(self, hash_: str, account_id: str) -> None:
        """The account's own block only: a platform-wide one stays."""
        self.addresses.delete_one({"_id": _address_key(hash_, account_id)})

    def blocked(self, jobs: list[Job]) -> dict[str, str]:
        """job id -> why it must not be sent as it is, for the jobs whose
        contact unsubscribed, was suppressed, bounced, complained or was
        erased (or withdrawn: gone when contacts was asked for it again),
        whose address is suppressed for their account or platform-wide, or
        (CONTACT_CHANGED) whose contact changed after the job was read. A
        test send has no contact, and goes to the account's own people even
        when its list suppressed them; but not to an address suppressed
        platform-wide: someone who complained or asked to be erased."""
        if not jobs:
            return {}
        contacts = [j for j in jobs if not j.test]
        states = find_by_ids(self.col, list({j.contact_id for j in contacts}))
        reasons = {}
        for job in contacts:
            reason = _contact_reason(job, states.get(job.contact_id))
            if reason:
                reasons[job.job_id] = reason
        reasons.update(self._blocked_addresses([j for j in jobs if j.job_id not in reasons]))
        return reasons

    def erased_jobs(self, jobs: list[Job]) -> set[str]:
        """The ids of the jobs whose contact their account erased (a test
        send has none): the erasure marks this state before it rewrites
        what the sender recorded, so a record written after it is found
        here (Engine._forget_erased_since)."""
        contacts = [j for j in jobs if not j.test]
        if not contacts:
            return set()
        states = find_by_ids(self.col, list({j.contact_id for j in contacts}))
        return {j.job_id for j in contacts
                if j.account_id in (states.get(j.contact_id) or {}).get("erased_by", ())}

    def _blocked_addresses(self, jobs: list[Job]) -> dict[str, str]:
        if not self.salt or not jobs:
            return {}
        keys = {}
        for job in jobs:
            hash_ = email_hash(job.email, self.salt)  # job.email is contacts' normalised form
            own = () if job.test else (_address_key(hash_, job.account_id),)
            keys[job.job_id] = (_address_key(hash_, None), *own)
        wanted = list({key for pair in keys.values() for key in pair})
        found = {d["_id"] for d in self.addresses.find({"_id": {"$in": wanted}}, {"_id": 1})}
        return {job_id: "suppressed" for job_id, pair in keys.items() if found.intersection(pair)}


def _owned(update: dict, account_id: str) -> dict:
    """The update, recording the contact's account (none for a platform-wide
    suppression, whose event names no account)."""
    if not account_id:
        return update
    return {**update, "$set": {**update.get("$set", {}), "account_id": account_id}}


def _address_key(hash_: str, account_id: str | None) -> str:
    return f"{'platform' if account_id is None else account_id}:{hash_}"


def _contact_reason(job: Job, state: dict | None) -> str | None:
    if job.withdrawn:
        return "erased"
    if not state:
        return None
    if job.account_id in state.get("erased_by", ()):
        return "erased"
    if state.get("suppressed") or job.account_id in state.get("restricted_by", ()):
        return "suppressed"
    if state.get("status") in BLOCKING_STATUSES:
        return state["status"]
    left = state.get("lists", ())
    if state.get("all_lists") or (job.list_id and job.list_id in left) \
            or (job.via_list_ids and all(list_id in left for list_id in job.via_list_ids)):
        return "unsubscribed"
    if state.get("account_id") == job.account_id \
            and state.get("revision", 0) > job.contact_revision:
        return CONTACT_CHANGED
    return None


class DeliveryStore:
    """Claims and outcomes, written with inserts and deletes only: FerretDB
    (SQLite) inserts 500 documents in ~20-40 ms but updates one document at a
    time (~0.65 ms each), and no update is a compare-and-set there.

    `claims` (_id = job id): who is sending the job since when; deleted when
    the job is released, kept once it is final. A deferred job's claim is
    kept, and marked deferred (with the attempt deferred) once its retry is
    out (`deferred`): a copy of that attempt read again (its partition
    re-read from a job before it, or a copy on another partition, read by
    another sender) then finds its retry already on its way instead of being
    sent again at once, and the retry takes the claim over.
    `deliveries` (_id = job id): the final outcome and the event announcing
    it; a job with one is never sent again.
    """

    def __init__(self, db: Database, owner: str, lease_seconds: float):
        self.claims = db["claims"]
        self.takeovers = db["takeovers"]
        self.col = db["deliveries"]
        self.owner = owner
        self.lease_seconds = lease_seconds

    def claim(self, jobs: list[Job]) -> tuple[list[Job], dict[str, dict], list[Job]]:
        """Claim the jobs: (claimed, records of jobs already finished by
        job id, jobs a live sender holds right now). A job deferred at its
        attempt (or a later one) counts as finished, with a record that
        announces nothing: its retry is out already."""
        # Claims outlive the job (kept when it is final), so an insert that
        # goes through proves the job was never claimed: one round trip.
        finished: dict[str, dict] = {}
        todo = jobs
        now = utcnow()
        docs = [{"_id": j.job_id, "owner": self.owner, "claimed_at": now, "attempt": j.attempt,
                 "campaign_id": j.campaign_id} for j in todo]
        conflicts = {doc["_id"] for doc, new in zip(docs, insert_new(self.claims, docs))
                     if not new}
        claimed = [j for j in todo if j.job_id not in conflicts]
        held = []
        if conflicts:
            finished.update(find_by_ids(self.col, conflicts))
            existing = find_by_ids(self.claims, conflicts)
            expired = now.timestamp() - self.lease_seconds
            for job in (j for j in todo if j.job_id in conflicts and j.job_id not in finished):
                doc = existing.get(job.job_id)
                if doc is not None and doc.get("deferred") and job.attempt <= doc["attempt"]:
                    finished[job.job_id] = {"state": DEFERRED, "attempt": doc["attempt"]}
                    continue
                if doc is not None and job.attempt <= doc.get("deferred_attempt", -1):
                    # a copy of an attempt whose retry holds the claim (or held
                    # it, and died): the retry goes on, not this copy
                    finished[job.job_id] = {"state": DEFERRED, "attempt": doc["deferred_attempt"]}
                    continue
                takeable = doc is not None and (doc.get("deferred")
                                                or doc["claimed_at"].timestamp() < expired)
                if takeable and self._take_over(job, doc, now):
                    claimed.append(job)
                else:
                    held.append(job)  # a live sender has it (or it was just released)
        return claimed, finished, held

    def deferred(self, jobs: list[Job]) -> None:
        """These jobs were deferred and their retries are out (flushed to
        send.retry): their claims, this sender's since they were sent (record
        keeps them), are marked so. Marked only then, so a copy that finds
        the mark may be dropped; until then a copy meets a live claim and
        waits (claimed elsewhere). Given back at record, the claim was gone
        until the mark, for the rest of the batch: another sender reading a
        copy of the same attempt claimed it afresh and sent it again. A crash
        (or a failure here) before the mark leaves the claim to run out its
        lease, and a copy is sent again then, as after any crash. One update
        of claims only this sender writes while they are live."""
        if jobs:
            self.claims.update_many({"_id": {"$in": [j.job_id for j in jobs]},
                                     "owner": self.owner, "deferred": {"$ne": True}},
                                    {"$set": {"deferred": True, "claimed_at": utcnow()}})

    def _take_over(self, job: Job, doc: dict, now: datetime) -> bool:
        """Claim a job whose sender died mid-send (its lease ran out): the
        message may have gone out, and goes again with the same Message-ID.
        Or the retry of a deferred job, whose claim is marked deferred.

        Two senders may find the same expired claim. A conditional update is
        no compare-and-set on FerretDB 1.24 (it reads, then writes the whole
        document), so the one that takes it over is the one whose insert of a
        marker named after that claim (job, owner, time) goes through."""
        marker = f"{job.job_id}:{doc['owner']}:{doc['claimed_at'].timestamp():.6f}"
        if not self._mark_takeover(job.job_id, marker, now):
            return False  # another sender is taking it over
        taken = {"owner": self.owner, "claimed_at": now, "attempt": job.attempt,
                 "previous_owner": doc["owner"]}
        if doc.get("deferred"):  # stands again if this copy goes back unsent (record)
            taken["deferred_attempt"] = doc["attempt"]
        self.claims.update_one({"_id": job.job_id},
                               {"$set": taken, "$unset": {"deferred": ""}})
        return True

    def _mark_takeover(self, job_id: str, marker: str, now: datetime) -> bool:
        """Whether this sender's marker for the takeover went in. A marker
        whose taker did not write the claim within a lease (it died, or the
        database failed between the two writes) is followed by the next
        generation of it: every later takeover met that marker and the job
        was held as claimed elsewhere until the marker's retention ran out."""
        for generation in range(1, 10):
            name = marker if generation == 1 else f"{marker}#{generation}"
            try:
                self.takeovers.insert_one({"_id": name, "job_id": job_id, "owner": self.owner,
                                           "taken_at": now})
                return True
            except DuplicateKeyError:
                other = self.takeovers.find_one({"_id": name})
            if other is None:
                return False  # swept meanwhile: the claim is looked at again later
            if as_utc(other["taken_at"]).timestamp() > now.timestamp() - self.lease_seconds:
                return other["owner"] == self.owner  # ours (its claim write failed), or live
        return False

    def record(self, outcomes: list[tuple[str, str, dict]], patience: float = 0.0) -> None:
        """(job id, state, fields) for jobs this sender claimed: a final
        state is stored; released ones give their claim back; deferred ones
        keep it until their retries are out (`deferred`).

        The messages are out already: if the database is unreachable, keep
        trying for `patience` seconds before raising. A batch that fails here
        is sent again after the lease (same Message-ID), so waiting out a
        short outage (a restart, a primary election) saves those duplicates.
        Both writes are idempotent, so a retry after a lost answer is safe."""
        final = [{"_id": job_id, "state": state, "owner": self.owner, "updated_at": utcnow(),
                  **fields}
                 for job_id, state, fields in outcomes if state in FINAL]
        give_back = [job_id for job_id, state, _ in outcomes
                     if state not in FINAL and state != DEFERRED]
        released = [job_id for job_id, state, _ in outcomes if state == RELEASED]

        def write():
            insert_new(self.col, final)  # one already there: final before (a re-send after a crash)
            if released:
                # A retry that took over a deferred claim and goes back
                # unsent: the deferral stands again. Deleted, the claim let
                # a copy of the deferred attempt (behind a hold elsewhere)
                # be claimed afresh and sent ahead of the retry's backoff.
                self.claims.update_many(
                    {"_id": {"$in": released}, "owner": self.owner,
                     "deferred_attempt": {"$exists": True}},
                    {"$set": {"deferred": True}, "$rename": {"deferred_attempt": "attempt"}})
            if give_back:
                self.claims.delete_many({"_id": {"$in": give_back}, "owner": self.owner,
                                         "deferred": {"$ne": True}})

        retry_unreachable(write, patience)

    def get(self, job_id: str) -> dict | None:
        return self.col.find_one({"_id": job_id})

    def forget_contacts(self, job_ids: Iterable[str]) -> None:
        """These jobs' records as an erasure leaves them (privacy.erase),
        each under a pseudonym of its own."""
        for job_id in job_ids:
            self.col.update_one({"_id": job_id}, as_erased())


def as_erased() -> dict:
    """The update that leaves delivery records as an erasure does: the
    contact id a fresh pseudonym, no recipient domain, no SMTP reply."""
    return {"$set": {"event.data.contact_id": pseudonym()},
            "$unset": {"event.data.recipient_domain": "", "smtp_reply": "", "compose_error": ""}}


class ParkedJobs:
    """Jobs set aside so that they do not hold their partitions (and every
    other campaign's jobs behind them): a paused campaign's, until it is
    resumed or cancelled, a rate-limited campaign's beyond what its
    window (or hourly quota) grants, and retries not due yet (test sends'
    among them, under TEST_SENDS), until `due_at`. They go back on
    send.jobs from here (Engine.unpark), a limited campaign's at its pace.
    Like the send topics, they carry the recipient's address: they are
    deleted as they go back, and with the contact on erasure."""

    def __init__(self, db: Database):
        self.col = db["parked_jobs"]

    def park(self, jobs: list[Job], erased: set[str] | frozenset[str] = frozenset(),
             due_at: dict[str, datetime] | None = None) -> None:
        """`erased`: ids of jobs whose contact was erased, parked without
        the recipient (skipped when they go back). `due_at`: job id -> the
        earliest it may go back (a job not in it: as soon as its campaign
        is not paused).

        Every copy of a job parked is a document of its own (`<job id>:<the
        send.job event's id>`), and `remove` deletes exactly the documents
        taken. A record read again (behind a job held in its partition)
        is the same event, and parks nothing more. One document a job,
        a copy parked again while another sender put the job back (whose
        cache had the campaign resumed, reading the very copy put back) had
        to be written over the document being removed: FerretDB, whose
        deletes and updates read and then write by _id, could apply the
        remove after the park, and the job was gone, its copy settled as
        parked (a campaign stuck at 599 of 600 in CI). Copies of a job
        parked twice both go back, and its claim lets one through; a retry
        parked beside an older attempt goes back beside it, and the older
        finds the deferral."""
        due_at = due_at or {}
        docs = [{"_id": f"{j.job_id}:{j.event_id or unique_hex()}", "job_id": j.job_id,
                 "campaign_id": TEST_SENDS if j.test else j.campaign_id,
                 "account_id": j.account_id,
                 "contact_id": j.contact_id, "parked_at": utcnow(),
                 **({"due_at": due_at[j.job_id]} if j.job_id in due_at else {}),
                 "data": {**j.copy_data(), "attempt": j.attempt,
                          **({"recipient": {"email": ERASED_ADDRESS}} if j.job_id in erased
                             else {})}} for j in jobs]
        insert_new(self.col, docs)  # a clash: this copy is parked already

    def campaigns(self) -> list[str]:
        return self.col.distinct("campaign_id")

    def take(self, campaign_id: str, limit: int = 1000, exclude: list[str] = (),
             due_by: datetime | None = None) -> list[dict]:
        """Up to `limit` of the campaign's parked jobs; with `due_by`, only
        those due by then (or due whenever the campaign goes on)."""
        query: dict[str, Any] = {"campaign_id": campaign_id}
        if exclude:
            query["_id"] = {"$nin": list(exclude)}
        if due_by is not None:
            query["$or"] = [{"due_at": {"$exists": False}}, {"due_at": {"$lte": due_by}}]
        return list(self.col.find(query).limit(limit))

    def remove(self, docs: list[dict]) -> None:
        """The parked documents put back, as taken (by _id: see park).

        A document parked before 2026-12-07 (named by its job id) is
        deleted only as it was taken: during a rolling upgrade an older
        sender still writes a later attempt, or a copy parked anew, over
        it, and that must stay to go back next."""
        current = [doc["_id"] for doc in docs if "job_id" in doc]
        legacy = [_legacy_as_taken(doc) for doc in docs if "job_id" not in doc]
        if current:
            self.col.delete_many({"_id": {"$in": current}})
        if legacy:   # by _id first: FerretDB reads the table for a filter that is not
            self.col.delete_many({"_id": {"$in": [taken["_id"] for taken in legacy]},
                                  "$or": legacy})

    def held_for(self, account_id: str, contact_id: str) -> list[dict]:
        """An access export: the contact's parked jobs, with the recipient
        as the fan-out gave it (address, name, merge fields)."""
        return [{"job_id": parked_job_id(job),
                 "campaign_id": (job.get("data") or {}).get("campaign_id", job.get("campaign_id")),
                 "parked_at": job["parked_at"].isoformat() if job.get("parked_at") else None,
                 "recipient": (job.get("data") or {}).get("recipient")}
                for job in self.col.find({"account_id": account_id, "contact_id": contact_id})]

    def forget_recipient(self, account_id: str, contact_id: str) -> None:
        """An erasure: the address goes now; the job stays parked, to be
        skipped when it goes back (the contact is erased by then)."""
        self.col.update_many({"account_id": account_id, "contact_id": contact_id},
                             {"$set": {"data.recipient": {"email": ERASED_ADDRESS}}})

    def forget_account(self, account_id: str) -> None:
        delete_all(self.col, {"account_id": account_id})


def _legacy_as_taken(doc: dict) -> dict:
    """A filter of a legacy parked document as it was taken, not as an
    older sender rewrote it since (its attempt, its parked_at)."""
    taken = {"_id": doc["_id"]}
    if "attempt" in doc.get("data", {}):
        taken["data.attempt"] = doc["data"]["attempt"]
    if "parked_at" in doc:
        taken["parked_at"] = doc["parked_at"]
    return taken


class HeldJobs:
    """Jobs given back for contacts to send again (delivery.held), until its
    answer arrives: the held event was the job's only copy, and a contacts
    worker that is down, or too old to know the event, never answers. Ids
    only. Asked again after a while (Engine.ask_contacts_again).

    Each hold has a token, which delivery.held carries and the answer
    echoes: one answer is taken per hold, however many times it was asked
    for (an answer only slow comes once more for each ask, from each
    replica that asked) and however late a copy of an older hold's answer
    comes."""

    def __init__(self, db: Database):
        self.col = db["held_jobs"]

    def hold(self, jobs: list[Job], ask_again_at: datetime) -> list[dict]:
        """A new hold of each job, replacing one still open (a job given back
        again: the open hold's answers are late now). The documents are what
        delivery.held says of each job."""
        docs = [{"_id": j.job_id, "account_id": j.account_id, "campaign_id": j.campaign_id,
                 "contact_id": j.contact_id, "list_id": j.list_id, "attempt": j.attempt,
                 **({"via_list_ids": list(j.via_list_ids)} if j.via_list_ids else {}),
                 "hold": unique_hex(), "asks": 1, "ask_again_at": ask_again_at} for j in jobs]
        if docs:
            self.col.bulk_write([ReplaceOne({"_id": doc["_id"]}, doc, upsert=True)
                                 for doc in docs], ordered=False)
        return docs

    def open_holds(self, job_ids: Iterable[str]) -> dict[str, str | None]:
        """The open holds of these jobs: job id -> its hold's token (None
        for a hold made before tokens)."""
        return {job_id: doc.get("hold") for job_id, doc in find_by_ids(self.col, job_ids).items()}

    def close(self, tokens: dict[str, str]) -> None:
        """The answers were taken: their holds end, and later copies of the
        answers are dropped. A hold opened since (the answer was stale
        again) has another token and stays."""
        for job_id, token in tokens.items():
            self.col.delete_one({"_id": job_id, "hold": token})

    def answered(self, job_ids: list[str]) -> None:
        """Answers from a contacts that echoes no token: each closes its job's
        hold, as before there were tokens."""
        self.col.delete_many({"_id": {"$in": job_ids}})

    def due(self, now: datetime, limit: int = 500) -> list[dict]:
        return list(self.col.find({"ask_again_at": {"$lte": now}}).limit(limit))

    def asked_again(self, job_id: str, ask_again_at: datetime) -> None:
        self.col.update_one({"_id": job_id},
                            {"$set": {"ask_again_at": ask_again_at}, "$inc": {"asks": 1}})

    def forget_account(self, account_id: str) -> None:
        delete_all(self.col, {"account_id": account_id})


class MongoWindowCounter:
    """throttle.WindowCounter over `rate_windows`, exact across senders.

    A window's limit is cut into at most BLOCKS blocks; a sender takes whole
    blocks by inserting `<window>#<block number>` (a unique _id: one taker
    per block) and spends what it does not use of them on its next batches
    in the same window. Inserts rather than one `$inc`, because FerretDB 1.x
    loses concurrent `$inc`s (measured: 200 concurrent increments left 25),
    which let two senders grant together nearly twice the limit. At most
    one block per sender goes unused in a window (it errs on the slow side).
    """

    BLOCKS = 64

    def __init__(self, db: Database):
        self.col = db["rate_windows"]
        self._left: dict[str, tuple[int, float]] = {}  # window -> (unused, expires_at)
        self._last_sweep = 0.0

    def _block_size(self, limit: int, scale: int | None = None) -> int:
        """Blocks cut so that BLOCKS of them cover `scale` (the limit by
        default): a minute of a rolling hour is cut as a 60th of the hour,
        whatever is left of the hour in it."""
        return -(-(scale or limit) // self.BLOCKS)  # ceil

    def reserve(self, key: str, wanted: int, limit: int, expires_at: float,
                scale: int | None = None) -> int:
        size = self._block_size(limit, scale)
        left = self._left.get(key, (0, expires_at))[0]
        granted = min(wanted, left)
        left -= granted
        block = None
        while granted < wanted:
            if block is None:
                block = self.col.count_documents({"window": key})
            count = min(-(-(wanted - granted) // size), -(-limit // size) - block)
            if count <= 0:
                break
            numbers = range(block, block + count)
            for number in self._take(key, numbers, expires_at):
                capacity = min(size, limit - number * size)
                use = min(capacity, wanted - granted)
                granted, left = granted + use, left + capacity - use
            block += count
        self._left[key] = (left, expires_at)
        self._sweep()
        return granted

    def left(self, key: str, limit: int, scale: int | None = None) -> int:
        size = self._block_size(limit, scale)
        unused = self._left.get(key, (0, 0.0))[0]
        # blocks are taken lowest number first, and only the last is short
        return unused + max(0, limit - self.col.count_documents({"window": key}) * size)

    def taken(self, keys: list[str], scale: int) -> int:
        """What was taken of these windows, blocks cut for `scale`: whole
        blocks, though a sender may have used only part of its last one of
        each (it errs on the slow side, by a block a window and sender)."""
        if not keys:
            return 0
        return self.col.count_documents({"window": {"$in": keys}}) * self._block_size(scale)

    def _take(self, key: str, numbers: range, expires_at: float) -> list[int]:
        """The block numbers this sender got (others may hold some already)."""
        at = datetime.fromtimestamp(expires_at, timezone.utc)
        docs = [{"_id": f"{key}#{n}", "window": key, "expires_at": at} for n in numbers]
        return [n for n, new in zip(numbers, insert_new(self.col, docs)) if new]

    def _sweep(self) -> None:
        # FerretDB has no TTL index: expired windows are deleted by hand.
        if time.monotonic() - self._last_sweep > 60:
            self._last_sweep = time.monotonic()
            delete_all(self.col, {"expires_at": {"$lt": utcnow()}})
            now = time.time()
            self._left = {k: v for k, v in self._left.items() if v[1] > now}


def ensure_indexes(db: Database) -> None:
    from shared.mongo import ensure_indexes as ensure
    ensure(db, INDEXES)
    # (campaign_id, due_at) took its place on 2026-12-07: one index less to
    # write at every park.
    try:
        db["parked_jobs"].drop_index("campaign_id_1")
    except OperationFailure:
        pass  # not there (a new database, or another sender dropped it)
