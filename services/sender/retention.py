"""Retention of the sender's delivery records (FerretDB 1.24 has no TTL
index: deleted explicitly, on a schedule).

A delivery record is what makes a redelivered job a no-op, so it must
outlive every copy of its job in Kafka (send.jobs / send.retry keep 7 days):
the retention age is never less than MIN_DAYS. Only finished records go
(sent, failed, skipped); a claim or a deferral still in flight stays. The
campaign totals live in campaigns and tracking, not here.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from pymongo.database import Database

from services.sender.domain import FINAL
from shared.config import POSITIVE_INT, Setting, load
from shared.mongo import delete_all
from shared.worker import every

log = logging.getLogger(__name__)
MIN_DAYS = 8  # send.* topics keep 7 days
SETTINGS = [
    Setting("SANDESH_SENDER_RETENTION_DAYS", POSITIVE_INT, default=30),
    Setting("SANDESH_RETENTION_INTERVAL_SECONDS", POSITIVE_INT, default=3600),
]


def purge(db: Database, older_than: timedelta, now: datetime | None = None) -> int:
    older_than = max(older_than, timedelta(days=MIN_DAYS))
    cutoff = (now or datetime.now(timezone.utc)) - older_than
    # A claim that old belongs to a job long finished (or its copies expired).
    delete_all(db.claims, {"claimed_at": {"$lt": cutoff}})
    delete_all(db.takeovers, {"taken_at": {"$lt": cutoff}})
    return delete_all(db.deliveries, {"state": {"$in": list(FINAL)},
                                      "updated_at": {"$lt": cutoff}})


def start_in_background(config, environ=None):
    """The one line in the sender's main(): purge now and then, in a daemon
    thread (a failed round is retried next time; sending never waits)."""
    from shared import mongo
    settings = load(SETTINGS, environ)
    db = mongo.database(config.mongo_uri,
                        config.get("sender_db") or config.mongo_db_prefix + "sender")
    age = timedelta(days=settings.sender_retention_days)

    def purge_once():
        purged = purge(db, age)
        if purged:
            log.info("sender retention purge", extra={"deliveries": purged})
    return every("sender-retention", lambda: settings.retention_interval_seconds, purge_once)
