"""Claims against the real FerretDB: a job is claimed once, a finished job is
found finished, the expired claim of a sender that died is taken over by
exactly one of the senders that find it at the same time, and a deferred
job's copy read again finds its retry out while the retry takes the claim."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from services.sender.domain import Job
from services.sender.store import DeliveryStore
from shared.mongo import as_utc


def job(job_id: str, attempt: int = 0) -> Job:
    return Job.from_event("acct", {"job_id": job_id, "campaign_id": "camp", "contact_id": "k",
                                   "attempt": attempt, "recipient": {"email": "r@example.com"}})


def claimed_at_once(stores: list[DeliveryStore], jobs: list[Job]) -> dict[str, list[str]]:
    """Every store claims the same jobs at the same moment: job ids by owner."""
    won: dict[str, list[str]] = {s.owner: [] for s in stores}
    barrier = threading.Barrier(len(stores))

    def contend(store):
        barrier.wait()
        claimed, _, _ = store.claim(jobs)
        won[store.owner] = [j.job_id for j in claimed]

    threads = [threading.Thread(target=contend, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won


def test_a_job_is_claimed_once_and_a_finished_one_is_announced_again(mongo_db):
    first, second = DeliveryStore(mongo_db, "s1", 60), DeliveryStore(mongo_db, "s2", 60)
    claimed, finished, held = first.claim([job("j1"), job("j2")])
    assert [j.job_id for j in claimed] == ["j1", "j2"] and not finished and not held
    first.record([("j1", "sent", {"event": {"type": "delivery.sent", "data": {}}})])
    claimed, finished, held = second.claim([job("j1"), job("j2")])
    assert claimed == [] and list(finished) == ["j1"] and [j.job_id for j in held] == ["j2"]


def test_an_expired_claim_is_taken_over_by_exactly_one_sender(mongo_db):
    long_ago = datetime.now(timezone.utc) - timedelta(minutes=10)
    mongo_db["claims"].insert_many([{"_id": f"j{i}", "owner": "dead-sender", "claimed_at": long_ago,
                                     "attempt": 0, "campaign_id": "camp"} for i in range(20)])
    stores = [DeliveryStore(mongo_db, f"s{n}", 60) for n in range(4)]
    won = claimed_at_once(stores, [job(f"j{i}") for i in range(20)])
    winners = [job_id for jobs in won.values() for job_id in jobs]
    assert sorted(winners) == sorted(f"j{i}" for i in range(20))  # each job once, none lost
    owners = {d["_id"]: d["owner"] for d in mongo_db["claims"].find()}
    assert all(owners[job_id] == owner for owner, jobs in won.items() for job_id in jobs)


def deferred_by(store: DeliveryStore, job_ids: list[str]) -> None:
    """What a sender does with jobs it deferred: claims kept, then, once
    their retries are out, marked."""
    store.claim([job(j) for j in job_ids])
    store.record([(j, "deferred", {}) for j in job_ids])
    assert store.claims.count_documents({"_id": {"$in": job_ids}, "owner": store.owner,
                                         "deferred": {"$ne": True}}) == len(job_ids)
    store.deferred([job(j) for j in job_ids])


def test_a_deferred_jobs_copy_read_again_finds_its_retry_out_and_the_retry_is_claimed(mongo_db):
    first, second = DeliveryStore(mongo_db, "s1", 60), DeliveryStore(mongo_db, "s2", 60)
    deferred_by(first, ["j1"])
    claimed, finished, held = second.claim([job("j1", attempt=0)])
    assert claimed == [] and held == [] and finished["j1"]["state"] == "deferred"
    assert "event" not in finished["j1"]  # nothing to announce again
    claimed, finished, held = second.claim([job("j1", attempt=1)])
    assert [j.job_id for j in claimed] == ["j1"] and not finished and not held
    doc = mongo_db["claims"].find_one({"_id": "j1"})
    assert doc["owner"] == "s2" and doc["attempt"] == 1 and "deferred" not in doc
    # the first attempt's copy, read once more, meets the retry's claim: done,
    # not held behind it (test_a_copy_of_a_deferred_attempt_meeting_...)
    claimed, finished, held = first.claim([job("j1", attempt=0)])
    assert claimed == held == [] and finished["j1"]["state"] == "deferred"


def test_copies_read_before_the_mark_wait_for_it(mongo_db):
    """Given back at the record, the claim was gone until the mark: another
    sender's copy of the deferred attempt was claimed afresh and sent again
    (tests/unit/sender/test_send_loop_fuzz.py)."""
    first, second = DeliveryStore(mongo_db, "s1", 60), DeliveryStore(mongo_db, "s2", 60)
    first.claim([job("j1")])
    first.record([("j1", "deferred", {})])
    for attempt in (0, 1):  # a copy of the attempt; its retry, due before the batch ended
        claimed, finished, held = second.claim([job("j1", attempt=attempt)])
        assert claimed == [] and not finished and [j.job_id for j in held] == ["j1"]
    first.deferred([job("j1")])
    claimed, finished, held = second.claim([job("j1", attempt=0)])
    assert claimed == held == [] and finished["j1"]["state"] == "deferred"
    claimed, _, _ = second.claim([job("j1", attempt=1)])
    assert [j.job_id for j in claimed] == ["j1"]


def test_each_deferred_jobs_retry_is_claimed_by_exactly_one_sender(mongo_db):
    deferred_by(DeliveryStore(mongo_db, "s0", 60), [f"j{i}" for i in range(20)])
    stores = [DeliveryStore(mongo_db, f"s{n}", 60) for n in range(1, 5)]
    # copies of each retry read by different senders at the same moment
    won = claimed_at_once(stores, [job(f"j{i}", attempt=1) for i in range(20)])
    winners = [job_id for jobs in won.values() for job_id in jobs]
    assert sorted(winners) == sorted(f"j{i}" for i in range(20))


def test_a_retry_that_took_over_a_deferral_and_goes_back_unsent_leaves_the_deferral_standing(
        mongo_db):
    """Given back (rate limit, behind a hold), the retry's claim was deleted
    with the deferral it had replaced: a copy of the deferred attempt, read
    again later, was claimed afresh and sent ahead of the retry's backoff."""
    first, second = DeliveryStore(mongo_db, "s1", 60), DeliveryStore(mongo_db, "s2", 60)
    deferred_by(first, ["j1"])
    claimed, _, _ = second.claim([job("j1", attempt=1)])
    assert [j.job_id for j in claimed] == ["j1"]
    second.record([("j1", "released", {})])
    claimed, finished, held = first.claim([job("j1", attempt=0)])
    assert claimed == [] and held == [] and finished["j1"] == {"state": "deferred", "attempt": 0}
    claimed, _, _ = first.claim([job("j1", attempt=1)])  # the retry, read again, goes on
    assert [j.job_id for j in claimed] == ["j1"]
    first.record([("j1", "deferred", {})])  # deferred once more: its own mark follows
    doc = mongo_db["claims"].find_one({"_id": "j1"})
    assert doc["owner"] == "s1" and doc["attempt"] == 1 and "deferred" not in doc
    first.deferred([job("j1", attempt=1)])
    doc = mongo_db["claims"].find_one({"_id": "j1"})
    assert doc["deferred"] is True and doc["attempt"] == 1


