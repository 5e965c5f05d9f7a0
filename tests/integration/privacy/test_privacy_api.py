"""The privacy service's HTTP API in-process, against the real FerretDB and
Kafka, called with the identity the gateway signs."""
import json
from urllib.parse import urlencode
from datetime import datetime, timedelta, timezone

import pytest

from services.privacy import aggregates, usecases
from services.privacy.app import create_app
from services.privacy.store import PrivacyStore
from shared.events import new_event
from shared.http.internal_auth import Identity
from tests.clock import UTC_DAY, clear_of_boundary
from tests.signed import signed_open

SECRET = "internal-secret-for-tests"


@pytest.fixture
def app(mongo_uri, kafka_bootstrap, unique):
    app = create_app({"SANDESH_MONGO_URI": mongo_uri, "SANDESH_KAFKA_BOOTSTRAP": kafka_bootstrap,
                      "SANDESH_INTERNAL_SECRET": SECRET, "SANDESH_PII_SALT": "s",
                      "SANDESH_MONGO_DB_PREFIX": f"test_{unique}_",
                      "SANDESH_PRIVACY_AGGREGATE_K": "3"})
    yield app
    from shared import mongo
    mongo.client(mongo_uri).drop_database(f"test_{unique}_privacy")


class Caller:
    def __init__(self, app, account_id, principal="key-1"):
        self.client = app.test_client()
        self.identity = Identity(account_id, principal)

    def __call__(self, method, path, **kwargs):
        return signed_open(self.client, SECRET, self.identity, method, path, **kwargs)


@pytest.fixture
def acme(app, unique):
    return Caller(app, "acme-" + unique)


@pytest.fixture
def operator(app):
    return Caller(app, "platform", principal="operator")


def _db(app):
    return app.extensions["runtime"].db


def test_unsigned_calls_are_refused(app):
    assert app.test_client().get("/api/v1/privacy/requests").status_code == 401


@pytest.mark.parametrize("body, field", [
    ({"kind": "forget", "subject": {"contact_id": "c1"}}, "kind"),
    ({"kind": "erasure"}, "subject"),
    ({"kind": "erasure", "subject": {}}, "subject"),
    ({"kind": "erasure", "subject": {"contact_id": "c1", "user_id": "u1"}}, "subject"),
    # two names that may be of two people: answered for one, unsaid
    ({"kind": "access", "subject": {"contact_id": "c1", "email": "x@example.com"}}, "subject"),
    ({"kind": "erasure", "subject": {"email": "not an address"}}, "subject.email"),
    ({"kind": "rectification", "subject": {"contact_id": "c1"}}, "changes"),
    ({"kind": "erasure", "subject": {"contact_id": "c1"}, "changes": {"name": "x"}}, "changes"),
    ({"kind": "erasure", "subject": {"contact_id": "c1"}, "surprise": 1}, "surprise"),
    # values MongoDB cannot store are refused here, not by an error when stored
    ({"kind": "rectification", "subject": {"contact_id": "c1"}, "changes": {"name": 10 ** 20}},
     "changes"),
    ({"kind": "rectification", "subject": {"contact_id": "c1"}, "changes": {"na\x00me": "x"}},
     "changes"),
    ({"kind": "rectification", "subject": {"contact_id": "c1"},
      "changes": {"fields": {"a.b": 1}}}, "changes"),
    ({"kind": "rectification", "subject": {"contact_id": "c1"},
      "changes": {"fields": {"x": {"deeper": 1}}}}, "changes"),
    # what contacts cannot change: refused here, not accepted and left needing attention
    ({"kind": "rectification", "subject": {"contact_id": "c1"}, "changes": {"status": "active"}},
     "changes.status"),
    ({"kind": "rectification", "subject": {"contact_id": "c1"}, "changes": {"_id": "x"}},
     "changes._id"),
    ({"kind": "rectification", "subject": {"contact_id": "c1"}, "changes": {"email": "bad"}},
     "changes.email"),
    ({"kind": "rectification", "subject": {"contact_id": "c1"}, "changes": {"name": 5}},
     "changes.name"),
    # contacts refuses a name that is not one line: accepted, it ended needing attention
    ({"kind": "rectification", "subject": {"contact_id": "c1"}, "changes": {"name": "A\r\nB"}},
     "changes.name"),
    ({"kind": "rectification", "subject": {"contact_id": "c1"}, "changes": {"fields": "x"}},
     "changes.fields"),
    # one error, not one per key: 20,000 of them made a 1.9 MB answer
    ({"kind": "rectification", "subject": {"contact_id": "c1"},
      "changes": {f"K-{i}": 1 for i in range(20_000)}}, "changes"),
    # an account user is erased / corrected by the gateway's users API, at once
    ({"kind": "erasure", "subject": {"user_id": "u1"}}, "kind"),
    ({"kind": "rectification", "subject": {"user_id": "u1"}, "changes": {"name": "x"}}, "kind"),
    ({"kind": "restriction", "subject": {"user_id": "u1"}}, "kind"),
])
def test_a_bad_request_is_a_400_naming_the_field(acme, app, body, field):
    response = acme("POST", "/api/v1/privacy/requests", json=body)
    assert response.status_code == 400, response.get_json()
    assert field in response.get_json()["error"]["details"]
    assert len(response.get_data()) < 10_000
    assert _db(app).requests.count_documents({}) == 0   # nothing recorded, nothing "complete"


