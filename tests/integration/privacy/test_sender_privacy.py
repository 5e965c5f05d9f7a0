"""The sender answers access and erasure against the real FerretDB: an
erased contact's queued jobs are refused at send time, and its delivery
records keep their outcome under a pseudonym."""
from datetime import datetime, timezone
from types import SimpleNamespace

from services.sender import handlers, privacy
from services.sender.domain import Job
from services.sender.store import ContactStateStore, HeldJobs, ParkedJobs
from shared.erased_accounts import ErasedAccounts
from shared.events import decode, new_event
from shared.kafka.memory import InMemoryBroker
from shared.kafka.producer import EventProducer
from shared.topics import PRIVACY_ACKS

ACCOUNT = "acct-s"


def _record(job_id, contact_id):
    return {"_id": job_id, "state": "sent", "campaign_id": "camp", "account_id": ACCOUNT,
            "attempt": 0, "updated_at": datetime(2026, 5, 1, tzinfo=timezone.utc),
            "event": {"type": "delivery.sent", "data": {
                "job_id": job_id, "campaign_id": "camp", "contact_id": contact_id,
                "attempt": 0, "recipient_domain": "example.com", "message_id": f"<{job_id}@x>",
                "smtp_code": 250, "smtp_status": "2.0.0"}},
            "smtp_reply": "250 2.0.0 ok queued as ***"}


def _job(job_id, contact_id, account_id=ACCOUNT):
    return Job.from_event(account_id, {"job_id": job_id, "campaign_id": "camp2",
                                    "contact_id": contact_id, "attempt": 0,
                                    "recipient": {"email": "someone@example.com"}})


def _request(kind, contact_id, account_id=ACCOUNT):
    return new_event("privacy.requested", source="sandesh.privacy", subject="r1",
                     account_id=account_id, data={"request_id": "r1", "kind": kind,
                                               "subject": {"kind": "contact",
                                                           "contact_id": contact_id}})


def _setup(mongo_db):
    broker = InMemoryBroker()
    producer = EventProducer(broker.sink())
    mongo_db.deliveries.insert_many([_record("j1", "c1"), _record("j2", "c1"), _record("j3", "c2")])
    return broker, SimpleNamespace(db=mongo_db, producer=lambda: producer)


def _values(doc) -> list:
    """Every leaf value of a document (compared whole, not as substrings:
    a random pseudonym may contain "c1")."""
    if isinstance(doc, dict):
        return [v for value in doc.values() for v in _values(value)]
    if isinstance(doc, list):
        return [v for value in doc for v in _values(value)]
    return [doc]


def _answers(broker):
    return [decode(r.value).data for r in broker.messages(PRIVACY_ACKS)]


def test_access_lists_the_messages_sent_with_dates(mongo_db):
    broker, runtime = _setup(mongo_db)
    privacy.handle_privacy_request(runtime, _request("access", "c1"))
    [answer] = _answers(broker)
    messages = answer["export"]["messages"]
    assert sorted(m["job_id"] for m in messages) == ["j1", "j2"]
    assert messages[0]["at"] == "2026-05-01T00:00:00+00:00" and messages[0]["outcome"] == "sent"


def test_erasure_blocks_queued_jobs_and_pseudonymises_records(mongo_db):
    broker, runtime = _setup(mongo_db)
    privacy.handle_privacy_request(runtime, _request("erasure", "c1"))
    [answer] = _answers(broker)
    assert answer["status"] == "done" and answer["contact_ids"] == ["c1"]
    blocked = ContactStateStore(mongo_db).blocked([_job("q1", "c1"), _job("q2", "c2")])
    assert blocked == {"q1": "erased"}
    records = {d["_id"]: d for d in mongo_db.deliveries.find()}
    assert records["j1"]["state"] == "sent"
    for job in ("j1", "j2"):
        data = records[job]["event"]["data"]
        assert data["contact_id"].startswith("erased-") and "recipient_domain" not in data
        assert "c1" not in _values(records[job])   # the id is nowhere else either
    assert records["j3"]["event"]["data"]["contact_id"] == "c2"


def test_restriction_stops_sending_without_erasing(mongo_db):
    broker, runtime = _setup(mongo_db)
    privacy.handle_privacy_request(runtime, _request("restriction", "c2"))
    assert ContactStateStore(mongo_db).blocked([_job("q3", "c2")]) == {"q3": "suppressed"}
    assert mongo_db.deliveries.find_one({"_id": "j3"})["event"]["data"]["contact_id"] == "c2"


def test_another_accounts_request_naming_the_contact_silences_nothing(mongo_db):
    """Contact ids are not secret (tracking links carry them): an erasure or
    restriction filed by another account must not stop the owner's mail,
    nor touch its parked jobs."""
    broker, runtime = _setup(mongo_db)
    mongo_db.parked_jobs.insert_one({"_id": "p1", "campaign_id": "camp2", "account_id": ACCOUNT,
                                     "contact_id": "c1",
                                     "data": {"recipient": {"email": "someone@example.com"}}})
    for kind in ("erasure", "restriction"):
        privacy.handle_privacy_request(runtime, _request(kind, "c1", account_id="intruder"))
    states = ContactStateStore(mongo_db)
    assert states.blocked([_job("q1", "c1")]) == {}
    assert mongo_db.parked_jobs.find_one({"_id": "p1"})["data"]["recipient"]["email"] == \
        "someone@example.com"
    assert states.blocked([_job("q2", "c1", account_id="intruder")]) == {"q2": "erased"}


