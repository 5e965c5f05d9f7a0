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