def test_a_user_erasure_is_refused_with_the_users_api_to_use(acme):
    response = acme("POST", "/api/v1/privacy/requests",
                    json={"kind": "erasure", "subject": {"user_id": "u1"}})
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["kind"] == \
        ["an account user is erased with DELETE /api/v1/users/<id>"]


def access_requests(acme, *contact_ids: str) -> list[dict]:
    return [acme("POST", "/api/v1/privacy/requests",
                 json={"kind": "access", "subject": {"contact_id": c}}).get_json()
            for c in contact_ids]


def test_an_erasure_deletes_earlier_access_exports_of_the_contact(acme, app):
    store = PrivacyStore(_db(app))
    account = acme.identity.account_id
    access, other = access_requests(acme, "c7", "c8")
    for request in (access, other):
        usecases.record_answer(store, account, {"request_id": request["id"], "service": "contacts",
                                                "status": "done", "export": {"contact": {"name": "x"}}})
    erasure = acme("POST", "/api/v1/privacy/requests",
                   json={"kind": "erasure", "subject": {"email": "c7@example.com"}}).get_json()
    usecases.record_answer(store, account, {"request_id": erasure["id"], "service": "contacts",
                                            "status": "done", "contact_ids": ["c7"]})
    assert set(store.export_parts(access["id"])) == set()
    assert set(store.export_parts(other["id"])) == {"contacts"}


def test_an_access_export_arriving_after_the_contacts_erasure_is_not_kept(acme, app):
    """The erasure deletes the exports it finds; a service's part of an
    access request that came in after it (a slow responder) was kept."""
    store = PrivacyStore(_db(app))
    account = acme.identity.account_id
    access, other = access_requests(acme, "c17", "c18")
    erasure = acme("POST", "/api/v1/privacy/requests",
                   json={"kind": "erasure", "subject": {"contact_id": "c17"}}).get_json()
    usecases.record_answer(store, account, {"request_id": erasure["id"], "service": "contacts",
                                            "status": "done", "contact_ids": ["c17"]})
    for request in (access, other):
        for service in ("contacts", "tracking"):
            usecases.record_answer(store, account, {
                "request_id": request["id"], "service": service, "status": "done",
                "export": {"opens": ["2026-12-01"]}})
    assert store.export_parts(access["id"]) == {}
    assert set(store.export_parts(other["id"])) == {"contacts", "tracking"}


