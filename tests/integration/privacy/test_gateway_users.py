"""Account users through the gateway in-process, with the privacy service
on a loopback port, against the real FerretDB and Kafka."""
import threading

import pytest
from werkzeug.serving import make_server

from services.gateway.app import create_app as gateway_app
from services.privacy.app import create_app as privacy_app

OPERATOR = "op-token-for-tests"
SECRET = "internal-secret-for-tests"


@pytest.fixture
def privacy_url(mongo_uri, kafka_bootstrap, unique):
    app = privacy_app({"SANDESH_MONGO_URI": mongo_uri, "SANDESH_KAFKA_BOOTSTRAP": kafka_bootstrap,
                       "SANDESH_INTERNAL_SECRET": SECRET,
                       "SANDESH_MONGO_DB_PREFIX": f"test_{unique}_"})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def gateway(mongo_uri, unique, privacy_url):
    app = gateway_app({"SANDESH_MONGO_URI": mongo_uri, "SANDESH_MONGO_DB_PREFIX": f"test_{unique}_",
                       "SANDESH_OPERATOR_TOKEN": OPERATOR, "SANDESH_INTERNAL_SECRET": SECRET,
                       "SANDESH_PRIVACY_URL": privacy_url})
    yield app.test_client()
    from shared import mongo
    for service in ("gateway", "privacy"):
        mongo.client(mongo_uri).drop_database(f"test_{unique}_{service}")


def _account(client, name="Acme"):
    response = client.post("/api/v1/accounts", json={"name": name},
                           headers={"Authorization": f"Bearer {OPERATOR}"})
    assert response.status_code == 201, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['api_key']['key']}"}


def test_users_can_be_listed_created_corrected_exported_and_deleted(gateway):
    auth = _account(gateway)
    made = gateway.post("/api/v1/users", json={"email": "Ana@Example.com", "name": "Ana"}, headers=auth)
    assert made.status_code == 201, made.get_json()
    user = made.get_json()
    assert user["email"] == "Ana@example.com"
    duplicate = gateway.post("/api/v1/users", json={"email": "ana@example.com"}, headers=auth)
    assert duplicate.status_code == 409 and "email" in duplicate.get_json()["error"]["details"]
    bad = gateway.post("/api/v1/users", json={"email": "nope"}, headers=auth)
    assert bad.status_code == 400 and "email" in bad.get_json()["error"]["details"]

    fixed = gateway.patch(f"/api/v1/users/{user['id']}", json={"name": "Ana Lima"}, headers=auth)
    assert fixed.status_code == 200 and fixed.get_json()["name"] == "Ana Lima"
    assert gateway.patch(f"/api/v1/users/{user['id']}", json={}, headers=auth).status_code == 400

    export = gateway.get(f"/api/v1/users/{user['id']}/export", headers=auth)
    assert export.status_code == 200, export.get_json()
    body = export.get_json()
    assert body["services"]["gateway"]["data"]["profile"]["name"] == "Ana Lima"
    assert body["services"]["privacy"]["status"] == "done"

    other = _account(gateway, "Other")
    assert gateway.get(f"/api/v1/users/{user['id']}", headers=other).status_code == 404
    assert gateway.get("/api/v1/users", headers=other).get_json()["items"] == []

    assert gateway.delete(f"/api/v1/users/{user['id']}", headers=auth).status_code == 204
    assert gateway.get(f"/api/v1/users/{user['id']}", headers=auth).status_code == 404
    actions = [e["action"] for e in gateway.get("/api/v1/privacy/audit", headers=auth).get_json()["items"]]
    assert {"user.rectified", "access.requested", "export.downloaded", "user.erased"} <= set(actions)


def test_deleting_the_account_asks_every_service_and_revokes_its_keys(gateway):
    auth = _account(gateway)
    # Asked for directly, an account erasure left the account, its keys and
    # its users as they were, with its data gone: broken for good.
    direct = gateway.post("/api/v1/privacy/requests", headers=auth,
                          json={"kind": "erasure", "subject": {"account": True}})
    assert direct.status_code == 403, direct.get_json()
    assert "subject.account" in direct.get_json()["error"]["details"]
    assert gateway.get("/api/v1/privacy/requests", headers=auth).get_json()["items"] == []
    gateway.post("/api/v1/users", json={"email": "bo@example.com", "name": "Bo"}, headers=auth)
    response = gateway.delete("/api/v1/account", headers=auth)
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["status"] == "deleting"
    assert gateway.get("/api/v1/users", headers=auth).status_code == 401


def test_a_policy_published_while_contacts_is_down_stands_and_says_its_notice_failed(
        mongo_uri, unique, privacy_url):
    """The notice's call to a service that was down raised the gateway's own
    502: the operator saw an error and published the policy again, and each
    retry added a version users must acknowledge."""
    from datetime import datetime, timedelta, timezone

    from tests.integration.sender.harness import free_port
    app = gateway_app({"SANDESH_MONGO_URI": mongo_uri, "SANDESH_MONGO_DB_PREFIX": f"test_{unique}_",
                       "SANDESH_OPERATOR_TOKEN": OPERATOR, "SANDESH_INTERNAL_SECRET": SECRET,
                       "SANDESH_PRIVACY_URL": privacy_url,
                       "SANDESH_CONTACTS_URL": f"http://127.0.0.1:{free_port()}"})
    client = app.test_client()
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    effective = (datetime.now(timezone.utc) + timedelta(days=31)).isoformat()
    answer = client.post("/api/v1/privacy/policies", headers=operator, json={
        "text": "Policy", "summary": "What changed", "material": True, "effective_at": effective})
    assert answer.status_code == 201, answer.get_json()
    assert answer.get_json()["notification"]["status"] == "failed"
    assert "contacts" in answer.get_json()["notification"]["detail"]


def test_users_are_listed_oldest_first_across_pages(gateway):
    """Paged by their random ids, users came in no order, and one added
    while a client paged could land behind its cursor and be missed."""
    import time
    auth = _account(gateway)
    made = []
    for n in range(7):
        made.append(gateway.post("/api/v1/users", json={"email": f"u{n}@example.com"},
                                 headers=auth).get_json()["id"])
        time.sleep(0.002)  # distinct milliseconds, as users added apart are
    seen, cursor = [], None
    while True:
        answer = gateway.get("/api/v1/users?limit=3" + (f"&cursor={cursor}" if cursor else ""),
                             headers=auth).get_json()
        seen += [user["id"] for user in answer["items"]]
        cursor = answer.get("next_cursor")
        if not cursor:
            break
        if len(seen) == 3:  # one added mid-paging comes at the end, not behind the cursor
            made.append(gateway.post("/api/v1/users", json={"email": "late@example.com"},
                                     headers=auth).get_json()["id"])
    assert seen == made


def test_an_account_has_at_most_max_users_users(gateway, monkeypatch):
    """Each one is on the platform's notice mailing, which they cannot leave:
    an account could put any number of strangers' addresses on it."""
    from services.gateway import users
    monkeypatch.setattr(users, "MAX_USERS", 3)
    auth = _account(gateway)
    for n in range(3):
        assert gateway.post("/api/v1/users", json={"email": f"u{n}@example.com"},
                            headers=auth).status_code == 201
    refused = gateway.post("/api/v1/users", json={"email": "u3@example.com"}, headers=auth)
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "too_many_users"
    other = _account(gateway, name="Other")  # another account's count is its own
    assert gateway.post("/api/v1/users", json={"email": "u3@example.com"},
                        headers=other).status_code == 201
