"""ParkedJobs over the fuzz world's FerretDB-like store (memory_db.py, whose
updates and deletes read, then write by _id, as FerretDB 1.24 does)."""
from services.sender.domain import Job, parked_job_id
from services.sender.store import ParkedJobs
from tests.unit.sender.memory_db import Collections, Database


def _job() -> Job:
    return Job.from_event("a" * 32, {"job_id": "j1", "campaign_id": "camp", "contact_id": "c1",
                                     "attempt": 0, "recipient": {"email": "x@example.com"}})


def test_a_copy_parked_while_the_remove_deletes_what_it_read_stays_parked():
    """One document a job: the copy just put back, parked again by another
    sender (its cache had the campaign paused still), was written over the
    document being removed, between the remove's read and its delete by
    _id. The job was gone, its copy settled as parked: a campaign stuck at
    599 of 600 in CI."""
    docs = Collections()
    other = ParkedJobs(Database(docs, ferretdb=True))

    def park_the_copy(point):
        if point == "parked_jobs.delete_many~" and not parked_again:
            parked_again.append(True)
            other.park([_job()])

    parked_again: list = []
    pacer = ParkedJobs(Database(docs, on_point=park_the_copy, ferretdb=True))
    other.park([_job()])
    taken = pacer.take("camp")
    pacer.remove(taken)
    assert parked_again and [parked_job_id(d) for d in docs["parked_jobs"].values()] == ["j1"]


def test_jobs_read_again_behind_a_held_job_are_parked_once():
    """The partition is read again from a held job (a claim of another
    sender's, every 2 s for its lease): the paused campaign's jobs after it
    were parked anew at every read, 60 documents for 2 jobs in a minute,
    each sent back on send.jobs at the resume."""
    from dataclasses import replace

    from services.sender.engine import Hold
    from tests.unit.sender.test_engine import _HeldClaims, campaign, job

    docs = Collections()
    fakes = _HeldClaims([campaign("c1"), campaign("c2", status="paused")], held={"j1"})
    engine = fakes.engine()
    engine.parked = ParkedJobs(Database(docs))
    read = [[replace(job(n, cid), event_id=f"e{n}") for n, cid in ((1, "c1"), (2, "c2"), (3, "c2"))]]
    for _ in range(30):
        assert isinstance(engine.handle(read)["j1"], Hold)
    assert sorted(parked_job_id(d) for d in docs["parked_jobs"].values()) == ["j2", "j3"]
    # put back, a job is a new send.job event: its copy parks beside the one taken
    put_back = [[replace(job(2, "c2"), event_id="e2-again")]]
    engine.handle(put_back)
    assert sorted(parked_job_id(d) for d in docs["parked_jobs"].values()) == ["j2", "j2", "j3"]


def test_a_legacy_document_rewritten_by_an_older_sender_is_not_removed():
    """A rolling upgrade: a document parked before 2026-12-07 is named by
    its job id, and an older sender writes a later attempt over it in
    place. A newer sender that took the earlier attempt and put it back
    removes only what it took: the retry stays, to go back next."""
    from datetime import datetime, timezone

    docs = Collections()
    parked = ParkedJobs(Database(docs, ferretdb=True))
    at = datetime(2026, 12, 6, tzinfo=timezone.utc)
    legacy = {"_id": "j1", "campaign_id": "camp", "account_id": "acc", "contact_id": "c1",
              "parked_at": at, "data": {"job_id": "j1", "attempt": 0}}
    parked.col.insert_one(dict(legacy))
    taken = parked.take("camp")
    parked.col.update_one({"_id": "j1"}, {"$set": {"data.attempt": 1,
                                                   "parked_at": at.replace(hour=1)}})
    parked.remove(taken)
    assert [d["data"]["attempt"] for d in docs["parked_jobs"].values()] == [1]
    parked.remove(parked.take("camp"))
    assert not docs["parked_jobs"]