def test_a_request_is_stored_with_its_due_date_and_can_be_extended_twice_at_most(acme, app):
    response = acme("POST", "/api/v1/privacy/requests",
                    json={"kind": "erasure", "subject": {"email": "jo@example.com"}})
    assert response.status_code == 201, response.get_json()
    request = response.get_json()
    created = datetime.fromisoformat(request["created_at"])
    due = datetime.fromisoformat(request["due_at"])
    assert 28 <= (due - created).days <= 31
    assert request["responders"] == ["contacts", "sender", "tracking"]
    assert request["waiting_for"] == request["responders"]
    assert "jo@example.com" not in json.dumps(list(_db(app).requests.find()), default=str)

    path = f"/api/v1/privacy/requests/{request['id']}/extend"
    assert acme("POST", path, json={"months": 1}).status_code == 400  # reason is required
    extended = acme("POST", path, json={"months": 1, "reason": "complex request"}).get_json()
    assert len(extended["extensions"]) == 1 and extended["extensions"][0]["reason"] == "complex request"
    assert datetime.fromisoformat(extended["due_at"]) > due
    refused = acme("POST", path, json={"months": 2, "reason": "more"})
    assert refused.status_code == 400 and "months" in refused.get_json()["error"]["details"]
    assert acme("POST", path, json={"months": 1, "reason": "still"}).status_code == 200


def test_the_free_text_on_requests_is_forgotten_with_the_person_and_never_audited(acme, app):
    """A request's reason (and an extension's) is the account's free text,
    often naming the person: it was copied into the append-only audit log
    and kept after the person's erasure and the account's deletion."""
    from services.privacy.store import PrivacyStore
    said = "phoned in by Jane Roe (jane@example.com)"
    request = acme("POST", "/api/v1/privacy/requests", json={
        "kind": "access", "subject": {"contact_id": "c9"}, "reason": said}).get_json()
    acme("POST", f"/api/v1/privacy/requests/{request['id']}/extend",
         json={"months": 1, "reason": "Jane Roe sent more papers"})
    other = acme("POST", "/api/v1/privacy/requests", json={
        "kind": "access", "subject": {"contact_id": "c10"}, "reason": "about Kim"}).get_json()
    assert acme("GET", f"/api/v1/privacy/requests/{request['id']}").get_json()["reason"] == said
    audit = acme("GET", "/api/v1/privacy/audit").get_json()["items"]
    assert not [e for e in audit if e["reason"] and ("Jane" in e["reason"] or "Kim" in e["reason"])]
    store = PrivacyStore(_db(app).client[_db(app).name])
    store.forget_contacts(acme.identity.account_id, ["c9"])
    forgotten = acme("GET", f"/api/v1/privacy/requests/{request['id']}").get_json()
    assert forgotten["reason"] == "(erased)"
    assert [e["reason"] for e in forgotten["extensions"]] == ["(erased)"]
    assert acme("GET", f"/api/v1/privacy/requests/{other['id']}").get_json()["reason"] == \
        "about Kim"
    store.forget_account(acme.identity.account_id)
    assert "Kim" not in json.dumps(list(_db(app).requests.find()), default=str)


def test_an_audit_entrys_free_text_reason_is_forgotten_with_the_person_it_is_about(acme, app):
    """POST /privacy/audit (and audit.recorded) take a caller's free text,
    which may name the person: it stayed in the append-only log after the
    erasure. The entry stays, its reason goes; others keep theirs."""
    from services.privacy.store import PrivacyStore

    def entry(target_id, reason, **more):
        return acme("POST", "/api/v1/privacy/audit", json={
            "action": "contact.viewed", "target_type": "contact", "target_id": target_id,
            "reason": reason, **more}).get_json()["id"]

    about_jane = entry("c9", "Jane Roe called about her order")
    about_kim = entry("c10", "Kim asked for a copy")
    request = acme("POST", "/api/v1/privacy/requests", json={
        "kind": "access", "subject": {"contact_id": "c9"}}).get_json()
    _db(app).audit.insert_one({  # an export download before 2026-12-07: the caller's reason
        "_id": "old-download", "account_id": acme.identity.account_id,
        "at": datetime.now(timezone.utc), "action": "export.downloaded", "service": "privacy",
        "principal": "k", "target_type": "request", "target_id": request["id"],
        "request_id": request["id"], "reason": "for Jane Roe's lawyer"})
    store = PrivacyStore(_db(app).client[_db(app).name])
    store.forget_contacts(acme.identity.account_id, ["c9"])
    reasons = {e["id"]: e["reason"]
               for e in acme("GET", "/api/v1/privacy/audit?limit=100").get_json()["items"]}
    assert reasons[about_jane] == "(erased)" and reasons["old-download"] == "(erased)"
    assert reasons[about_kim] == "Kim asked for a copy"
    assert "Jane" not in json.dumps(list(_db(app).audit.find()), default=str)
    late = entry("c9", "Jane Roe again, after her erasure")   # an audit.recorded that came late
    assert _db(app).audit.find_one({"_id": late})["reason"] == "(erased)"
    store.forget_account(acme.identity.account_id)
    assert "Kim" not in json.dumps(list(_db(app).audit.find()), default=str)
    assert _db(app).audit.count_documents({"_id": about_kim}) == 1   # the proof stays


