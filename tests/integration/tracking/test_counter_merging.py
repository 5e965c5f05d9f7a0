"""A campaign's counter documents merged into fewer (services/tracking/merging.py)
on the real FerretDB: the stats are the same before, after, and at every
step a merger can die at."""
from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from services.tracking.counting import CountingRules, StatsCounter, build_stats
from services.tracking.merging import CounterMerger
from services.tracking.store import INDEXES, TrackingStore, counts_of
from shared import mongo
from tests.integration.tracking.test_counting import (ACCOUNT, T0, check, ev, hexid, in_chunks,
                                                     scenario)


@pytest.fixture
def store(mongo_db):
    mongo.ensure_indexes(mongo_db, INDEXES)
    return TrackingStore(mongo_db)


def later(hours=1):
    at = datetime.now(timezone.utc) + timedelta(hours=hours)
    return lambda: at


def counted_one_event_a_batch(store):
    """The scenario counted one event a poll: a document per batch."""
    campaign = hexid()
    counter = StatsCounter(store, CountingRules())
    for chunk in in_chunks(scenario(campaign), 1):
        counter.handle_batch(chunk)
    return campaign


def documents(store, campaign):
    return (store.db.counters.count_documents({"c": campaign}),
            store.db.hourly.count_documents({"c": campaign}))


def test_merging_keeps_the_stats_in_one_document_per_campaign_and_hour(store):
    campaign = hexid()
    events = scenario(campaign)
    counter = StatsCounter(store, CountingRules())
    for chunk in in_chunks(events, 1):
        counter.handle_batch(chunk)
    before = documents(store, campaign)
    assert before[0] > 20
    merger = CounterMerger(store, clock=later(), min_parts=2)
    assert merger.merge_campaign(campaign) == sum(before) - 1 - 3
    assert documents(store, campaign) == (1, 3)   # the scenario's hours: T0, +1 h, +2 h
    check(build_stats(store, campaign))
    # every event again, by a restarted worker: counts nothing, merged or not
    restarted = StatsCounter(store, CountingRules())
    for chunk in in_chunks(events, 1):
        restarted.handle_batch(chunk)
    check(build_stats(store, campaign))
    # a new delivery: a new batch document, merged with the merged one
    restarted.handle_batch([ev("delivery.sent", T0, attempt=0, contact_revision=0,
                               campaign_id=campaign, contact_id=hexid(), job_id=hexid())])
    assert documents(store, campaign)[0] == 2
    merger.merge_campaign(campaign)
    assert documents(store, campaign)[0] == 1
    assert build_stats(store, campaign)["sent"] == 9


def test_the_sweep_merges_only_campaigns_with_enough_final_parts(store):
    many, few = counted_one_event_a_batch(store), hexid()
    StatsCounter(store, CountingRules()).handle_batch(scenario(few))   # one batch
    young = CounterMerger(store, min_parts=2)    # by the real clock: all too young
    assert young.merge_all() == 0
    before = documents(store, few)
    CounterMerger(store, clock=later(), min_parts=5).merge_all()
    assert documents(store, many)[0] == 1 and documents(store, few) == before
    check(build_stats(store, many))
    check(build_stats(store, few))


def test_the_documents_of_a_batch_whose_intent_is_open_are_left_alone(store):
    """Its repair may write them again (the same ids): merged and deleted,
    they would come back and count twice."""
    campaign = counted_one_event_a_batch(store)
    store.begin_batch("open-batch", [(campaign, "acct")])
    store.add_batch_counts("open-batch", {campaign: ("acct", Counter(sent=5))}, {})
    CounterMerger(store, clock=later(), min_parts=2).merge_campaign(campaign)
    assert store.db.counters.find_one({"_id": f"{campaign}|b|open-batch"}) is not None
    assert documents(store, campaign)[0] == 2
    assert build_stats(store, campaign)["sent"] == 8 + 5


def test_a_merger_that_died_before_deleting_the_parts_counts_them_once(store):
    campaign = counted_one_event_a_batch(store)
    parts = list(store.db.counters.find({"c": campaign}))
    total = Counter()
    for part in parts:
        total.update(counts_of(part))
    store.db.counters.insert_one({"_id": f"{campaign}|~|dead", "c": campaign, "merged": True,
                                  "parts": [p["_id"] for p in parts],
                                  "account_id": parts[0]["account_id"], **total})
    check(build_stats(store, campaign))
    CounterMerger(store, clock=later(), min_parts=2).merge_campaign(campaign)
    assert documents(store, campaign) == (1, 3)
    check(build_stats(store, campaign))


