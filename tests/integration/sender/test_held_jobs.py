"""Jobs given back for contacts to send again (delivery.held), kept until
its answer arrives, against the real FerretDB."""
from datetime import datetime, timedelta, timezone

from services.sender.domain import Job
from services.sender.store import HeldJobs

A, B = "a" * 32, "b" * 32
T0 = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)


def _job(job_id: str, account_id: str = A) -> Job:
    return Job.from_event(account_id, {"job_id": job_id, "campaign_id": "camp",
                                       "contact_id": f"c-{job_id}", "list_id": "l1",
                                       "attempt": 1, "recipient": {"email": "x@example.com"}})


def test_held_jobs_wait_for_their_answer_and_are_due_again_when_none_came(mongo_db):
    held = HeldJobs(mongo_db)
    later = T0 + timedelta(minutes=5)
    held.hold([_job("h1"), _job("h2"), _job("h3", B)], later)
    held.hold([_job("h1")], later + timedelta(hours=1))  # held again before an answer: still one
    assert held.due(later - timedelta(seconds=1)) == []
    [h1] = [d for d in held.due(later) if d["_id"] == "h1"]
    assert {k: h1[k] for k in ("account_id", "campaign_id", "contact_id", "list_id",
                               "attempt", "asks")} == {"account_id": A, "campaign_id": "camp",
                                                       "contact_id": "c-h1", "list_id": "l1",
                                                       "attempt": 1, "asks": 1}
    assert "recipient" not in h1  # ids only
    held.answered(["h2"])
    held.asked_again("h1", later + timedelta(minutes=10))
    assert sorted(d["_id"] for d in held.due(later)) == ["h3"]
    [h1] = held.due(later + timedelta(minutes=10))[:1]
    assert h1["_id"] == "h1" and h1["asks"] == 2
    held.forget_account(B)
    assert [d["_id"] for d in held.due(later + timedelta(minutes=10))] == ["h1"]
