"""The tracking service's MongoDB repository.

Counting is exact under redelivery without transactions: every increment
belongs to one *marker* document whose `_id` names the fact ("campaign c
sent job j", "contact k opened c as a person", "open event e"). A counter is
incremented only by whoever inserted its marker; the marker is then marked
done. A crash between the two leaves a marker not done: whoever sees it
again rebuilds that campaign's counters from its markers (`recount`).
The worker counts whole batches (counting.py): its markers are inserted
done, tagged with the batch, whose intent document (`batches`) stays until
the batch's counts are written; a marker of a batch whose intent is still
there is treated as not done.

A batch writes its counts as documents of its own (`<campaign>|b|<batch>`,
and per hour), by insert: FerretDB 1.24 loses concurrent `$inc`s on one
document, a repair writes the same ids again without counting twice, and
nobody updates anyone else's document. The stats sum a campaign's
documents (older ones, per worker process or from a recount, included),
which the worker merges into fewer once they are final (merging.py).
"""
from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

from pymongo import ASCENDING, IndexModel, ReturnDocument, UpdateOne
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared import era_leases
from shared.mongo import IDS_PER_QUERY, as_utc, delete_all, find_by_ids, insert_new

INDEXES = {
    "markers": [IndexModel([("c", ASCENDING)])],
    # (c, _id): the stats read a campaign's documents in _id order (merging.py)
    "hourly": [IndexModel([("c", ASCENDING), ("hour", ASCENDING)]),
               IndexModel([("c", ASCENDING), ("_id", ASCENDING)])],
    "deliveries": [IndexModel([("campaign_id", ASCENDING)])],
    "campaigns": [],
    "counters": [IndexModel([("c", ASCENDING)]),
                 IndexModel([("c", ASCENDING), ("_id", ASCENDING)])],
    "soft_bounces": [],
    "pending_events": [],
    "batches": [],
    "merge_leases": [IndexModel([("lease", ASCENDING)])],
    "merged_parts": [IndexModel([("at", ASCENDING)])],
    "erased_contacts": [IndexModel([("at", ASCENDING)]), IndexModel([("account_id", ASCENDING)])],
}



def soft_bounce_key(account_id: str, contact_id: str) -> str:
    """A contact's soft-bounce tally's _id; every tally of an account starts
    with soft_bounce_key(account_id, "")."""
    return f"{account_id}|{contact_id}"

