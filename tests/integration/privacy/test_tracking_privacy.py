"""Tracking answers access and erasure against the real FerretDB: the
erased contact's id is nowhere in tracking's database and the campaign's
totals are what they were."""
import json
from types import SimpleNamespace

from services.tracking import privacy
from services.tracking.counting import CountingRules, StatsCounter, build_stats
from services.tracking.store import TrackingStore
from shared.events import decode, new_event
from shared.kafka.memory import InMemoryBroker
from shared.kafka.producer import EventProducer
from shared.topics import PRIVACY_ACKS

ACCOUNT = "acct-t"
CAMPAIGN = "camp-t"


def _event(type_, data, time):
    event = new_event(type_, source="test", subject=CAMPAIGN, account_id=ACCOUNT, data=data)
    return event.__class__(**{**event.__dict__, "time": time})


def _mail_open_click(counter, contact_id, job_id):
    counter.delivery_sent(_event("delivery.sent", {
        "job_id": job_id, "campaign_id": CAMPAIGN, "contact_id": contact_id, "attempt": 0,
        "recipient_domain": "example.com"}, "2026-05-01T10:00:00+00:00"))
    hit = {"campaign_id": CAMPAIGN, "contact_id": contact_id, "job_id": job_id}
    counter.opened(_event("tracking.opened", hit, "2026-05-01T11:00:00+00:00"))
    counter.clicked(_event("tracking.clicked", {**hit, "link_index": 1},
                           "2026-05-01T11:05:00+00:00"))


def _request(kind, contact_id):
    return new_event("privacy.requested", source="sandesh.privacy", subject="r1",
                     account_id=ACCOUNT, data={"request_id": "r1", "kind": kind,
                                               "subject": {"kind": "contact",
                                                           "contact_id": contact_id}})


def _answers(broker):
    return [decode(r.value).data for r in broker.messages(PRIVACY_ACKS)]


def _setup(mongo_db):
    broker = InMemoryBroker()
    producer = EventProducer(broker.sink())
    runtime = SimpleNamespace(db=mongo_db, producer=lambda: producer)
    counter = StatsCounter(TrackingStore(mongo_db), CountingRules())
    for n in range(3):
        _mail_open_click(counter, f"contact-{n}", f"job-{n}")
    return broker, runtime


def _everything(db) -> str:
    """Every record, but the note that the contact was erased (its id, which
    screens the events still coming: shared/erased_contacts.py)."""
    return json.dumps({name: list(db[name].find()) for name in db.list_collection_names()
                       if name != "erased_contacts"}, default=str)


def test_access_lists_messages_opens_and_clicks(mongo_db):
    broker, runtime = _setup(mongo_db)
    privacy.handle_privacy_request(runtime, _request("access", "contact-1"))
    [answer] = _answers(broker)
    assert answer["service"] == "tracking" and answer["status"] == "done"
    export = answer["export"]
    assert [m["job_id"] for m in export["messages_delivered"]] == ["job-1"]
    events = {(e["event"], e.get("link_index")) for e in export["engagement"]}
    assert {("opened", None), ("clicked", None), ("clicked_link", 1)} <= events
    assert export["soft_bounces"] is None


def test_access_includes_the_soft_bounce_tally(mongo_db):
    broker, runtime = _setup(mongo_db)
    store = TrackingStore(mongo_db)
    store.add_soft_bounce(ACCOUNT, "contact-1", "job-1")
    store.add_soft_bounce("another-account", "contact-1", "job-x")  # not this account's
    privacy.handle_privacy_request(runtime, _request("access", "contact-1"))
    [answer] = _answers(broker)
    tally = answer["export"]["soft_bounces"]
    assert tally["messages"] == ["job-1"] and tally["last_at"]