def test_a_request_a_service_could_not_fulfil_is_retried_or_closed_not_left_for_good(acme, app):
    """needs_attention was a dead end: nothing retried or ended it, it stayed
    overdue for ever, and a rectification's new values were kept for good."""
    store = PrivacyStore(_db(app))
    account = acme.identity.account_id
    made = acme("POST", "/api/v1/privacy/requests", json={
        "kind": "rectification", "subject": {"contact_id": "c7"},
        "changes": {"fields": {"tier": "gold"}}}).get_json()
    path = f"/api/v1/privacy/requests/{made['id']}"
    refused = acme("POST", f"{path}/retry")
    assert refused.status_code == 409 and "status" in refused.get_json()["error"]["details"]

    def contacts_answer(status):
        usecases.record_answer(store, account, {"request_id": made["id"], "service": "contacts",
                                                "status": status, "detail": "no field tier"})
    for service in ("sender", "tracking"):
        usecases.record_answer(store, account, {"request_id": made["id"], "service": service,
                                                "status": "done"})
    contacts_answer("failed")
    assert acme("GET", path).get_json()["status"] == "needs_attention"

    retried = acme("POST", f"{path}/retry")   # the account added the field meanwhile
    assert retried.status_code == 200, retried.get_json()
    assert retried.get_json()["status"] == "pending"
    assert retried.get_json()["waiting_for"] == ["contacts"]
    assert "unpublished" not in _db(app).requests.find_one({"_id": made["id"]})   # sent again

    contacts_answer("failed")
    assert acme("POST", f"{path}/close", json={}).status_code == 400   # a reason is required
    closed = acme("POST", f"{path}/close", json={"reason": "we keep no loyalty tier"})
    assert closed.status_code == 200, closed.get_json()
    body = closed.get_json()
    assert body["status"] == "closed" and body["close_reason"] == "we keep no loyalty tier"
    assert "changes" not in _db(app).requests.find_one({"_id": made["id"]})
    assert made["id"] not in {r["id"] for r in acme(
        "GET", "/api/v1/privacy/requests?open=true").get_json()["items"]}
    long_after = datetime.now(timezone.utc) + timedelta(days=400)
    assert usecases.overdue_requests(store, account, timedelta(hours=1), at=long_after) == []
    contacts_answer("done")   # a late answer: kept, the end stands
    assert acme("GET", path).get_json()["status"] == "closed"
    assert acme("POST", f"{path}/close", json={"reason": "again"}).status_code == 409
    assert acme("POST", "/api/v1/privacy/requests/" + "0" * 32 + "/retry").status_code == 404
    actions = {e["action"] for e in acme("GET", "/api/v1/privacy/audit").get_json()["items"]}
    assert {"rectification.retried", "rectification.closed"} <= actions


def test_another_accounts_request_is_not_found(acme, app):
    request = acme("POST", "/api/v1/privacy/requests",
                   json={"kind": "access", "subject": {"contact_id": "c1"}}).get_json()
    other = Caller(app, "someone-else")
    assert other("GET", f"/api/v1/privacy/requests/{request['id']}").status_code == 404
    assert other("GET", "/api/v1/privacy/requests").get_json()["items"] == []


