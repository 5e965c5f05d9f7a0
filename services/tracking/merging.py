"""Merging a campaign's counter documents into fewer.

Every batch that counts a campaign writes documents of its own (store.py:
`<campaign>|b|<batch>`, and one per hour), so a campaign whose opens trickle
in over days leaves one per poll that saw one: for a large campaign,
hundreds of thousands of documents for every stats request to sum. The
worker's sweep folds a campaign's final documents into one per campaign
(and per hour):

1. a lease on the campaign (shared/era_leases.py): one merger at a time,
   and a recount (store.recount, which rewrites all of them) waits for it.
   A merger stops once it has held the lease for half its length, so it
   never writes after another could have taken it over;
2. the parts: documents older than MIN_AGE or merged before, but none of
   a batch whose intent is still open (its repair writes it), nor of a
   campaign whose account is unknown or erased;
3. the merged document, their sum naming its parts, is inserted; then a
   mark of each part (`merged_parts`), then the parts are deleted.

The stats skip the parts named by a merged document they read (store.live),
so a merger that dies between the writes changes no figure, and the next
deletes those parts. A merged document's id sorts after every part it can
name (`|~|` and a generation one above its parts'), and the stats read in
_id order: a read that misses a merged document written meanwhile had read
its parts before they were deleted. A batch does not write a part that has
a mark (store.add_batch_counts): a late copy of one merged and deleted (a
worker that outlived its batch's repair) does not come back.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from typing import Callable

from services.tracking.store import TrackingStore, counts_of, hour_stem, live
from shared import era_leases
from shared.erased_accounts import ErasedAccounts
from shared.ids import worker_owner
from shared.mongo import IDS_PER_QUERY, as_utc, delete_all, find_by_ids
from shared.worker import every

log = logging.getLogger(__name__)

# Past the intents' STALE_BATCH (6 min) and its repair's sweep: a batch's
# documents no longer change once this old.
MIN_AGE = timedelta(minutes=30)
MIN_PARTS = 20           # fewer are left as they are
MAX_PARTS = IDS_PER_QUERY  # a merged document's parts, one `$in` each
MERGED = "|~|"           # after "|b|", "|recount" and any other part's id
# How long a deleted part's mark stops a late copy of it (a worker that
# outlived its batch's repair by this long is not expected).
MARKS_KEPT = timedelta(days=7)


class CounterMerger:
    def __init__(self, store: TrackingStore, owner: str | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 min_parts: int = MIN_PARTS):
        self.store = store
        self.owner = owner or f"{worker_owner()}-{uuid.uuid4().hex[:8]}"
        self.clock = clock
        self.min_parts = min_parts
        self._deadline = 0.0
        self._next_purge = 0.0

    def merge_all(self) -> int:
        """Every campaign with enough parts to merge; how many documents went."""
        self._forget_old()
        return sum(self.merge_campaign(c) for c in self._candidates())

    def _forget_old(self) -> None:
        # Once a day: every purge reads all the marks on FerretDB.
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + 24 * 3600
        delete_all(self.store.db.merged_parts, {"at": {"$lt": self.clock() - MARKS_KEPT}})
        era_leases.forget_old(self.store.db.merge_leases, self.clock())

    def merge_campaign(self, campaign_id: str) -> int:
        lease = self.store.take_merge_lease(campaign_id, self.owner)
        if lease is None:
            return 0
        self._deadline = time.monotonic() + self.store.MERGE_LEASE.total_seconds() / 2
        try:
            account_id = (self.store.campaign(campaign_id) or {}).get("account_id")
            return sum(self._merge(collection, campaign_id, account_id)
                       for collection in (self.store.db.counters, self.store.db.hourly))
        finally:
            self.store.release_merge_lease(lease, self.owner)

    def _candidates(self) -> list[str]:
        cutoff = self.clock() - MIN_AGE
        parts: Counter = Counter()
        for collection in (self.store.db.counters, self.store.db.hourly):
            for doc in collection.find({"merged": {"$ne": True}}, {"c": 1, "at": 1}):
                if _old(doc, cutoff):
                    parts[doc["c"]] += 1
        return [campaign_id for campaign_id, n in parts.items() if n >= self.min_parts]

    def _merge(self, collection, campaign_id: str, account_id: str | None) -> int:
        docs = list(collection.find({"c": campaign_id}))
        kept = live(docs)
        kept_ids = {doc["_id"] for doc in kept}
        finished = [doc["_id"] for doc in docs if doc["_id"] not in kept_ids]
        if finished:  # a merger died between its insert and its delete
            delete_all(collection, {"_id": {"$in": finished}})
        cutoff = self.clock() - MIN_AGE
        open_batches = set(find_by_ids(self.store.db.batches,
                                       [b for b in map(_batch_of, kept) if b]))
        groups: dict = defaultdict(list)  # hour (None for the totals) -> parts
        for doc in kept:
            if (doc.get("merged") or _old(doc, cutoff)) and _batch_of(doc) not in open_batches:
                groups[doc.get("hour")].append(doc)
        removed = len(finished)
        for hour, parts in groups.items():
            while len(parts) >= self.min_parts:
                chunk, parts = parts[:MAX_PARTS], parts[MAX_PARTS:]
                if not self._fold(collection, campaign_id, account_id, hour, chunk):
                    return removed
                removed += len(chunk) - 1
        return removed

    def _fold(self, collection, campaign_id: str, account_id: str | None, hour,
              parts: list[dict]) -> bool:
        """`account_id`: the campaign's, as its record says; else its parts'."""
        account_id = account_id or next(
            (p["account_id"] for p in parts if p.get("account_id")), None)
        if account_id is None or self._erased(account_id) or time.monotonic() > self._deadline:
            return False  # no account (its campaign gone with an erasure): left as it is
        stem = campaign_id if hour is None else hour_stem(campaign_id, hour)
        # One generation above its parts: the id sorts after every one of
        # them whatever the clocks of the pods that merged them.
        generation = 1 + max(_generation(p) for p in parts)
        merged_id = f"{stem}{MERGED}{generation:08d}{uuid.uuid4().hex}"
        ids = [p["_id"] for p in parts]
        total: Counter = Counter()
        for part in parts:
            total.update(counts_of(part))
        doc = {"_id": merged_id, "c": campaign_id, "merged": True, "parts": ids,
               "at": self.clock(), **total}
        if hour is None:
            doc["account_id"] = account_id
        else:
            doc["hour"] = hour
        collection.insert_one(doc)
        if self._erased(account_id):  # erased meanwhile: what it deleted stays deleted
            collection.delete_one({"_id": merged_id})
            return False
        self.store.mark_deleted(ids)   # first: a late copy of a part is not written again
        collection.delete_many({"_id": {"$in": ids}})
        return True

    def _erased(self, account_id: str | None) -> bool:
        return bool(account_id) and bool(ErasedAccounts(self.store.db).among([account_id]))


def _generation(doc: dict) -> int:
    """0 for a batch's part; a merged document's is in its id (not a field:
    the stats sum every integer of a document)."""
    _, merged, rest = doc["_id"].rpartition(MERGED)
    return int(rest[:8]) if merged else 0


def _batch_of(doc: dict) -> str | None:
    return doc["_id"].rsplit("|b|", 1)[1] if "|b|" in doc["_id"] else None


def _old(doc: dict, cutoff: datetime) -> bool:
    at = doc.get("at")
    return at is None or as_utc(at) < cutoff   # written before parts had a time: old


def start_merging_in_background(store: TrackingStore, seconds: float = 300.0):
    merger = CounterMerger(store)

    def merge_once():
        removed = merger.merge_all()
        if removed:
            log.info("campaign counters merged", extra={"documents": removed})
    return every("tracking-counter-merge", lambda: seconds, merge_once, first_wait=seconds)
