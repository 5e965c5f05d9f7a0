"""A request by address that contacts resolves to several contact ids (the
address deleted more than once through the API, perhaps held again): the
privacy service asks again with every id, and the sender and tracking act on
each of them (real FerretDB, one database per service)."""
import json
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from services.privacy import usecases
from services.privacy.store import PrivacyStore
from services.sender import privacy as sender_privacy
from services.sender.domain import Job
from services.sender.store import ContactStateStore
from services.tracking import privacy as tracking_privacy
from services.tracking.counting import CountingRules, StatsCounter
from services.tracking.store import TrackingStore
from shared import mongo
from shared.config import Config
from shared.events import decode, new_event
from shared.http.internal_auth import Identity
from shared.kafka.memory import InMemoryBroker
from shared.kafka.producer import EventProducer
from shared.topics import PRIVACY_ACKS, PRIVACY_REQUESTS

ACCOUNT = "acct-ids"
CAMPAIGN = "camp-ids"
THE_PERSON = ["c-deleted-once", "c-deleted-twice"]   # one address, two ids
SOMEONE_ELSE = "c-other"
JOBS = {"c-deleted-once": "job-1", "c-deleted-twice": "job-2", "c-other": "job-3"}


@pytest.fixture
def dbs(mongo_uri, unique):
    made = {name: mongo.database(mongo_uri, f"test_{unique}_{name}")
            for name in ("privacy", "sender", "tracking")}
    yield SimpleNamespace(**made)
    for db in made.values():
        mongo.client(mongo_uri).drop_database(db.name)


@pytest.fixture
def broker():
    return InMemoryBroker()


def _runtime(db, broker):
    producer = EventProducer(broker.sink())
    return SimpleNamespace(db=db, producer=lambda: producer)


def _sender_record(job_id, contact_id):
    return {"_id": job_id, "state": "sent", "campaign_id": CAMPAIGN, "account_id": ACCOUNT,
            "attempt": 0, "updated_at": datetime(2026, 5, 1, tzinfo=timezone.utc),
            "event": {"type": "delivery.sent", "data": {
                "job_id": job_id, "campaign_id": CAMPAIGN, "contact_id": contact_id,
                "attempt": 0, "recipient_domain": "example.com", "message_id": f"<{job_id}@x>"}},
            "smtp_reply": "250 ok queued for Jane Doe"}


def _tracked(type_, data):
    return new_event(type_, source="test", subject=CAMPAIGN, account_id=ACCOUNT,
                     data={"campaign_id": CAMPAIGN, **data})


def _seed(dbs):
    """One message to each id in the sender and in tracking, opened."""
    counter = StatsCounter(TrackingStore(dbs.tracking), CountingRules())
    for contact_id in [*THE_PERSON, SOMEONE_ELSE]:
        job_id = JOBS[contact_id]
        dbs.sender.deliveries.insert_one(_sender_record(job_id, contact_id))
        counter.delivery_sent(_tracked("delivery.sent", {
            "job_id": job_id, "contact_id": contact_id, "attempt": 0,
            "recipient_domain": "example.com"}))
        counter.opened(_tracked("tracking.opened", {"job_id": job_id, "contact_id": contact_id}))


def _resolved_request(dbs, broker, kind):
    """The request as the sender and tracking get it once contacts answered
    with both ids."""
    store = PrivacyStore(dbs.privacy)
    producer = EventProducer(broker.sink())
    config = Config(pii_salt="salt", privacy_responders=["contacts", "sender", "tracking"])
    request = usecases.create_request(store, producer, config, Identity(ACCOUNT, "key-1"),
                                      {"kind": kind, "subject": {"email": "jane@example.com"}})
    usecases.record_answer(store, ACCOUNT, {
        "request_id": request["_id"], "service": "contacts", "status": "done",
        "contact_ids": THE_PERSON}, producer=producer)
    resolved = decode(broker.messages(PRIVACY_REQUESTS)[-1].value)  # validated as consumed
    assert resolved.data["resolved"] is True
    return store, request, resolved


def _answers(broker):
    return [decode(r.value).data for r in broker.messages(PRIVACY_ACKS)]


def _values(doc) -> list:
    if isinstance(doc, dict):
        return [v for value in doc.values() for v in _values(value)]
    if isinstance(doc, list):
        return [v for value in doc for v in _values(value)]
    return [doc]


def _tracking_records(db) -> str:
    """Every record but the note that a contact was erased."""
    return json.dumps({name: list(db[name].find()) for name in db.list_collection_names()
                       if name != "erased_contacts"}, default=str)


def _queued(contact_id):
    return Job.from_event(ACCOUNT, {"job_id": "queued-" + JOBS[contact_id], "campaign_id": "camp2",
                                    "contact_id": contact_id, "attempt": 0,
                                    "recipient": {"email": "jane@example.com"}})


def test_an_erasure_resolved_to_several_ids_leaves_none_of_them_in_sender_or_tracking(
        dbs, broker):
    _seed(dbs)
    _, _, resolved = _resolved_request(dbs, broker, "erasure")

    sender_privacy.handle_privacy_request(_runtime(dbs.sender, broker), resolved)
    tracking_privacy.handle_privacy_request(_runtime(dbs.tracking, broker), resolved)

    sender_values = _values(list(dbs.sender.deliveries.find()))
    tracking = _tracking_records(dbs.tracking)
    for contact_id in THE_PERSON:
        assert contact_id not in sender_values
        assert contact_id not in tracking
    assert "250 ok queued for Jane Doe" in sender_values   # someone else's reply stays
    assert SOMEONE_ELSE in sender_values and SOMEONE_ELSE in tracking
    blocked = ContactStateStore(dbs.sender).blocked([_queued(c) for c in THE_PERSON])
    assert blocked == {"queued-" + JOBS[c]: "erased" for c in THE_PERSON}
    assert [sorted(a["contact_ids"]) for a in _answers(broker)] == [sorted(THE_PERSON)] * 2


def test_an_access_resolved_to_several_ids_exports_the_data_of_each(dbs, broker):
    _seed(dbs)
    store, request, resolved = _resolved_request(dbs, broker, "access")

    sender_privacy.handle_privacy_request(_runtime(dbs.sender, broker), resolved)
    tracking_privacy.handle_privacy_request(_runtime(dbs.tracking, broker), resolved)
    for answer in _answers(broker):
        usecases.record_answer(store, ACCOUNT, answer)

    parts = store.export_parts(request["_id"])
    jobs = sorted(JOBS[c] for c in THE_PERSON)
    assert sorted(m["job_id"] for m in parts["sender"]["messages"]) == jobs
    assert sorted(m["job_id"] for m in parts["tracking"]["messages_delivered"]) == jobs
    assert [e["event"] for e in parts["tracking"]["engagement"]] == ["opened", "opened"]


def test_an_erasure_by_any_of_the_ids_takes_the_access_export_made_for_them_all(dbs):
    """Earlier access exports were found by `subject.contact_id` alone: an
    erasure naming the second id left the export of both in place."""
    store = PrivacyStore(dbs.privacy)
    dbs.privacy.requests.insert_one({
        "_id": "r-access", "account_id": ACCOUNT, "kind": "access", "resolved": True,
        "subject": {"kind": "contact", "contact_id": THE_PERSON[0], "contact_ids": THE_PERSON}})
    store.save_export_part("r-access", ACCOUNT, "sender", {"messages": ["job-1", "job-2"]})
    store.forget_contacts(ACCOUNT, [THE_PERSON[1]])
    assert store.export_parts("r-access") == {}