def test_overdue_requests_are_listed_and_exported_as_a_gauge(acme, app):
    store = PrivacyStore(_db(app))
    request = acme("POST", "/api/v1/privacy/requests",
                   json={"kind": "erasure", "subject": {"contact_id": "c9"}}).get_json()
    assert acme("GET", "/api/v1/privacy/requests?overdue=true").get_json()["items"] == []
    # a month and a day later, nobody having answered but contacts
    store.db.requests.update_one({"_id": request["id"]}, {"$set": {
        "created_at": datetime.now(timezone.utc) - timedelta(days=32),
        "due_at": datetime.now(timezone.utc) - timedelta(days=1)}})
    usecases.record_answer(store, acme.identity.account_id,
                           {"request_id": request["id"], "service": "contacts", "status": "done"})
    [late] = acme("GET", "/api/v1/privacy/requests?overdue=true").get_json()["items"]
    assert late["id"] == request["id"] and late["overdue"] is True
    assert late["waiting_for"] == ["sender", "tracking"]
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    overdue_line = [l for l in metrics.splitlines() if l.startswith("sandesh_privacy_requests_overdue ")]
    assert overdue_line and float(overdue_line[0].split()[1]) >= 1
    assert 'sandesh_privacy_silent_services{responder="sender"}' in metrics


def test_an_access_export_is_assembled_when_complete_and_the_download_is_audited(acme, app):
    store = PrivacyStore(_db(app))
    request = acme("POST", "/api/v1/privacy/requests",
                   json={"kind": "access", "subject": {"contact_id": "c5"}, "reason": "asked"}).get_json()
    path = f"/api/v1/privacy/requests/{request['id']}/export"
    early = acme("GET", path)
    assert early.status_code == 409 and early.get_json()["error"]["code"] == "not_complete"
    parts = {"contacts": {"contact": {"id": "c5", "status": "subscribed"}, "consent_log": [{"action": "subscribed"}]},
             "sender": {"messages": [{"job_id": "j1", "at": "2026-05-01T00:00:00+00:00"}]},
             "tracking": {"engagement": [{"event": "opened", "campaign_id": "k"}]}}
    for service, export in parts.items():
        usecases.record_answer(store, acme.identity.account_id,
                               {"request_id": request["id"], "service": service, "status": "done",
                                "export": export})
    assert acme("GET", f"/api/v1/privacy/requests/{request['id']}").get_json()["status"] == "complete"
    response = acme("GET", path)
    assert response.status_code == 200
    assert "attachment" in response.headers["Content-Disposition"]
    export = json.loads(response.get_data())
    assert {s: export["services"][s]["data"] for s in parts} == parts
    text = acme("GET", path + "?format=text")
    assert text.mimetype == "text/plain" and "== sender (done) ==" in text.get_data(as_text=True)
    assert acme("GET", path + "?format=html").mimetype == "text/html"
    assert acme("GET", path + "?format=pdf").status_code == 400
    # a download's free-text reason went into the audit log, which no
    # erasure rewrites; it is refused, naming the parameter
    why = acme("GET", path + "?reason=sending+Jane+Doe+her+data")
    assert why.status_code == 400 and "reason" in why.get_json()["error"]["details"]
    head = acme("HEAD", path)  # a link checker's: no download to record
    assert head.status_code == 405 and head.headers["Allow"] == "GET"
    audit = acme("GET", "/api/v1/privacy/audit").get_json()["items"]
    actions = [e["action"] for e in audit]
    assert actions.count("export.downloaded") == 3
    assert sorted(e["reason"] for e in audit if e["action"] == "export.downloaded") == [
        "access request (html)", "access request (json)", "access request (text)"]
    assert {"access.requested", "access.completed"} <= set(actions)
    assert all(e["account_id"] == acme.identity.account_id for e in audit)


def test_an_access_export_is_deleted_some_days_after_the_request_completed(acme, app):
    """Exports never expired: a copy of every person's data who ever asked,
    downloadable for good."""
    store = PrivacyStore(_db(app))
    made = [acme("POST", "/api/v1/privacy/requests", json={
        "kind": "access", "subject": {"contact_id": c}}).get_json() for c in ("c11", "c12")]
    for request in made:
        for service in ("contacts", "sender", "tracking"):
            usecases.record_answer(store, acme.identity.account_id, {
                "request_id": request["id"], "service": service, "status": "done",
                "export": {"held": [service]}})
    old, recent = made
    _db(app).requests.update_one({"_id": old["id"]}, {"$set": {
        "completed_at": datetime.now(timezone.utc) - timedelta(days=31)}})
    assert usecases.expire_exports(store, 30) == 1
    assert usecases.expire_exports(store, 30) == 0   # once
    gone = acme("GET", f"/api/v1/privacy/requests/{old['id']}/export")
    assert gone.status_code == 410 and gone.get_json()["error"]["code"] == "export_expired"
    assert store.export_parts(old["id"]) == {}
    assert acme("GET", f"/api/v1/privacy/requests/{old['id']}").get_json()["export_expired_at"]
    assert acme("GET", f"/api/v1/privacy/requests/{recent['id']}/export").status_code == 200


