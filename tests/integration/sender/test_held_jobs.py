"""Jobs given back for contacts to send again (delivery.held), kept until
its answer arrives: the store against the real FerretDB, and one answer
taken per hold by a sender process on the real Kafka."""
import time
from datetime import datetime, timedelta, timezone

import pytest

from services.sender.domain import Job
from services.sender.store import HeldJobs, ParkedJobs
from shared import topics
from tests.integration.sender.harness import Senders, hexid

A, B = "a" * 32, "b" * 32
T0 = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)


def _job(job_id: str, account_id: str = A) -> Job:
    return Job.from_event(account_id, {"job_id": job_id, "campaign_id": "camp",
                                       "contact_id": f"c-{job_id}", "list_id": "l1",
                                       "attempt": 1, "recipient": {"email": "x@example.com"}})


def test_held_jobs_wait_for_their_answer_and_are_due_again_when_none_came(mongo_db):
    held = HeldJobs(mongo_db)
    later = T0 + timedelta(minutes=5)
    first = {d["_id"]: d["hold"] for d in held.hold([_job("h1"), _job("h2"), _job("h3", B)], later)}
    [again] = held.hold([_job("h1")], later)  # held again before an answer: a new hold
    assert again["hold"] != first["h1"]
    assert held.open_holds(["h1", "h2", "nope"]) == {"h1": again["hold"], "h2": first["h2"]}
    held.close({"h1": first["h1"]})  # the old hold's answer closes nothing now
    assert held.open_holds(["h1"]) == {"h1": again["hold"]}
    assert held.due(later - timedelta(seconds=1)) == []
    [h1] = [d for d in held.due(later) if d["_id"] == "h1"]
    assert {k: h1[k] for k in ("account_id", "campaign_id", "contact_id", "list_id",
                               "attempt", "asks")} == {"account_id": A, "campaign_id": "camp",
                                                       "contact_id": "c-h1", "list_id": "l1",
                                                       "attempt": 1, "asks": 1}
    assert "recipient" not in h1  # ids only
    held.close({"h2": first["h2"]})
    held.asked_again("h1", later + timedelta(minutes=10))
    assert sorted(d["_id"] for d in held.due(later)) == ["h3"]
    [h1] = held.due(later + timedelta(minutes=10))[:1]
    assert h1["_id"] == "h1" and h1["asks"] == 2
    held.forget_account(B)
    assert [d["_id"] for d in held.due(later + timedelta(minutes=10))] == ["h1"]


def test_an_answer_without_a_token_closes_its_job_s_hold(mongo_db):
    """From a contacts older than hold tokens (senders are rolled out first)."""
    held = HeldJobs(mongo_db)
    held.hold([_job("h1"), _job("h2")], T0)
    held.answered(["h1"])
    assert list(held.open_holds(["h1", "h2"])) == ["h2"]


def test_a_parked_answer_is_parked_as_a_plain_job(mongo_db):
    """Its hold closes once it is parked: the copy that goes back on resume
    would otherwise come as a late answer, and be dropped."""
    parked = ParkedJobs(mongo_db)
    answer = Job.from_event(A, {"job_id": "p1", "campaign_id": "camp", "contact_id": "c-p1",
                                "attempt": 0, "answers_held": "ab" * 16,
                                "recipient": {"email": "x@example.com"}})
    parked.park([answer])
    [doc] = parked.take("camp")
    assert "answers_held" not in doc["data"] and doc["data"]["recipient"]["email"] == "x@example.com"


@pytest.mark.timeout(180)
def test_a_sender_takes_one_answer_per_hold(stack_env, tmp_path, sink, unique):
    """Through Kafka: a job read before its contact's address changed is
    held; contacts' answer (here the test's) meets a 4xx and waits on
    send.retry; a second answer to the same hold (from a second ask)
    comes meanwhile. It is dropped: one try of the answer, one message,
    sent from send.retry, announced once."""
    group = Senders(stack_env, tmp_path, sink, unique, SANDESH_SEND_RETRY_BASE_SECONDS=10)
    try:
        account, campaign, contact, job_id = hexid(), hexid(), hexid(), hexid()
        old, new = f"old.{unique}@example.com", f"new.{unique}@example.com"
        sink.set_faults(fail_recipients={new: {"code": 451, "times": 1}})
        group.start()
        group.launch(account, campaign)
        group.publish(topics.CONTACTS_EVENTS, "contact.updated", account, contact,
                      {"contact_id": contact, "fields": ["email"], "revision": 2})
        group.wait(lambda: (group.recorded("contacts", contact) or {}).get("revision") == 2,
                   60, "the sender to hear of the change")
        job = {"job_id": job_id, "campaign_id": campaign, "contact_id": contact,
               "list_id": None, "attempt": 0, "contact_revision": 1,
               "recipient": {"email": old, "name": "Old", "fields": {}}}
        group.publish(topics.SEND_JOBS, "send.job", account, job_id, job)
        [held] = group.wait(lambda: _of(group, job_id, "delivery.held"), 60, "delivery.held")

        answer = {**job, "contact_revision": 2, "answers_held": held.data["hold"],
                  "recipient": {"email": new, "name": "New", "fields": {}}}
        group.publish(topics.SEND_JOBS, "send.job", account, job_id, answer)
        group.wait(lambda: _of(group, job_id, "delivery.deferred"), 60, "the 4xx")
        group.publish(topics.SEND_JOBS, "send.job", account, job_id, answer)  # a second answer
        group.wait(lambda: sink.count() >= 1, 60, "the message")

        time.sleep(3)  # room for anything else to arrive
        assert [m["X-Sink-Rcpt-To"] for m in sink.messages()] == [new]
        sent = _of(group, job_id, "delivery.sent")
        assert [e.data["attempt"] for e in sent] == [1]  # from send.retry, once
        assert group.recorded("held_jobs", job_id) is None
    finally:
        group.dispose()


def _of(group, job_id: str, event_type: str) -> list:
    return [e for e in group.events(idle=0.5, timeout=10)
            if e.type == event_type and e.data["job_id"] == job_id]