def test_erasure_pseudonymises_and_keeps_the_totals(mongo_db):
    broker, runtime = _setup(mongo_db)
    before = build_stats(TrackingStore(mongo_db), CAMPAIGN)
    privacy.handle_privacy_request(runtime, _request("erasure", "contact-1"))
    privacy.handle_privacy_request(runtime, _request("erasure", "contact-1"))  # redelivered
    assert [a["status"] for a in _answers(broker)] == ["done", "not_found"]
    assert "contact-1" not in _everything(mongo_db)
    assert "contact-0" in _everything(mongo_db)  # the others are untouched
    after = build_stats(TrackingStore(mongo_db), CAMPAIGN)
    assert after == before
    TrackingStore(mongo_db).recount(CAMPAIGN, ACCOUNT)  # a rebuild from markers agrees
    rebuilt = build_stats(TrackingStore(mongo_db), CAMPAIGN)
    assert {k: v for k, v in rebuilt.items() if k != "hourly"} == \
        {k: v for k, v in before.items() if k != "hourly"}


def test_a_request_by_address_waits_for_the_resolved_one(mongo_db):
    broker, runtime = _setup(mongo_db)
    by_hash = new_event("privacy.requested", source="sandesh.privacy", subject="r2",
                        account_id=ACCOUNT, data={"request_id": "r2", "kind": "erasure",
                                                  "subject": {"kind": "contact",
                                                              "email_hash": "ab" * 32}})
    privacy.handle_privacy_request(runtime, by_hash)
    assert _answers(broker) == []
    resolved = new_event("privacy.requested", source="sandesh.privacy", subject="r2",
                         account_id=ACCOUNT, data={**by_hash.data, "resolved": True})
    privacy.handle_privacy_request(runtime, resolved)
    assert [a["status"] for a in _answers(broker)] == ["not_found"]


def _open_click_before_the_delivery(counter, contact_id, job_id, account_id=ACCOUNT,
                                    campaign_id=CAMPAIGN):
    """Hits counted from the message's token while delivery.sent is still
    queued: markers, no delivery record."""
    hit = {"campaign_id": campaign_id, "contact_id": contact_id, "job_id": job_id}
    for type_, data in (("tracking.opened", hit), ("tracking.clicked", {**hit, "link_index": 2})):
        event = new_event(type_, source="test", subject=campaign_id, account_id=account_id,
                          data=data)
        (counter.opened if type_ == "tracking.opened" else counter.clicked)(event)


def test_an_erasure_renames_the_markers_of_hits_counted_before_the_delivery(mongo_db):
    broker, runtime = _setup(mongo_db)
    counter = StatsCounter(TrackingStore(mongo_db), CountingRules())
    _open_click_before_the_delivery(counter, "early", "job-e")
    _open_click_before_the_delivery(counter, "early", "job-x", account_id="another-account",
                                    campaign_id="camp-x")
    before = build_stats(TrackingStore(mongo_db), CAMPAIGN)

    privacy.handle_privacy_request(runtime, _request("erasure", "early"))

    [answer] = _answers(broker)
    assert answer["status"] == "done"
    ours = json.dumps(list(mongo_db.markers.find({"c": CAMPAIGN})), default=str)
    assert "|early" not in ours
    theirs = [m["_id"] for m in mongo_db.markers.find({"c": "camp-x"})]
    assert "camp-x|open_unique|human|early" in theirs   # another account's is not ours to rename
    assert build_stats(TrackingStore(mongo_db), CAMPAIGN) == before


def test_access_lists_the_hits_counted_before_the_delivery(mongo_db):
    broker, runtime = _setup(mongo_db)
    _open_click_before_the_delivery(StatsCounter(TrackingStore(mongo_db), CountingRules()),
                                    "early", "job-e")

    privacy.handle_privacy_request(runtime, _request("access", "early"))

    [answer] = _answers(broker)
    assert answer["status"] == "done"
    events = {(e["event"], e.get("link_index")) for e in answer["export"]["engagement"]}
    assert {("opened", None), ("clicked", None), ("clicked_link", 2)} <= events
