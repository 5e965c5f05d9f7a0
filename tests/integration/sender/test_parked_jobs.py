"""The sender's parking of a paused campaign's jobs, against the real FerretDB."""
from services.sender.domain import Job, parked_job_id
from services.sender.store import ERASED_ADDRESS, ParkedJobs

ACCOUNT = "a" * 32


def _job(job_id: str, campaign_id: str = "camp") -> Job:
    return Job.from_event(ACCOUNT, {"job_id": job_id, "campaign_id": campaign_id,
                                    "contact_id": f"c-{job_id}", "attempt": 0,
                                    "recipient": {"email": "someone@example.com"}})


def _ids(docs) -> list[str]:
    return sorted(parked_job_id(doc) for doc in docs)


def test_parked_jobs_are_taken_by_campaign_without_the_ones_left_aside(mongo_db):
    """unpark leaves aside a job the schema refuses: taking it again would
    find it first, for ever."""
    parked = ParkedJobs(mongo_db)
    parked.park([_job("p1"), _job("p2"), _job("p3"), _job("q1", "other")])
    refused = [doc["_id"] for doc in parked.take("camp") if parked_job_id(doc) == "p2"]
    assert _ids(parked.take("camp", exclude=refused)) == ["p1", "p3"]
    assert _ids(parked.take("camp")) == ["p1", "p2", "p3"]


def test_every_copy_parked_goes_back_the_retry_beside_the_older_attempt(mongo_db):
    """A copy of attempt 0, the retry (attempt 1), attempt 0 redelivered:
    each goes back, the claim lets one through, and the older copy finds
    the deferral and sends nothing."""
    parked = ParkedJobs(mongo_db)
    attempt_0 = _job("p1")
    attempt_1 = Job.from_event(ACCOUNT, {**attempt_0.data, "attempt": 1})
    parked.park([attempt_0])
    parked.park([attempt_1])
    parked.park([attempt_0])
    assert sorted(d["data"]["attempt"] for d in parked.take("camp")) == [0, 0, 1]


def test_an_erasure_scrubs_every_parked_copy_of_the_contacts_jobs(mongo_db):
    parked = ParkedJobs(mongo_db)
    attempt_0 = _job("p1")
    parked.park([attempt_0, _job("p2")])
    parked.park([Job.from_event(ACCOUNT, {**attempt_0.data, "attempt": 1})])
    parked.forget_recipient(ACCOUNT, attempt_0.contact_id)
    assert sorted((parked_job_id(d), d["data"]["recipient"]["email"])
                  for d in parked.take("camp")) == [
        ("p1", ERASED_ADDRESS), ("p1", ERASED_ADDRESS), ("p2", "someone@example.com")]


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
    still paused, parks the copy just put back: the remove deletes what it
    took, never the copy."""
    parked = ParkedJobs(mongo_db)
    parked.park([_job("p1")])
    [taken] = parked.take("camp")
    parked.park([_job("p1")])
    parked.remove([taken])
    [left] = parked.take("camp")
    assert parked_job_id(left) == "p1" and left["_id"] != taken["_id"]
    parked.remove([left])
    assert parked.take("camp") == []


def test_jobs_parked_for_the_rate_are_taken_once_due_and_a_paused_campaigns_whenever(mongo_db):
    from datetime import datetime, timedelta, timezone
    parked = ParkedJobs(mongo_db)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    parked.park([_job("due"), _job("later"), _job("paused")],
                due_at={"due": now - timedelta(seconds=1), "later": now + timedelta(hours=1)})
    assert _ids(parked.take("camp", due_by=now)) == ["due", "paused"]
    assert _ids(parked.take("camp")) == ["due", "later", "paused"]
    # parked again for the pause (the job read once more, its campaign paused
    # meanwhile): that copy waits for the resume, not for the old due time
    parked.park([_job("later")])
    assert _ids(parked.take("camp", due_by=now)) == ["due", "later", "paused"]


def test_a_test_send_parks_under_the_test_sends_and_its_export_names_its_campaign(mongo_db):
    from dataclasses import replace
    parked = ParkedJobs(mongo_db)
    parked.park([replace(_job("t1", "draft-campaign"), test=True)])
    assert parked.campaigns() == ["test-sends"]  # put back whatever its draft's state
    assert _ids(parked.take("test-sends")) == ["t1"]
    [exported] = parked.held_for(ACCOUNT, "c-t1")
    assert exported["campaign_id"] == "draft-campaign" and exported["job_id"] == "t1"


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