def test_the_audit_log_is_filtered_by_account_and_time(acme, app):
    for n in range(3):
        assert acme("POST", "/api/v1/privacy/audit",
                    json={"action": "contact.viewed", "target_type": "contact",
                          "target_id": f"c{n}", "reason": "support ticket"}).status_code == 201
    other = Caller(app, "other-account")
    other("POST", "/api/v1/privacy/audit", json={"action": "x", "target_type": "contact"})
    entries = acme("GET", "/api/v1/privacy/audit?limit=2").get_json()
    assert len(entries["items"]) == 2 and entries["next_cursor"]
    rest = acme("GET", f"/api/v1/privacy/audit?cursor={entries['next_cursor']}").get_json()
    assert [e["target_id"] for e in entries["items"] + rest["items"]] == ["c0", "c1", "c2"]
    assert entries["items"][0]["principal"] == "key-1"
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    since = urlencode({"since": future})
    assert acme("GET", f"/api/v1/privacy/audit?{since}").get_json()["items"] == []
    until = urlencode({"until": future})
    assert len(acme("GET", f"/api/v1/privacy/audit?{until}").get_json()["items"]) == 3
    reversed_range = urlencode({"since": future, "until": datetime.now(timezone.utc).isoformat()})
    refused = acme("GET", f"/api/v1/privacy/audit?{reversed_range}")
    assert refused.status_code == 400 and "until" in refused.get_json()["error"]["details"]
    for query in ({"since": "9999-12-31T23:00:00-05:00"}, {"cursor": "eyJhIjoxfQ"}):  # {"a":1}
        refused = acme("GET", f"/api/v1/privacy/audit?{urlencode(query)}")
        assert refused.status_code == 400 and list(refused.get_json()["error"]["details"]) == \
            list(query)
    # an audit.recorded event from another service lands in the same log
    event = new_event("audit.recorded", source="sandesh.contacts", subject="c7",
                      account_id=acme.identity.account_id,
                      data={"action": "contacts.exported", "target_type": "list", "target_id": "l1",
                            "principal": "key-2", "service": "contacts"})
    usecases.record_audit_event(PrivacyStore(_db(app)), event)
    usecases.record_audit_event(PrivacyStore(_db(app)), event)  # redelivered
    exported = [e for e in acme("GET", "/api/v1/privacy/audit").get_json()["items"]
                if e["action"] == "contacts.exported"]
    assert len(exported) == 1 and exported[0]["principal"] == "key-2"


def test_a_policy_29_days_out_is_refused_and_30_days_accepted(operator, acme):
    clear_of_boundary(UTC_DAY, margin=60)  # the rule counts calendar days from the server's now
    now = datetime.now(timezone.utc)
    body = {"text": "We keep your data safe.", "summary": "first version", "material": True}
    refused = operator("POST", "/api/v1/privacy/policies",
                       json={**body, "effective_at": (now + timedelta(days=29)).isoformat()})
    assert refused.status_code == 400
    assert "effective_at" in refused.get_json()["error"]["details"]
    accepted = operator("POST", "/api/v1/privacy/policies",
                        json={**body, "effective_at": (now + timedelta(days=30)).isoformat()})
    assert accepted.status_code == 201, accepted.get_json()
    assert acme("POST", "/api/v1/privacy/policies",
                json={**body, "effective_at": (now + timedelta(days=40)).isoformat()}).status_code == 403


