"""Jobs given back for contacts to send again (delivery.held), kept until
its answer arrives, against the real FerretDB."""
from datetime import datetime, timedelta, timezone

from services.sender.domain import Job
from services.sender.store import HeldJobs

A, B = "a" * 32, "b" * 32


def _job(job_id: str, account_id: str = A) -> Job:
    return Job.from_event(account_id, {"job_id": job_id, "campaign_id": "camp",
                                       "contact_id": f"c-{job_id}", "list_id": "l1",
                                       "attempt": 1, "recipient": {"email": "x@example.com"}})


def test_held_jobs_wait_for_their_answer_and_are_asked_for_again_when_none_came(mongo_db):
    held = HeldJobs(mongo_db)
    held.hold([_job("h1"), _job("h2"), _job("h3", B)])
    held.hold([_job("h1")])  # held again before any answer: still one
    later = datetime.now(timezone.utc) + timedelta(seconds=1)
    [h1] = [d for d in held.unanswered(later) if d["_id"] == "h1"]
    assert {k: h1[k] for k in ("account_id", "campaign_id", "contact_id", "list_id",
                               "attempt")} == {"account_id": A, "campaign_id": "camp",
                                               "contact_id": "c-h1", "list_id": "l1",
                                               "attempt": 1}
    assert "recipient" not in h1  # ids only
    earlier = datetime.now(timezone.utc) - timedelta(minutes=5)
    assert held.unanswered(earlier) == []  # asked a moment ago
    held.answered(["h2"])
    held.asked_again(["h1"])
    assert sorted(d["_id"] for d in held.unanswered(later + timedelta(seconds=1))) == \
        ["h1", "h3"]
    held.forget_account(B)
    assert [d["_id"] for d in held.unanswered(later + timedelta(seconds=1))] == ["h1"]
