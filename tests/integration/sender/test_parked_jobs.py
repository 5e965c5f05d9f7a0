"""The sender's parking of a paused campaign's jobs, against the real FerretDB."""
import time

from services.sender.domain import Job
from services.sender.store import ERASED_ADDRESS, ParkedJobs

ACCOUNT = "a" * 32


def _job(job_id: str, campaign_id: str = "camp") -> Job:
    return Job.from_event(ACCOUNT, {"job_id": job_id, "campaign_id": campaign_id,
                                    "contact_id": f"c-{job_id}", "attempt": 0,
                                    "recipient": {"email": "someone@example.com"}})


def test_parked_jobs_are_taken_by_campaign_without_the_ones_left_aside(mongo_db):
    """unpark leaves aside a job the schema refuses: taking it again would
    find it first, for ever."""
    parked = ParkedJobs(mongo_db)
    parked.park([_job("p1"), _job("p2"), _job("p3"), _job("q1", "other")])
    assert sorted(d["_id"] for d in parked.take("camp", exclude=["p2"])) == ["p1", "p3"]
    assert sorted(d["_id"] for d in parked.take("camp")) == ["p1", "p2", "p3"]


def test_a_retry_parked_after_an_older_copy_of_its_job_replaces_it_and_not_the_reverse(mongo_db):
    """A copy of attempt 0, then the retry (attempt 1): the retry is what
    must go back at the resume; the older copy, put back, finds the
    deferral and sends nothing."""
    parked = ParkedJobs(mongo_db)
    attempt_0 = _job("p1")
    attempt_1 = Job.from_event(ACCOUNT, {**attempt_0.data, "attempt": 1})
    parked.park([attempt_0])
    parked.park([attempt_1])
    parked.park([attempt_0])  # a redelivered copy again
    [doc] = parked.take("camp")
    assert doc["data"]["attempt"] == 1 and doc["data"]["recipient"] == {
        "email": "someone@example.com"}


def test_a_later_attempt_keeps_a_scrubbed_recipient_scrubbed(mongo_db):
    """An erasure scrubbed the parked job after the retry's copy was read as
    not erased: the retry takes the attempt, never the address back."""
    parked = ParkedJobs(mongo_db)
    attempt_0 = _job("p1")
    parked.park([attempt_0])
    parked.forget_recipient(ACCOUNT, attempt_0.contact_id)
    parked.park([Job.from_event(ACCOUNT, {**attempt_0.data, "attempt": 1})])
    [doc] = parked.take("camp")
    assert doc["data"]["attempt"] == 1 and doc["data"]["recipient"] == {"email": ERASED_ADDRESS}


def test_putting_back_leaves_a_later_attempt_parked_meanwhile_and_one_parked_after_goes_in(
        mongo_db):
    parked = ParkedJobs(mongo_db)
    attempt_0 = _job("p1")
    attempt_1 = Job.from_event(ACCOUNT, {**attempt_0.data, "attempt": 1})
    parked.park([attempt_0])
    [taken] = parked.take("camp")
    parked.park([attempt_1])  # between the take and the remove
    parked.remove([taken])
    [left] = parked.take("camp")
    assert left["data"]["attempt"] == 1
    parked.remove([left])
    parked.park([attempt_1])  # parked again after it went back
    assert [d["data"]["attempt"] for d in parked.take("camp")] == [1]


def test_a_copy_parked_again_between_the_take_and_the_remove_stays_parked(mongo_db):
    """A sender puts a job back while another, whose cache has the campaign
    still paused, parks the copy just put back: parked at that attempt
    already, it was left as it was, and the remove deleted it."""
    parked = ParkedJobs(mongo_db)
    parked.park([_job("p1")])
    [taken] = parked.take("camp")
    time.sleep(0.002)  # parked_at is stored to the millisecond
    parked.park([_job("p1")])
    parked.remove([taken])
    [left] = parked.take("camp")
    assert left["data"]["attempt"] == 0
    parked.remove([left])
    assert parked.take("camp") == []


def test_jobs_parked_for_the_rate_are_taken_once_due_and_a_paused_campaigns_whenever(mongo_db):
    from datetime import datetime, timedelta, timezone
    parked = ParkedJobs(mongo_db)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    parked.park([_job("due"), _job("later"), _job("paused")],
                due_at={"due": now - timedelta(seconds=1), "later": now + timedelta(hours=1)})
    assert sorted(d["_id"] for d in parked.take("camp", due_by=now)) == ["due", "paused"]
    assert sorted(d["_id"] for d in parked.take("camp")) == ["due", "later", "paused"]
    # parked again for the pause (the job read once more, its campaign paused
    # meanwhile): it waits for the resume, no longer for its old due time
    parked.park([_job("later")])
    assert sorted(d["_id"] for d in parked.take("camp", due_by=now)) == ["due", "later", "paused"]


def test_a_test_send_parks_under_the_test_sends_and_its_export_names_its_campaign(mongo_db):
    from dataclasses import replace
    parked = ParkedJobs(mongo_db)
    parked.park([replace(_job("t1", "draft-campaign"), test=True)])
    assert parked.campaigns() == ["test-sends"]  # put back whatever its draft's state
    assert [d["_id"] for d in parked.take("test-sends")] == ["t1"]
    [exported] = parked.held_for(ACCOUNT, "c-t1")
    assert exported["campaign_id"] == "draft-campaign"


def test_a_campaigns_due_jobs_and_a_contacts_jobs_are_read_through_an_index(mongo_db):
    """A contact's erasure rewrote its parked jobs by reading every parked
    job of every campaign: one pass over a paused 100,000-job campaign
    (0.2 s on FerretDB) for each contact an account erased."""
    from datetime import datetime, timezone

    from services.contacts.store import is_ferretdb
    from services.sender.store import ensure_indexes

    ensure_indexes(mongo_db)
    now = datetime.now(timezone.utc)
    for query, key in (
            ({"campaign_id": "camp",
              "$or": [{"due_at": {"$exists": False}}, {"due_at": {"$lte": now}}]}, "campaign_id"),
            ({"account_id": ACCOUNT, "contact_id": "c-p1"}, "contact_id")):
        plan = mongo_db.command("explain", {"find": "parked_jobs", "filter": query})["queryPlanner"]
        if is_ferretdb(mongo_db):
            assert any("USING INDEX parked_jobs_" in step and f"_{key}_1" in step
                       for step in plan["Plan"]), plan
        else:
            assert "IXSCAN" in str(plan["winningPlan"]) and key in str(plan["winningPlan"]), plan