def test_a_copy_of_a_deferred_attempt_meeting_its_retry_s_claim_is_done_even_once_it_expired(
        mongo_db):
    """The retry's sender died holding the claim: a copy of attempt 0 took
    the expired claim over and sent attempt 0 again. The retry, read again,
    takes it over instead."""
    first, second = DeliveryStore(mongo_db, "s1", 60), DeliveryStore(mongo_db, "s2", 60)
    deferred_by(first, ["j1"])
    second.claim([job("j1", attempt=1)])
    claimed, finished, held = first.claim([job("j1", attempt=0)])  # the retry's claim is live
    assert claimed == held == [] and finished["j1"] == {"state": "deferred", "attempt": 0}
    mongo_db["claims"].update_one({"_id": "j1"}, {"$set": {
        "claimed_at": datetime.now(timezone.utc) - timedelta(minutes=5)}})  # s2 died
    claimed, finished, _ = first.claim([job("j1", attempt=0)])
    assert claimed == [] and finished["j1"]["state"] == "deferred"
    claimed, _, _ = first.claim([job("j1", attempt=1)])
    assert [j.job_id for j in claimed] == ["j1"]


def test_a_takeover_whose_taker_never_wrote_the_claim_is_taken_over_after_a_lease(mongo_db):
    """A sender inserted its takeover marker, then died (or the database
    failed) before writing the claim: every later takeover met the marker
    and the job was held as claimed elsewhere for the marker's retention."""
    long_ago = datetime.now(timezone.utc) - timedelta(minutes=10)
    mongo_db["claims"].insert_one({"_id": "j1", "owner": "dead", "claimed_at": long_ago,
                                   "attempt": 0, "campaign_id": "camp"})
    claimed_at = mongo_db["claims"].find_one({"_id": "j1"})["claimed_at"]
    marker = f"j1:dead:{as_utc(claimed_at).timestamp():.6f}"
    mongo_db["takeovers"].insert_one({"_id": marker, "job_id": "j1", "owner": "half-way",
                                      "taken_at": datetime.now(timezone.utc)})
    store = DeliveryStore(mongo_db, "s1", 60)
    claimed, _, held = store.claim([job("j1")])
    assert claimed == [] and [j.job_id for j in held] == ["j1"]  # it may still write it
    mongo_db["takeovers"].update_one({"_id": marker}, {"$set": {"taken_at": long_ago}})
    claimed, _, _ = store.claim([job("j1")])
    assert [j.job_id for j in claimed] == ["j1"]
    assert mongo_db["claims"].find_one({"_id": "j1"})["owner"] == "s1"


def test_a_sender_whose_claim_write_failed_finishes_its_own_takeover(mongo_db):
    long_ago = datetime.now(timezone.utc) - timedelta(minutes=10)
    mongo_db["claims"].insert_one({"_id": "j1", "owner": "dead", "claimed_at": long_ago,
                                   "attempt": 0, "campaign_id": "camp"})
    claimed_at = mongo_db["claims"].find_one({"_id": "j1"})["claimed_at"]
    mongo_db["takeovers"].insert_one({"_id": f"j1:dead:{as_utc(claimed_at).timestamp():.6f}",
                                      "job_id": "j1", "owner": "s1",
                                      "taken_at": datetime.now(timezone.utc)})
    claimed, _, _ = DeliveryStore(mongo_db, "s1", 60).claim([job("j1")])
    assert [j.job_id for j in claimed] == ["j1"]
