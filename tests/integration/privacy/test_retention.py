"""Retention purges in tracking and the sender against the real FerretDB:
raw records older than the age go, the aggregates stay exact."""
from datetime import datetime, timedelta, timezone

from services.sender import retention as sender_retention
from services.tracking import retention as tracking_retention
from services.tracking.counting import CountingRules, StatsCounter, build_stats
from services.tracking.store import TrackingStore
from shared.events import new_event

NOW = datetime.now(timezone.utc)


def _event(type_, campaign, data, at):
    event = new_event(type_, source="test", subject=campaign, account_id="a", data=data)
    return event.__class__(**{**event.__dict__, "time": at.isoformat()})


def _campaign_with_activity(counter, campaign, at, people=3):
    for n in range(people):
        job = f"{campaign}-j{n}"
        counter.delivery_sent(_event("delivery.sent", campaign, {
            "job_id": job, "campaign_id": campaign, "contact_id": f"c{n}", "attempt": 0}, at))
        hit = {"campaign_id": campaign, "contact_id": f"c{n}", "job_id": job}
        counter.opened(_event("tracking.opened", campaign, hit, at + timedelta(minutes=5)))
        counter.clicked(_event("tracking.clicked", campaign, {**hit, "link_index": 0},
                               at + timedelta(minutes=6)))


def _totals(store, campaign):
    return {k: v for k, v in build_stats(store, campaign).items() if k != "hourly"}


def test_tracking_purges_raw_records_of_old_campaigns_and_keeps_exact_totals(mongo_db):
    store = TrackingStore(mongo_db)
    counter = StatsCounter(store, CountingRules())
    _campaign_with_activity(counter, "old", NOW - timedelta(days=100))
    _campaign_with_activity(counter, "new", NOW - timedelta(days=1))
    before = {c: _totals(store, c) for c in ("old", "new")}
    assert before["old"]["sent"] == 3   # the totals compared below are not empty
    result = tracking_retention.purge(mongo_db, timedelta(days=90))
    assert result["campaigns"] == 1 and result["deliveries"] == 3
    assert mongo_db.deliveries.count_documents({"campaign_id": "old"}) == 0
    assert mongo_db.deliveries.count_documents({"campaign_id": "new"}) == 3
    old_markers = list(mongo_db.markers.find({"c": "old"}))
    assert old_markers and all("|baseline|" in m["_id"] for m in old_markers)  # no per-contact one
    assert {c: _totals(store, c) for c in ("old", "new")} == before
    store.recount("old", "a")  # a rebuild from the markers agrees
    assert _totals(store, "old") == before["old"]
    assert tracking_retention.purge(mongo_db, timedelta(days=90))["markers"] == 0  # nothing left


def test_tracking_purges_soft_bounce_tallies_not_added_to_within_the_age(mongo_db):
    store = TrackingStore(mongo_db)
    assert store.add_soft_bounce("a", "c-recent", "j1") == 1
    mongo_db.soft_bounces.insert_many([
        {"_id": "a|c-old", "jobs": ["j2"], "at": NOW - timedelta(days=91)},
        {"_id": "a|c-untimed", "jobs": ["j3"]}])   # written before tallies had a time
    assert tracking_retention.purge(mongo_db, timedelta(days=90))["soft_bounces"] == 1
    assert {d["_id"] for d in mongo_db.soft_bounces.find()} == {"a|c-recent", "a|c-untimed"}
    # the untimed one now ages from this round: gone once it is past the age too
    later = NOW + timedelta(days=91)
    assert tracking_retention.purge(mongo_db, timedelta(days=90), now=later)["soft_bounces"] == 2
    assert mongo_db.soft_bounces.count_documents({}) == 0


def test_the_sender_purges_finished_delivery_records_past_the_age(mongo_db):
    def record(job, state, days):
        return {"_id": job, "state": state, "campaign_id": "k",
                "updated_at": NOW - timedelta(days=days)}
    mongo_db.deliveries.insert_many([record("old-sent", "sent", 40), record("old-failed", "failed", 40),
                                     record("old-deferred", "deferred", 40),
                                     record("recent", "sent", 3), record("nine-days", "sent", 9)])
    assert sender_retention.purge(mongo_db, timedelta(days=30)) == 2
    assert {d["_id"] for d in mongo_db.deliveries.find()} == {"old-deferred", "recent", "nine-days"}
    # never younger than the send topics' retention, whatever is configured
    assert sender_retention.purge(mongo_db, timedelta(days=1)) == 1
    assert {d["_id"] for d in mongo_db.deliveries.find()} == {"old-deferred", "recent"}
