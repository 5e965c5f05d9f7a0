"""Retention of tracking's raw data (FerretDB 1.24 has no TTL index: the
worker deletes explicitly, on a schedule).

For every campaign first seen more than SANDESH_TRACKING_RETENTION_DAYS ago:
- its delivery records (job -> contact id, send time, last click) go;
- its markers (one per open, click, bounce... and per contact for the
  unique counts) are folded into "baseline" markers that hold only field
  names, in chunks, then deleted. The counters are untouched, and a recount
  from the markers (store.recount) still finds the same totals.
What stays: the counters and the hourly series (aggregates, no contact id).
Soft-bounce tallies (per contact id) not added to for as long go too: the
next soft bounce of that contact starts a new tally.

A late open or click of a folded campaign still counts in the totals; its
"unique" verdict no longer knows the contact's earlier open, so a repeat can
count as unique again. That is the price of not keeping contact ids.
"""
from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta, timezone

from pymongo.database import Database

from shared.config import POSITIVE_INT, Setting, load
from shared.mongo import delete_all
from shared.worker import every

log = logging.getLogger(__name__)
BASELINE = "|baseline|"
CHUNK = 10_000
SETTINGS = [
    Setting("SANDESH_TRACKING_RETENTION_DAYS", POSITIVE_INT, default=90),
    Setting("SANDESH_RETENTION_INTERVAL_SECONDS", POSITIVE_INT, default=3600),
]


def purge(db: Database, older_than: timedelta, now: datetime | None = None) -> dict:
    cutoff = (now or datetime.now(timezone.utc)) - older_than
    done = {"campaigns": 0, "deliveries": 0, "markers": 0}
    for campaign in db.campaigns.find({"first_at": {"$lt": cutoff}}, {"_id": 1}):
        campaign_id = campaign["_id"]
        done["deliveries"] += delete_all(db.deliveries, {"campaign_id": campaign_id})
        folded = _fold_markers(db, campaign_id)
        done["markers"] += folded
        done["campaigns"] += 1 if folded else 0
    # Tallies written before they carried a time start ageing now.
    db.soft_bounces.update_many({"at": {"$exists": False}},
                                {"$set": {"at": now or datetime.now(timezone.utc)}})
    done["soft_bounces"] = delete_all(db.soft_bounces, {"at": {"$lt": cutoff}})
    return done


def _fold_markers(db: Database, campaign_id: str) -> int:
    if db.batches.find_one({"campaigns.c": campaign_id}):
        return 0  # a batch's repair is pending: it needs the markers (counting.py)
    raw = [m for m in db.markers.find({"c": campaign_id}, {"f": 1, "done": 1})
           if BASELINE not in m["_id"]]
    if not raw or not all(m.get("done") for m in raw):
        return 0  # nothing to fold, or a crash repair (recount) is pending: next round
    totals: Counter = Counter()
    for marker in raw:
        totals.update(marker["f"])
    names = [name for name, count in sorted(totals.items()) for _ in range(count)]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    db.markers.insert_many([
        {"_id": f"{campaign_id}{BASELINE}{stamp}|{i}", "c": campaign_id,
         "f": names[start:start + CHUNK], "h": None, "done": True}
        for i, start in enumerate(range(0, len(names), CHUNK))])
    ids = [m["_id"] for m in raw]
    for start in range(0, len(ids), 1000):
        db.markers.delete_many({"_id": {"$in": ids[start:start + 1000]}})
    return len(ids)


def start_in_background(db: Database, environ=None):
    """The one line in the worker: purge now and then, in a daemon thread,
    never stopping the consumer (a failed round is retried next time)."""
    config = load(SETTINGS, environ)
    age = timedelta(days=config.tracking_retention_days)

    def purge_once():
        purged = purge(db, age)
        if any(purged.values()):
            log.info("tracking retention purge", extra=purged)
    return every("tracking-retention", lambda: config.retention_interval_seconds, purge_once)