def test_a_late_copy_of_a_merged_batch_does_not_come_back(store):
    """A worker that outlived its batch's repair wrote the batch's counts
    again after a merge had deleted them: counted twice."""
    campaign = counted_one_event_a_batch(store)
    batch_id = next(d["_id"] for d in store.db.counters.find({"c": campaign})).rsplit("|b|")[1]
    late = {campaign: (ACCOUNT, Counter(sent=1))}
    CounterMerger(store, clock=later(), min_parts=2).merge_campaign(campaign)
    store.add_batch_counts(batch_id, late, {})   # its intent ended long ago
    check(build_stats(store, campaign))


def test_a_worker_stalled_past_its_batchs_repair_still_writes_what_it_counted(store):
    """The repair found none of its markers yet and wrote nothing: the
    worker's own write is the only one."""
    campaign = hexid()
    store.begin_batch("stalled", [(campaign, ACCOUNT)])
    store.end_batch("stalled")   # repaired meanwhile, from no markers
    store.add_batch_counts("stalled", {campaign: (ACCOUNT, Counter(sent=1))}, {})
    assert store.counters(campaign)["sent"] == 1


def test_a_merged_document_sorts_after_the_merged_one_it_takes_in(store):
    campaign = counted_one_event_a_batch(store)
    merger = CounterMerger(store, clock=later(), min_parts=1)
    merger.merge_campaign(campaign)
    [first] = store.db.counters.find({"c": campaign})
    StatsCounter(store, CountingRules()).handle_batch([ev(
        "delivery.sent", T0, attempt=0, contact_revision=0, campaign_id=campaign,
        contact_id=hexid(), job_id=hexid())])
    CounterMerger(store, clock=later(2), min_parts=1).merge_campaign(campaign)
    [second] = store.db.counters.find({"c": campaign})
    assert second["parts"] and first["_id"] in second["parts"] and second["_id"] > first["_id"]
    assert build_stats(store, campaign)["sent"] == 9


def test_a_merger_stops_before_its_lease_could_be_taken_over(store):
    campaign = counted_one_event_a_batch(store)
    merger = CounterMerger(store, clock=later(), min_parts=2)
    store.MERGE_LEASE = timedelta(0)   # half of it is spent at once
    assert merger.merge_campaign(campaign) == 0
    assert documents(store, campaign)[0] > 20
    check(build_stats(store, campaign))


def test_mergers_of_one_campaign_at_once_merge_it_once(store):
    campaign = counted_one_event_a_batch(store)
    threads = [threading.Thread(target=CounterMerger(store, owner=f"w{n}", clock=later(),
                                                     min_parts=2).merge_campaign,
                                args=(campaign,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    check(build_stats(store, campaign))


def test_a_recount_waits_for_a_merge_of_its_campaign(store):
    campaign = counted_one_event_a_batch(store)
    lease = store.take_merge_lease(campaign, "merger")
    assert lease is not None
    assert store.take_merge_lease(campaign, "another merger") is None
    recount = threading.Thread(target=store.recount, args=(campaign, "acct"))
    recount.start()
    time.sleep(0.6)
    assert recount.is_alive()
    store.release_merge_lease(lease, "merger")
    recount.join(5)
    assert not recount.is_alive()
    check(build_stats(store, campaign))


def test_thousands_of_parts_are_merged_a_thousand_at_a_time(store):
    campaign = hexid()
    store.db.counters.insert_many([{"_id": f"{campaign}|b|{n}", "c": campaign,
                                    "account_id": "acct", "sent": 1, "opens_total_human": n % 3}
                                   for n in range(2_100)])
    CounterMerger(store, clock=later()).merge_campaign(campaign)
    assert documents(store, campaign)[0] == 3   # 1,000 + 1,000 + 100
    counts = store.counters(campaign)
    assert (counts["sent"], counts["opens_total_human"]) == (2_100, sum(n % 3 for n in range(2_100)))