def test_notices_are_shown_until_acknowledged(operator, acme):
    effective = (datetime.now(timezone.utc) + timedelta(days=31)).isoformat()
    policy = operator("POST", "/api/v1/privacy/policies",
                      json={"text": "v2", "summary": "we changed retention", "material": True,
                            "effective_at": effective}).get_json()
    notices = acme("GET", "/api/v1/privacy/notices?user_id=u1").get_json()["items"]
    assert policy["id"] in [n["policy_id"] for n in notices]
    ack = acme("POST", f"/api/v1/privacy/notices/{policy['id']}/ack", json={"user_id": "u1"})
    assert ack.status_code == 200 and ack.get_json()["user_id"] == "u1"
    again = acme("POST", f"/api/v1/privacy/notices/{policy['id']}/ack", json={"user_id": "u1"})
    assert again.get_json()["at"] == ack.get_json()["at"]  # the first acknowledgement stands
    left = acme("GET", "/api/v1/privacy/notices?user_id=u1").get_json()["items"]
    assert policy["id"] not in [n["policy_id"] for n in left]
    # another user of the same account still sees it
    assert policy["id"] in [n["policy_id"] for n in
                            acme("GET", "/api/v1/privacy/notices?user_id=u2").get_json()["items"]]
    assert acme("POST", "/api/v1/privacy/notices/nope/ack", json={}).status_code == 404


def test_notices_are_paged_in_order_skipping_the_acknowledged_ones(operator, acme):
    effective = (datetime.now(timezone.utc) + timedelta(days=31)).isoformat()
    made = [operator("POST", "/api/v1/privacy/policies",
                     json={"text": f"v{n}", "summary": f"change {n}", "material": True,
                           "effective_at": effective}).get_json()["id"] for n in range(5)]
    for policy_id in (made[1], made[3]):
        assert acme("POST", f"/api/v1/privacy/notices/{policy_id}/ack",
                    json={"user_id": "u3"}).status_code == 200
    listed, cursor, sizes = [], None, []
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = acme("GET", f"/api/v1/privacy/notices?user_id=u3&{query}").get_json()
        listed += [n["policy_id"] for n in body["items"]]
        sizes.append(len(body["items"]))
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert all(size == 2 for size in sizes[:-1]) and listed == sorted(listed)
    assert made[1] not in listed and made[3] not in listed
    assert [made[0], made[2], made[4]] == [p for p in listed if p in made]
    bad = acme("GET", "/api/v1/privacy/notices?cursor=x")
    assert bad.status_code == 400 and list(bad.get_json()["error"]["details"]) == ["cursor"]


def test_aggregates_suppress_groups_smaller_than_k(acme, app):
    store = PrivacyStore(_db(app))
    account = acme.identity.account_id

    def sent(n, provider, job=None, field="mailbox_provider"):
        event = new_event("delivery.sent", source="sandesh.sender", subject=f"j{n}",
                          account_id=account, data={"job_id": job or f"j{n}", "campaign_id": "k",
                                                    "contact_id": f"c{n}", "attempt": 0,
                                                    field: provider})
        return event.__class__(**{**event.__dict__, "time": "2026-05-01T10:00:00+00:00"})

    batch = [sent(n, "gmail.com") for n in range(4)]
    aggregates.count_deliveries(store, batch + batch[:2])  # redelivered within a batch
    aggregates.count_deliveries(store, batch)  # and in a later one: counted once
    aggregates.count_deliveries(store, [sent(0, "gmail.com", job="j0-second-campaign")])
    # events from before mailbox_provider named the domain: a small one is "other"
    aggregates.count_deliveries(store, [sent(n, "annlee.me", field="recipient_domain")
                                        for n in range(10, 12)])
    assert store.db.agg_markers.count_documents({"provider": "annlee.me"}) == 0
    report = acme("GET", "/api/v1/privacy/aggregates?since=2026-05-01&until=2026-05-01").get_json()
    assert report["k"] == 3 and report["suppressed_groups"] == 1
    # c0 got two messages: sent twice, one contact
    assert report["items"] == [{"day": "2026-05-01", "provider": "gmail.com", "contacts": 4,
                                "sent": 5, "bounced": 0, "failed": 0}]
    # rolled up into plain counts, the report is the same and the markers are gone
    aggregates.roll_up(store, older_than_days=1)
    assert store.db.agg_markers.count_documents({}) == 0
    assert acme("GET", "/api/v1/privacy/aggregates?since=2026-05-01&until=2026-05-01").get_json() == report
    bad = acme("GET", "/api/v1/privacy/aggregates?since=2026-05-02&until=2026-05-01")
    assert bad.status_code == 400 and "until" in bad.get_json()["error"]["details"]