class TrackingStore:
    def __init__(self, db: Database):
        self.db = db

    # --------------------------------------------------------- campaigns
    def save_campaign(self, campaign_id: str, account_id: str, links: list[str],
                      at: datetime) -> None:
        self.db.campaigns.update_one(
            {"_id": campaign_id},
            {"$set": {"account_id": account_id, "links": links}, "$min": {"first_at": at}},
            upsert=True)

    def save_campaigns(self, campaigns: list[tuple[str, str, list[str], datetime]]) -> None:
        """save_campaign for many (campaign id, account id, links, time) at once."""
        _bulk(self.db.campaigns, [
            UpdateOne({"_id": campaign_id},
                      {"$set": {"account_id": account_id, "links": links},
                       "$min": {"first_at": at}}, upsert=True)
            for campaign_id, account_id, links, at in campaigns])

    def campaign(self, campaign_id: str) -> dict | None:
        return self.db.campaigns.find_one({"_id": campaign_id})

    def note_campaign_activity(self, campaign_id: str, account_id: str, at: datetime) -> datetime:
        """The campaign's first event time (the start of its hourly series)."""
        doc = self.db.campaigns.find_one_and_update(
            {"_id": campaign_id},
            {"$setOnInsert": {"account_id": account_id, "links": []}, "$min": {"first_at": at}},
            upsert=True, return_document=ReturnDocument.AFTER)
        return doc["first_at"]

    # -------------------------------------------------------- deliveries
    def save_delivery(self, job_id: str, account_id: str, campaign_id: str, contact_id: str,
                      sent_at: datetime, contact_revision: int | None = None) -> None:
        fields = {"account_id": account_id, "campaign_id": campaign_id, "contact_id": contact_id}
        if contact_revision is not None:  # 0 too: known, where a sender before it gave none
            fields["contact_revision"] = contact_revision
        self.db.deliveries.update_one({"_id": job_id},
                                      {"$set": fields, "$min": {"sent_at": sent_at}}, upsert=True)

    def save_deliveries(self,
                        deliveries: list[tuple[str, str, str, str, datetime, int | None]]) -> None:
        """save_delivery for many (job, account, campaign, contact, sent at,
        contact revision): one unordered insert (FerretDB updates one
        document at a time, ~0.65 ms each); the few already there
        (redelivery) are updated."""
        docs = [{"_id": job_id, "account_id": account_id, "campaign_id": campaign_id,
                 "contact_id": contact_id, "sent_at": sent_at,
                 **({"contact_revision": revision} if revision is not None else {})}
                for job_id, account_id, campaign_id, contact_id, sent_at, revision in deliveries]
        for doc in _already_there(self.db.deliveries, docs):
            self.save_delivery(doc["_id"], doc["account_id"], doc["campaign_id"],
                               doc["contact_id"], doc["sent_at"], doc.get("contact_revision"))

    def deliveries(self, job_ids) -> dict[str, dict]:
        """By job id."""
        return find_by_ids(self.db.deliveries, job_ids)

    def delivery(self, job_id: str) -> dict | None:
        return self.db.deliveries.find_one({"_id": job_id})

    # ----------------------------------------------------------- markers
    def insert_marker(self, marker_id: str, campaign_id: str, fields: list[str],
                      hour: datetime | None, extra: dict | None = None) -> dict | None:
        """Insert the marker; None if inserted, else the existing one."""
        doc = {"_id": marker_id, "c": campaign_id, "f": fields, "h": hour, "done": False,
               **(extra or {})}
        try:
            self.db.markers.insert_one(doc)
            return None
        except DuplicateKeyError:
            return self.db.markers.find_one({"_id": marker_id}) or doc

    def insert_markers(self, docs: list[dict]) -> dict[str, dict]:
        """Insert the markers (distinct ids); returns the ones that were
        there already, by id, as they are stored."""
        there = _already_there(self.db.markers, docs)
        stored = find_by_ids(self.db.markers, (doc["_id"] for doc in there))
        # A marker deleted since (an erasure renames them) was counted.
        return {doc["_id"]: stored.get(doc["_id"], {"_id": doc["_id"], "done": True})
                for doc in there}

    # ---------------------------------------------------------- batches
    # A batch's intent is written before its markers and deleted once its
    # counters are incremented: a marker of a batch whose intent is still
    # there may not be counted (the worker died in between).
    def begin_batch(self, batch_id: str, campaigns: list[tuple[str, str]]) -> None:
        # FerretDB 1.24 stores no nested arrays: one object per campaign.
        self.db.batches.insert_one({"_id": batch_id, "at": datetime.now(timezone.utc),
                                    "campaigns": [{"c": campaign_id, "a": account_id}
                                                  for campaign_id, account_id in campaigns]})

    def stale_batches(self, older_than: datetime, limit: int = 100) -> list[dict]:
        """Intents left open before `older_than` (their worker died): an
        intent without a time is from before times were written."""
        return list(self.db.batches.find({"$or": [{"at": {"$lt": older_than}},
                                                  {"at": {"$exists": False}}]}).limit(limit))

    def end_batch(self, batch_id: str) -> None:
        self.db.batches.delete_one({"_id": batch_id})

    def open_batch(self, batch_id: str) -> dict | None:
        return self.db.batches.find_one({"_id": batch_id})

    def marker(self, marker_id: str) -> dict | None:
        return self.db.markers.find_one({"_id": marker_id})

    def mark_done(self, marker_id: str) -> None:
        self.db.markers.update_one({"_id": marker_id}, {"$set": {"done": True}})

    def add_batch_counts(self, batch_id: str, totals: dict[str, tuple[str, Counter]],
                         hourly: dict[tuple[str, datetime], Counter]) -> None:
        """A batch's counts: {campaign: (account, counts)} and {(campaign,
        hour): counts}, each in a document of its own named after the batch,
        by insert. Written again by a repair (batch_counts), the same ids
        add nothing twice, and nobody else's counts are touched: a repair
        used to rebuild the whole campaign, deleting every worker's
        counters, and counts another worker added meanwhile were doubled
        or lost."""
        at = datetime.now(timezone.utc)  # when merging.py may take it as final
        counters = [{"_id": f"{campaign_id}|b|{batch_id}", "c": campaign_id,
                     "account_id": account_id, "at": at, **counts}
                    for campaign_id, (account_id, counts) in totals.items()]
        series = [{"_id": f"{hour_stem(campaign_id, hour)}|b|{batch_id}",
                   "c": campaign_id, "hour": hour, "at": at, **counts}
                  for (campaign_id, hour), counts in hourly.items()]
        # A late copy (a worker that outlived its batch's repair) of counts
        # merged and deleted since would count again: merging.py leaves a
        # mark of every part it deleted.
        merged = find_by_ids(self.db.merged_parts, [d["_id"] for d in counters + series])
        insert_new(self.db.counters, [d for d in counters if d["_id"] not in merged])
        insert_new(self.db.hourly, [d for d in series if d["_id"] not in merged])

    def batch_counts(self, batch_id: str, accounts: dict[str, str]
                     ) -> tuple[dict[str, tuple[str, Counter]], dict[tuple[str, datetime], Counter]]:
        """What a batch counted, from the markers it inserted (tagged with
        it): for a batch whose worker died before or while it wrote them."""
        totals: dict[str, tuple[str, Counter]] = {}
        hourly: dict[tuple[str, datetime], Counter] = {}
        for marker in self.db.markers.find({"b": batch_id}, {"c": 1, "f": 1, "h": 1}):
            campaign_id = marker["c"]
            totals.setdefault(campaign_id, (accounts.get(campaign_id, ""), Counter()))[1].update(
                marker["f"])
            series = [f for f in marker["f"] if not f.startswith("link_")]
            if marker.get("h") is not None and series:
                hourly.setdefault((campaign_id, marker["h"]), Counter()).update(series)
        return totals, hourly

    def recount(self, campaign_id: str, account_id: str) -> None:
        """Rebuild the campaign's counters and hourly series from its markers,
        while no merge runs (a merged document written after the rebuild
        would count its parts twice)."""
        owner = f"recount-{uuid.uuid4().hex}"
        while (lease := self.take_merge_lease(campaign_id, owner)) is None:
            time.sleep(0.2)
        try:
            self._recount(campaign_id, account_id)
        finally:
            self.release_merge_lease(lease, owner)

    def _recount(self, campaign_id: str, account_id: str) -> None:
        totals: Counter = Counter()
        per_hour: dict[datetime, Counter] = {}
        for marker in self.db.markers.find({"c": campaign_id}, {"f": 1, "h": 1}):
            totals.update(marker["f"])
            if marker.get("h") is not None:
                per_hour.setdefault(marker["h"], Counter()).update(
                    f for f in marker["f"] if not f.startswith("link_"))
        self._delete_marked(self.db.counters, campaign_id)
        self.db.counters.insert_one({"_id": f"{campaign_id}|recount", "c": campaign_id,
                                     "account_id": account_id, **totals})
        self._delete_marked(self.db.hourly, campaign_id)
        if per_hour:
            self.db.hourly.insert_many([
                {"_id": f"{campaign_id}|{hour.isoformat()}|recount", "c": campaign_id,
                 "hour": hour, **counts} for hour, counts in per_hour.items()])
        self.db.markers.update_many({"c": campaign_id, "done": False}, {"$set": {"done": True}})

    def _delete_marked(self, collection, campaign_id: str) -> None:
        """The campaign's documents deleted, each leaving a mark as a merge's
        parts do."""
        ids = [doc["_id"] for doc in collection.find({"c": campaign_id}, {"_id": 1})]
        self.mark_deleted(ids)
        delete_all(collection, {"_id": {"$in": ids}})

    def mark_deleted(self, ids: list[str]) -> None:
        """Counter documents about to be deleted (merged, or rebuilt by a
        recount): add_batch_counts does not write them again, so a late copy
        of a batch's counts does not count twice."""
        now = datetime.now(timezone.utc)
        insert_new(self.db.merged_parts, [{"_id": i, "at": now} for i in ids])

    # ---------------------------------------------------------- merging
    # A merger gives up at half of it (merging.py); a recount, which waits
    # for it inside the worker's poll loop, stays within max.poll.interval.
    MERGE_LEASE = timedelta(minutes=4)

    def take_merge_lease(self, campaign_id: str, owner: str) -> str | None:
        """The campaign's counters to merge or rebuild, alone (merging.py):
        the lease's id, or None when another has it."""
        now = datetime.now(timezone.utc)
        taken = era_leases.take(self.db.merge_leases, [campaign_id], owner, now,
                                now + self.MERGE_LEASE)
        return taken.get(campaign_id)

    def release_merge_lease(self, lease_id: str, owner: str) -> None:
        era_leases.give_back(self.db.merge_leases, [lease_id], owner, datetime.now(timezone.utc))

    # ------------------------------------------------------------- stats
    def counters(self, campaign_id: str) -> dict | None:
        """The campaign's counters summed over shards (None if never counted)."""
        total: Counter = Counter()
        account_id = None
        for doc in live(list(self.db.counters.find({"c": campaign_id}).sort("_id", ASCENDING))):
            account_id = doc.get("account_id", account_id)
            total.update(counts_of(doc))
        if account_id is None:
            return None
        return {"account_id": account_id, **total}

    def hourly(self, campaign_id: str) -> list[dict]:
        rows: dict[datetime, Counter] = {}
        for doc in live(list(self.db.hourly.find({"c": campaign_id}).sort("_id", ASCENDING))):
            rows.setdefault(doc["hour"], Counter()).update(counts_of(doc))
        return [{"hour": hour, **rows[hour]} for hour in sorted(rows)]

    # ------------------------------------------------------ soft bounces
    def add_soft_bounce(self, account_id: str, contact_id: str, job_id: str) -> int:
        """Distinct messages of this contact that soft-bounced (idempotent per job)."""
        doc = self.db.soft_bounces.find_one_and_update(
            {"_id": soft_bounce_key(account_id, contact_id)},
            {"$addToSet": {"jobs": job_id}, "$set": {"at": datetime.now(timezone.utc)}},
            upsert=True, return_document=ReturnDocument.AFTER)
        return len(doc.get("jobs", []))

    def forget_soft_bounces(self, contacts: set[tuple[str, str]]) -> None:
        """(account, contact) pairs a person opened or clicked mail of: the
        mailbox works, so its soft bounces so far (a full mailbox, a
        greylisting) no longer count towards a hard one. Kept, three of them
        over months made a reader who opens every mail a hard bounce."""
        keys = [soft_bounce_key(account, contact) for account, contact in contacts]
        for start in range(0, len(keys), IDS_PER_QUERY):
            self.db.soft_bounces.delete_many({"_id": {"$in": keys[start:start + IDS_PER_QUERY]}})

    # --------------------------------------- events waiting for Kafka
    def park_event(self, event_id: str, topic: str, key: str, body: dict) -> None:
        self.db.pending_events.replace_one({"_id": event_id},
                                           {"topic": topic, "key": key, "body": body},
                                           upsert=True)

    def parked_events(self, limit: int = 100) -> list[dict]:
        return list(self.db.pending_events.find().limit(limit))

    def unpark(self, event_ids: list[str]) -> None:
        if event_ids:
            self.db.pending_events.delete_many({"_id": {"$in": event_ids}})


def counts_of(doc: dict) -> dict[str, int]:
    """A counter document's counts: its integers (not its flags, hour or time)."""
    return {k: v for k, v in doc.items() if isinstance(v, int) and not isinstance(v, bool)}


def live(docs: list[dict]) -> list[dict]:
    """The documents that count: none a merged document among them names as
    its part (merging.py deletes the parts just after it writes it)."""
    merged = {part for doc in docs if doc.get("merged") for part in doc.get("parts", ())}
    return [doc for doc in docs if doc["_id"] not in merged]


def hour_stem(campaign_id: str, hour: datetime) -> str:
    """The start of the ids of a campaign's documents for an hour (a batch's,
    merging.py's): one spelling of the hour, whether it came from an event
    or a marker."""
    return f"{campaign_id}|{as_utc(hour).isoformat()}"



def _bulk(collection, operations: list) -> None:
    if operations:
        collection.bulk_write(operations, ordered=False)


def _already_there(collection, docs: list[dict]) -> list[dict]:
    """Insert the documents, unordered; returns those whose _id existed."""
    return [doc for doc, new in zip(docs, insert_new(collection, docs)) if not new]