def test_a_job_parked_after_the_erasure_keeps_no_address(mongo_db):
    """The erasure rewrote the address of the jobs parked then; one parked
    after it (its campaign paused later) kept the address until it went back."""
    ParkedJobs(mongo_db).park([_job("late", "c1"), _job("other", "c2")], erased={"late"})
    stored = {d["job_id"]: d["data"]["recipient"]["email"] for d in mongo_db.parked_jobs.find()}
    assert stored == {"late": "erased@invalid", "other": "someone@example.com"}


def _contact_event(type_, account_id, data):
    return new_event(type_, source="sandesh.contacts", subject=data["contact_id"],
                     account_id=account_id, data=data)


def _account_erasure(account_id):
    return new_event("privacy.requested", source="sandesh.privacy", subject="r2",
                     account_id=account_id, data={"request_id": "r2", "kind": "erasure",
                                                  "subject": {"kind": "account"}})


def test_access_includes_the_parked_jobs_and_the_send_time_state(mongo_db):
    """A parked job holds the recipient's address, name and fields: what the
    sender holds on the contact, so the export shows it. The send-time state
    is shown to its owner only: another account naming the id sees none of it."""
    broker, runtime = _setup(mongo_db)
    table = handlers.contact_handlers(ContactStateStore(mongo_db))
    table["contact.unsubscribed"](_contact_event("contact.unsubscribed", ACCOUNT,
                                                 {"contact_id": "c1", "list_id": "l1"}))
    ParkedJobs(mongo_db).park([Job.from_event(ACCOUNT, {
        "job_id": "p1", "campaign_id": "camp2", "contact_id": "c1", "attempt": 0,
        "recipient": {"email": "someone@example.com", "name": "Some One"}})])
    privacy.handle_privacy_request(runtime, _request("access", "c1"))
    privacy.handle_privacy_request(runtime, _request("access", "c1", account_id="intruder"))
    owner, intruder = _answers(broker)
    [parked] = owner["export"]["queued_messages"]
    assert parked["job_id"] == "p1" and parked["campaign_id"] == "camp2"
    assert parked["recipient"] == {"email": "someone@example.com", "name": "Some One"}
    assert owner["export"]["send_time_state"]["lists"] == ["l1"]
    assert intruder["status"] == "not_found"
    assert intruder["export"] == {"messages": [], "queued_messages": [], "send_time_state": {}}


def test_an_account_erasure_deletes_its_contacts_send_time_state_and_its_marks(mongo_db):
    broker, runtime = _setup(mongo_db)
    states = ContactStateStore(mongo_db)
    runtime.erased_accounts = ErasedAccounts(mongo_db)   # shared, as the worker's loop shares it
    table = handlers.contact_handlers(states, runtime.erased_accounts)
    table["contact.unsubscribed"](_contact_event("contact.unsubscribed", ACCOUNT,
                                                 {"contact_id": "mine", "list_id": "l1"}))
    table["contact.status_changed"](_contact_event("contact.status_changed", "other",
                                                   {"contact_id": "theirs", "status": "bounced"}))
    # this account's marks: on an id nobody else has a state for, and on the other's contact
    privacy.handle_privacy_request(runtime, _request("erasure", "stray"))
    privacy.handle_privacy_request(runtime, _request("restriction", "theirs"))
    HeldJobs(mongo_db).hold([_job("h-mine", "mine"), _job("h-theirs", "theirs",
                                                          account_id="other")],
                            datetime.now(timezone.utc))
    privacy.handle_privacy_request(runtime, _account_erasure(ACCOUNT))
    assert [d["_id"] for d in mongo_db.held_jobs.find()] == ["h-theirs"]
    left = {d["_id"]: d for d in mongo_db.contacts.find()}
    assert set(left) == {"theirs"}
    assert left["theirs"]["status"] == "bounced" and not left["theirs"].get("restricted_by")
    assert states.blocked([_job("q", "theirs", account_id="other")]) == {"q": "bounced"}
    # A late unsubscribe of the erased account (an old mail's link) brings nothing back.
    table["tracking.unsubscribed"](_contact_event("tracking.unsubscribed", ACCOUNT,
                                                  {"contact_id": "mine", "list_id": None}))
    assert mongo_db.contacts.find_one({"_id": "mine"}) is None


def test_records_written_after_an_erasure_are_found_and_rewritten_as_it_left_the_others(mongo_db):
    """A message on the wire when the erasure ran was recorded after it,
    under the contact's id and with the SMTP reply: the engine asks which
    of its batch's contacts were erased (the erasure marks that first) and
    rewrites their records (Engine._forget_erased_since)."""
    from services.sender.store import DeliveryStore

    broker, runtime = _setup(mongo_db)
    privacy.handle_privacy_request(runtime, _request("erasure", "c1"))
    mongo_db.deliveries.insert_one(_record("j4", "c1"))   # the batch on the wire, recorded now
    erased = ContactStateStore(mongo_db).erased_jobs(
        [_job("j4", "c1"), _job("j5", "c2"), _job("j6", "c1", account_id="acct-other")])
    assert erased == {"j4"}
    DeliveryStore(mongo_db, "me", 60).forget_contacts(erased)
    late = mongo_db.deliveries.find_one({"_id": "j4"})
    assert "c1" not in _values(late) and "smtp_reply" not in late
    assert "recipient_domain" not in late["event"]["data"]
    assert late["event"]["data"]["contact_id"] != mongo_db.deliveries.find_one(
        {"_id": "j1"})["event"]["data"]["contact_id"]
    assert mongo_db.deliveries.find_one({"_id": "j3"})["event"]["data"]["contact_id"] == "c2"