def test_an_erased_contacts_deliveries_in_flight_make_no_group_reach_k(acme, app):
    """Each delivery of an erased contact still in flight is counted under a
    fresh pseudonym: two people and one erased with two messages read as
    four contacts, past k=3."""
    from shared.privacy_answers import pseudonym
    store = PrivacyStore(_db(app))
    account = acme.identity.account_id

    def sent(job, contact):
        event = new_event("delivery.sent", source="sandesh.sender", subject=job,
                          account_id=account, data={"job_id": job, "campaign_id": "k",
                                                    "contact_id": contact, "attempt": 0,
                                                    "mailbox_provider": "other"})
        return event.__class__(**{**event.__dict__, "time": "2026-05-02T10:00:00+00:00"})

    aggregates.count_deliveries(store, [sent("a", "alice"), sent("b", "bob"),
                                        sent("d1", pseudonym()), sent("d2", pseudonym())])
    report = acme("GET", "/api/v1/privacy/aggregates?since=2026-05-02&until=2026-05-02").get_json()
    assert report["items"] == [] and report["suppressed_groups"] == 1


def test_the_default_k_is_5(mongo_uri, kafka_bootstrap, unique):
    app = create_app({"SANDESH_MONGO_URI": mongo_uri, "SANDESH_KAFKA_BOOTSTRAP": kafka_bootstrap,
                      "SANDESH_INTERNAL_SECRET": SECRET, "SANDESH_PII_SALT": "s",
                      "SANDESH_MONGO_DB_PREFIX": f"test_{unique}_k5_"})
    try:
        clear_of_boundary(UTC_DAY, margin=60)  # the events are dated today, by the server
        caller = Caller(app, "k5-" + unique)
        store = PrivacyStore(_db(app))
        aggregates.count_deliveries(store, [new_event(
            "delivery.sent", source="sandesh.sender", subject=f"j{n}",
            account_id=caller.identity.account_id, data={
                "job_id": f"j{n}", "campaign_id": "k", "contact_id": f"c{n}", "attempt": 0,
                "mailbox_provider": provider})
            for n, provider in [(n, "gmail.com") for n in range(5)]
            + [(n, "yahoo.com") for n in range(10, 14)]])
        today = datetime.now(timezone.utc).date().isoformat()
        report = caller("GET", f"/api/v1/privacy/aggregates?since={today}&until={today}").get_json()
        assert report["k"] == 5 and report["suppressed_groups"] == 1
        assert [(r["provider"], r["contacts"]) for r in report["items"]] == [("gmail.com", 5)]
    finally:
        from shared import mongo
        mongo.client(mongo_uri).drop_database(f"test_{unique}_k5_privacy")


def test_an_erasure_that_finds_no_contact_forgets_the_reasons_given_about_the_address(acme, app):
    """Reasons were replaced by contact id only: an erasure by address that
    found no contact kept "phoned in by Jane Roe" for good."""
    store = PrivacyStore(_db(app))
    account = acme.identity.account_id
    asked = acme("POST", "/api/v1/privacy/requests", json={
        "kind": "access", "subject": {"email": "jane.roe@example.com"},
        "reason": "Jane Roe asked by phone"}).get_json()
    erasure = acme("POST", "/api/v1/privacy/requests", json={
        "kind": "erasure", "subject": {"email": "Jane.Roe@example.com"},
        "reason": "Jane Roe wants out"}).get_json()
    other = acme("POST", "/api/v1/privacy/requests", json={
        "kind": "erasure", "subject": {"email": "kim@example.com"}, "reason": "about Kim"}).get_json()
    for service in store.get_request(None, erasure["id"])["responders"]:
        usecases.record_answer(store, account, {"request_id": erasure["id"], "service": service,
                                                "status": "not_found"})
    done = acme("GET", f"/api/v1/privacy/requests/{erasure['id']}").get_json()
    assert done["status"] == "complete" and done["reason"] == "(erased)"
    assert acme("GET", f"/api/v1/privacy/requests/{asked['id']}").get_json()["reason"] == "(erased)"
    assert acme("GET", f"/api/v1/privacy/requests/{other['id']}").get_json()["reason"] == "about Kim"
