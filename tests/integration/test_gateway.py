"""The gateway in-process against the real FerretDB, with upstreams that
are down, slow, or real services on a loopback port."""
import contextlib
import hashlib
import re
import socket
import threading
import time

import pytest
from werkzeug.serving import make_server

from services.gateway.app import create_app
from tests.clock import MINUTE, clear_of_boundary
from tests.tampering import with_end_replaced

OPERATOR = "op-token-for-tests"
SECRET = "internal-secret-for-tests"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_upstream():
    """Accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.fixture
def real_upstream(mongo_uri, kafka_bootstrap, unique):
    """The campaigns service app on a loopback port, sharing the secret."""
    from services.campaigns.app import create_app as campaigns_app
    app = campaigns_app({"SANDESH_MONGO_URI": mongo_uri, "SANDESH_KAFKA_BOOTSTRAP": kafka_bootstrap,
                         "SANDESH_INTERNAL_SECRET": SECRET,
                         "SANDESH_MONGO_DB_PREFIX": f"test_{unique}_"})

    @app.get("/api/v1/campaigns/whoami")
    def whoami():
        from shared.http import current_identity
        return {"account_id": current_identity().account_id}

    @app.post("/api/v1/campaigns/echo")
    def echo():
        from flask import request
        body = request.get_data()
        return {"length": len(body), "sha": __import__("hashlib").sha256(body).hexdigest(),
                "content_length": request.headers.get("Content-Length")}

    @app.get("/api/v1/campaigns/query")
    def query_seen():
        from flask import request
        return {key: request.args.getlist(key) for key in request.args}

    @app.get("/api/v1/campaigns/request-id")
    def request_id_seen():
        from flask import request
        return {"request_id": request.headers.get("X-Request-Id")}

    @app.post("/api/v1/campaigns/signed-headers")
    def signed_headers_seen():
        from flask import request
        return {k: v for k, v in request.headers.items() if k.startswith("X-Sandesh-")}

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def gateway(mongo_uri, unique, silent_upstream, real_upstream):
    app = create_app({
        "SANDESH_MONGO_URI": mongo_uri, "SANDESH_MONGO_DB_PREFIX": f"test_{unique}_",
        "SANDESH_OPERATOR_TOKEN": OPERATOR, "SANDESH_INTERNAL_SECRET": SECRET,
        "SANDESH_CONTACTS_URL": f"http://127.0.0.1:{_free_port()}",   # nothing listens
        "SANDESH_PRIVACY_URL": silent_upstream,
        "SANDESH_CAMPAIGNS_URL": real_upstream,
        "SANDESH_UPSTREAM_READ_TIMEOUT": "0.5",
        "SANDESH_DASHBOARD_ORIGIN": "https://dash.example.test",
    })
    yield app.test_client()
    from shared import mongo
    mongo.client(mongo_uri).drop_database(f"test_{unique}_gateway")


def new_account(client, name="Acme", **extra):
    response = client.post("/api/v1/accounts", json={"name": name, **extra},
                           headers={"Authorization": f"Bearer {OPERATOR}"})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    return body["account"]["id"], body["api_key"]["key"], body["api_key"]["id"]


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def test_account_creation_needs_the_operator_token(gateway):
    assert gateway.post("/api/v1/accounts", json={"name": "x"}).status_code == 401
    response = gateway.post("/api/v1/accounts", json={"name": "x"},
                            headers=auth("wrong"))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthenticated"


def test_bad_account_input_names_the_field(gateway):
    response = gateway.post("/api/v1/accounts", json={"name": "", "plan": "gold"},
                            headers=auth(OPERATOR))
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert set(error["details"]) == {"name", "plan"}


def test_no_key_wrong_key_revoked_key(gateway):
    _, key, key_id = new_account(gateway)
    assert gateway.get("/api/v1/keys", headers=auth(key)).status_code == 200
    assert gateway.get("/api/v1/keys").status_code == 401
    assert gateway.get("/api/v1/keys", headers=auth(with_end_replaced(key, 2))).status_code == 401
    assert gateway.get("/api/v1/keys", headers=auth("sk_nothing")).status_code == 401
    second = gateway.post("/api/v1/keys", json={"name": "ci"}, headers=auth(key)).get_json()
    assert second["key"].startswith("sk_")
    revoked = gateway.delete(f"/api/v1/keys/{key_id}", headers=auth(second["key"]))
    assert revoked.status_code == 200
    response = gateway.get("/api/v1/keys", headers=auth(key))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    again = gateway.delete(f"/api/v1/keys/{key_id}", headers=auth(second["key"]))
    assert again.status_code == 200  # the time it was revoked stays
    assert again.get_json()["revoked_at"] == revoked.get_json()["revoked_at"]


def test_keys_are_listed_by_prefix_and_stored_hashed(gateway, mongo_uri, unique):
    _, key, key_id = new_account(gateway)
    listed = gateway.get("/api/v1/keys", headers=auth(key)).get_json()["items"]
    assert [k["id"] for k in listed] == [key_id]
    assert "key" not in listed[0] and key.split("_")[1] == listed[0]["prefix"]
    from shared import mongo
    stored = mongo.database(mongo_uri, f"test_{unique}_gateway").api_keys.find_one({"_id": key_id})
    assert key not in str(stored)


def all_key_pages(gateway, key, limit) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        query = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        body = gateway.get("/api/v1/keys", query_string=query, headers=auth(key)).get_json()
        pages.append([k["id"] for k in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def test_keys_are_paged_oldest_first_revoked_ones_included(gateway, mongo_uri, unique):
    """Revoked keys stay listed (and pile up with every rotation): the list
    is paged. Keys made in the same millisecond keep their order by id."""
    account, key, first_id = new_account(gateway)
    made = [first_id]
    for n in range(6):
        made.append(gateway.post("/api/v1/keys", json={"name": f"k{n}"},
                                 headers=auth(key)).get_json()["id"])
    assert gateway.delete(f"/api/v1/keys/{made[2]}", headers=auth(key)).status_code == 200
    from shared import mongo
    keys_col = mongo.database(mongo_uri, f"test_{unique}_gateway").api_keys
    same_moment = keys_col.find_one({"_id": made[-1]})["created_at"]
    twins = [made[-1][:-1], made[-1] + "z"]  # tied in time, one id before it, one after
    keys_col.insert_many([{**keys_col.find_one({"_id": made[-1]}), "_id": twin,
                           "prefix": f"twin{n}{unique}"} for n, twin in enumerate(twins)])
    assert [k["created_at"] for k in keys_col.find({"_id": {"$in": twins}})] == [same_moment] * 2
    stored = sorted(keys_col.find({"account_id": account}), key=lambda k: (k["created_at"], k["_id"]))
    expected = [k["_id"] for k in stored]
    assert set(expected) == {*made, *twins} and len(expected) == 9
    assert expected[-3:] == sorted([made[-1], *twins])
    pages = all_key_pages(gateway, key, 3)
    assert [len(p) for p in pages] == [3, 3, 3]
    assert [key_id for p in pages for key_id in p] == expected
    assert all_key_pages(gateway, key, 500) == [expected]


@pytest.mark.parametrize("cursor", ["x", "eyJtcyI6MX0",                     # no id
                                    "eyJtcyI6OTk5OTk5OTk5OTk5OTk5OTk5LCJpZCI6ImEifQ",  # year > 9999
                                    "eyJtcyI6ImEiLCJpZCI6ImEifQ"])         # ms not a number
def test_a_keys_cursor_it_did_not_return_is_a_400_naming_the_cursor(gateway, cursor):
    _, key, _ = new_account(gateway)
    response = gateway.get("/api/v1/keys", query_string={"cursor": cursor}, headers=auth(key))
    assert response.status_code == 400
    assert list(response.get_json()["error"]["details"]) == ["cursor"]


def test_another_accounts_key_sees_nothing_of_this_account(gateway):
    _, key_a, key_a_id = new_account(gateway, "A")
    _, key_b, _ = new_account(gateway, "B")
    ids_b = [k["id"] for k in gateway.get("/api/v1/keys", headers=auth(key_b)).get_json()["items"]]
    assert key_a_id not in ids_b
    assert gateway.delete(f"/api/v1/keys/{key_a_id}", headers=auth(key_b)).status_code == 404
    assert gateway.get("/api/v1/keys", headers=auth(key_a)).status_code == 200


def _clear_of_a_minute_boundary() -> None:
    """Rate windows are whole minutes of the clock (services/gateway/auth.py):
    a test counting requests in one starts well before the next minute."""
    clear_of_boundary(MINUTE, margin=10)


def test_rate_limit_per_key_answers_429_with_retry_after(gateway):
    _, key, _ = new_account(gateway, rate_limit_per_minute=3)
    _clear_of_a_minute_boundary()
    statuses = [gateway.get("/api/v1/keys", headers=auth(key)).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    response = gateway.get("/api/v1/keys", headers=auth(key))
    assert response.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def test_an_accounts_keys_cannot_raise_its_rate_limit(gateway, monkeypatch):
    """Any key could create keys of up to 1,000,000 requests a minute each:
    a key's limit is now at most its account's, and active keys are few."""
    from services.gateway import api
    _, key, _ = new_account(gateway, rate_limit_per_minute=3)
    raised = gateway.post("/api/v1/keys", json={"name": "x", "rate_limit_per_minute": 1_000_000},
                          headers=auth(key))
    assert raised.status_code == 400 and "rate_limit_per_minute" in raised.get_json()["error"]["details"]
    second = gateway.post("/api/v1/keys", json={"name": "y"}, headers=auth(key)).get_json()
    assert second["rate_limit_per_minute"] == 3   # the account's, not the platform's default
    _clear_of_a_minute_boundary()
    statuses = [gateway.get("/api/v1/keys", headers=auth(second["key"])).status_code
                for _ in range(5)]
    assert 429 in statuses
    monkeypatch.setattr(api, "MAX_ACTIVE_KEYS", 3)
    _, key, _ = new_account(gateway)
    made = [gateway.post("/api/v1/keys", json={"name": f"k{n}"}, headers=auth(key)).status_code
            for n in range(3)]
    assert made == [201, 201, 409]


def test_making_and_revoking_keys_gives_an_account_no_more_than_its_limit(gateway):
    """Each new key came with a full budget of its own: create, use, revoke,
    repeat gave an account as many requests a minute as it liked."""
    _, key, key_id = new_account(gateway, rate_limit_per_minute=4)
    _clear_of_a_minute_boundary()
    statuses = [gateway.get("/api/v1/keys", headers=auth(key)).status_code]
    made = gateway.post("/api/v1/keys", json={"name": "next"}, headers=auth(key))
    statuses.append(made.status_code)
    fresh = made.get_json()["key"]
    statuses.append(gateway.delete(f"/api/v1/keys/{key_id}", headers=auth(fresh)).status_code)
    statuses += [gateway.get("/api/v1/keys", headers=auth(fresh)).status_code for _ in range(2)]
    assert statuses == [200, 201, 200, 200, 429], statuses
    refused = gateway.get("/api/v1/keys", headers=auth(fresh)).get_json()["error"]
    assert refused["code"] == "rate_limited" and "account" in refused["message"]


def test_a_key_of_a_deleted_account_is_refused(gateway, mongo_uri, unique):
    """A key made at the moment its account was deleted outlived the revocation."""
    from shared import mongo
    account_id, key, _ = new_account(gateway)
    mongo.client(mongo_uri)[f"test_{unique}_gateway"]["accounts"].update_one(
        {"_id": account_id}, {"$set": {"status": "deleted"}})
    response = gateway.get("/api/v1/keys", headers=auth(key))
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthenticated"


def test_a_key_whose_prefix_is_taken_is_made_again(gateway, monkeypatch):
    """A prefix is 40 random bits; one already taken was a 500."""
    from services.gateway import api, keys
    _, key, _ = new_account(gateway)
    taken = keys.prefix_of(key)
    made = iter([keys.NewKey(taken, f"sk_{taken}_x", keys.digest(f"sk_{taken}_x")),
                 keys.generate()])
    monkeypatch.setattr(api.keys, "generate", lambda: next(made))
    answer = gateway.post("/api/v1/keys", json={"name": "second"}, headers=auth(key))
    assert answer.status_code == 201, answer.get_json()
    assert keys.prefix_of(answer.get_json()["key"]) != taken


def test_a_privacy_answer_that_is_not_json_is_a_502_naming_privacy(mongo_uri, unique):
    """A proxy's HTML error page in front of privacy made every account-user
    call a 500 (the gateway read it as JSON)."""
    def html_error(environ, start_response):
        start_response("502 Bad Gateway", [("Content-Type", "text/html")])
        return [b"<html><body>Bad gateway</body></html>"]

    server = make_server("127.0.0.1", 0, html_error, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        app = create_app({"SANDESH_MONGO_URI": mongo_uri, "SANDESH_MONGO_DB_PREFIX": f"test_{unique}_",
                          "SANDESH_OPERATOR_TOKEN": OPERATOR, "SANDESH_INTERNAL_SECRET": SECRET,
                          "SANDESH_PRIVACY_URL": f"http://127.0.0.1:{server.server_port}"})
        client = app.test_client()
        _, key, _ = new_account(client)
        user = client.post("/api/v1/users", json={"email": "ana@example.com"}, headers=auth(key))
        answer = client.patch(f"/api/v1/users/{user.get_json()['id']}", json={"name": "Ana"},
                              headers=auth(key))  # audited first, by privacy
        assert answer.status_code == 502, answer.get_data(as_text=True)[:200]
        assert answer.get_json()["error"]["code"] == "privacy_error"
    finally:
        server.shutdown()
        from shared import mongo
        mongo.client(mongo_uri).drop_database(f"test_{unique}_gateway")


def test_upstream_down_is_502_json_and_slow_upstream_is_504(gateway):
    _, key, _ = new_account(gateway)
    down = gateway.get("/api/v1/lists", headers=auth(key))
    assert down.status_code == 502
    assert down.get_json()["error"]["code"] == "upstream_unavailable"
    started = time.monotonic()
    slow = gateway.get("/api/v1/privacy/requests", headers=auth(key))
    assert slow.status_code == 504
    assert slow.get_json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 5


def test_a_privacy_call_naming_a_user_not_of_the_account_is_a_400_naming_the_field(gateway):
    """The privacy service records the acting user and answers requests
    about a user as given; the gateway holds the users. (Its privacy
    upstream here never answers: a call that passes the check is a 504.)"""
    _, key, _ = new_account(gateway)
    _, other_key, _ = new_account(gateway, "Other")
    mine = gateway.post("/api/v1/users", json={"email": "ann@example.com"}, headers=auth(key))
    theirs = gateway.post("/api/v1/users", json={"email": "bo@example.com"}, headers=auth(other_key))
    assert mine.status_code == theirs.status_code == 201
    mine, theirs = mine.get_json()["id"], theirs.get_json()["id"]

    refused = gateway.post("/api/v1/privacy/requests", headers=auth(key), json={
        "kind": "access", "subject": {"user_id": theirs}, "user_id": "f" * 32})
    assert refused.status_code == 400
    assert refused.get_json()["error"]["details"] == {
        "user_id": ["no user with this id in the account"],
        "subject.user_id": ["no user with this id in the account"]}
    notices = gateway.get(f"/api/v1/privacy/notices?user_id={theirs}", headers=auth(key))
    assert notices.status_code == 400 and "user_id" in notices.get_json()["error"]["details"]
    for odd in ("x" * 5000, "\ud800", "a/b"):
        ack = gateway.post("/api/v1/privacy/notices/p1/ack", json={"user_id": odd},
                           headers=auth(key))
        assert ack.status_code == 400 and "user_id" in ack.get_json()["error"]["details"]
    deep = '{"user_id": ' + "[" * 5000 + "]" * 5000 + "}"
    for body in (deep, '{"subject": ' * 3000 + "1" + "}" * 3000, "[1, 2]", "{not json"):
        answer = gateway.post("/api/v1/privacy/requests", data=body, headers={
            **auth(key), "Content-Type": "application/json"})
        assert answer.status_code == 504   # no 500: forwarded, for privacy to refuse

    for passed in (gateway.post("/api/v1/privacy/requests", headers=auth(key), json={
                       "kind": "access", "subject": {"user_id": mine}, "user_id": mine}),
                   gateway.get(f"/api/v1/privacy/notices?user_id={mine}", headers=auth(key)),
                   gateway.post("/api/v1/privacy/requests", headers=auth(key), json={
                       "kind": "access", "subject": {"email": "c@example.com"}})):
        assert passed.status_code == 504   # forwarded


def test_forwarded_requests_carry_a_signed_identity(gateway, real_upstream):
    account_id, key, _ = new_account(gateway)
    response = gateway.get("/api/v1/campaigns/whoami", headers=auth(key))
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"account_id": account_id}
    assert response.headers["X-Request-Id"]
    import requests
    direct = requests.get(real_upstream + "/api/v1/campaigns/whoami",
                          headers={"X-Sandesh-Account": account_id}, timeout=5)
    assert direct.status_code == 401


def test_dot_segments_cannot_walk_out_of_api_v1_to_a_services_unsigned_routes(gateway):
    """Routes are matched on the path as given, and the HTTP client removes
    dot segments before sending: this reached the campaigns service's
    /metrics (and /readyz, with its dependencies' errors) with any key."""
    _, key, _ = new_account(gateway)
    assert gateway.get("/api/v1/campaigns/whoami", headers=auth(key)).status_code == 200
    for path in ("/api/v1/campaigns/%2e%2e/%2e%2e/%2e%2e/metrics",
                 "/api/v1/campaigns/../../../readyz", "/api/v1/campaigns/./whoami"):
        response = gateway.get(path, headers=auth(key))
        assert response.status_code == 404, (path, response.status_code)
        assert response.get_json()["error"]["code"] == "not_found"


def test_an_empty_segment_is_no_route_and_never_a_redirect_to_a_service(gateway, real_upstream):
    """A service merged "//" with an HTML 308 whose Location was its own
    address: /api/v1/contacts/%2F/consent through the gateway."""
    import requests
    _, key, _ = new_account(gateway)
    for path in ("/api/v1/campaigns/%2F/whoami", "/api/v1/campaigns//whoami",
                 "/api/v1/campaigns/whoami/"):
        response = gateway.get(path, headers=auth(key))
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
    from shared.http.internal_auth import Identity, signed_headers
    target = "/api/v1/campaigns//whoami"   # signed, as a gateway without the check sent it
    direct = requests.get(f"{real_upstream}{target}", allow_redirects=False, timeout=10,
                          headers=signed_headers(SECRET, "GET", target, Identity("a" * 32, "k")))
    assert direct.status_code == 404 and direct.headers["Content-Type"] == "application/json"
    assert "Location" not in direct.headers


def test_an_escaped_question_mark_in_the_path_names_no_other_resource(gateway):
    """The gateway forwarded the decoded path: /lists/<id>%3Fx reached the
    service as /lists/<id>?x, and read, changed or deleted list <id>."""
    _, key, _ = new_account(gateway)
    assert gateway.get("/api/v1/campaigns/whoami", headers=auth(key)).status_code == 200
    for path in ("/api/v1/campaigns/whoami%3Fx", "/api/v1/campaigns/whoami%23x",
                 "/api/v1/campaigns/whoami%3F"):
        response = gateway.get(path, headers=auth(key))
        assert response.status_code == 404, (path, response.status_code, response.get_json())


def test_a_query_with_lower_case_escapes_reaches_the_service_signed(gateway):
    """The HTTP client rewrote %c3%a9 to %C3%A9 and %7e to ~ on the way: the
    service's signature check failed, a 401 for a valid key."""
    _, key, _ = new_account(gateway)
    response = gateway.get("/api/v1/campaigns/query?name=%c3%a9&t=%7e&p=a%2fb&odd=100%&s=a+b",
                           headers=auth(key))
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"name": ["é"], "t": ["~"], "p": ["a/b"], "odd": ["100%"],
                                   "s": ["a b"]}


def test_a_method_the_gateways_own_endpoint_does_not_take_is_405(gateway):
    """The catch-all forward route answered these 404 "endpoint not found"."""
    _, key, _ = new_account(gateway)
    for method, path in (("POST", "/api/v1/usage"), ("PUT", "/api/v1/keys"),
                         ("PATCH", "/api/v1/account"), ("DELETE", "/api/v1/openapi.json")):
        response = gateway.open(path, method=method, headers=auth(key))
        assert response.status_code == 405, (method, path, response.status_code)
        assert response.get_json()["error"]["code"] == "method_not_allowed"
        assert method not in response.headers["Allow"]


def test_a_services_405_keeps_its_allow_header_through_the_gateway(gateway):
    """The gateway passed a service's 405 on without the methods it takes."""
    _, key, _ = new_account(gateway)
    response = gateway.open("/api/v1/campaigns", method="PUT", headers=auth(key))
    assert response.status_code == 405, response.get_json()
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert {"GET", "POST"} <= allowed and "PUT" not in allowed


def test_unknown_endpoint_is_404_json(gateway):
    _, key, _ = new_account(gateway)
    response = gateway.get("/api/v1/nothing-here", headers=auth(key))
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_cors_only_for_the_dashboard_origin(gateway):
    preflight = gateway.options("/api/v1/keys", headers={
        "Origin": "https://dash.example.test", "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://dash.example.test"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    evil = gateway.options("/api/v1/keys", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert evil.status_code == 403
    assert "Access-Control-Allow-Origin" not in evil.headers


def test_request_bodies_are_streamed_to_the_service_intact(gateway):
    import hashlib
    _, key, _ = new_account(gateway)
    body = b"email,name\n" + b"".join(b"user%d@example.com,User %d\n" % (i, i) for i in range(20000))
    response = gateway.post("/api/v1/campaigns/echo", data=body, headers=auth(key),
                            content_type="text/csv")
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"length": len(body), "sha": hashlib.sha256(body).hexdigest(),
                                   "content_length": str(len(body))}


def test_a_file_upload_is_streamed_to_the_service_unsigned_and_intact(gateway):
    import hashlib
    _, key, _ = new_account(gateway)
    boundary = "sandeshboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"c.csv\"\r\nContent-Type: text/csv\r\n\r\n").encode() + \
        b"".join(b"user%d@example.com\n" % i for i in range(20000)) + \
        f"\r\n--{boundary}--\r\n".encode()
    response = gateway.post("/api/v1/campaigns/echo", data=body, headers=auth(key),
                            content_type=f"multipart/form-data; boundary={boundary}")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["sha"] == hashlib.sha256(body).hexdigest()


def test_a_signed_request_replayed_with_another_body_is_refused(gateway, real_upstream):
    """The signature covers the body: one seen on the network and sent
    again straight to the service, within its five minutes, with a body of
    the sender's choosing, gets 401."""
    import requests
    _, key, _ = new_account(gateway)
    body = b'{"name": "Spring sale"}'
    seen = gateway.post("/api/v1/campaigns/signed-headers", data=body, headers=auth(key),
                        content_type="application/json")
    assert seen.status_code == 200, seen.get_json()
    signed = seen.get_json()
    assert signed["X-Sandesh-Content-Sha256"] == hashlib.sha256(body).hexdigest()
    url = real_upstream + "/api/v1/campaigns/signed-headers"
    same = requests.post(url, data=body, headers={**signed, "Content-Type": "application/json"},
                         timeout=5)
    assert same.status_code == 200
    other = requests.post(url, data=b'{"name": "Mallory"}', timeout=5,
                          headers={**signed, "Content-Type": "application/json"})
    assert other.status_code == 401
    assert "body" in other.json()["error"]["message"]
    as_upload = requests.post(url, data=b"x", timeout=5, headers={
        **signed, "X-Sandesh-Content-SHA256": "UNSIGNED-PAYLOAD",
        "Content-Type": "multipart/form-data; boundary=b"})
    assert as_upload.status_code == 401


def test_a_json_body_over_the_limit_is_413_at_the_gateway(gateway):
    from shared.http.blueprint import MAX_JSON_BYTES
    _, key, _ = new_account(gateway)
    response = gateway.post("/api/v1/campaigns/echo", data=b" " * (MAX_JSON_BYTES + 1),
                            headers=auth(key), content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"


def test_usage_is_an_error_when_a_service_cannot_give_its_figures(mongo_uri, unique, real_upstream):
    """A service that answers 500 makes /usage a 502 naming it, never a silent zero."""
    def failing(environ, start_response):
        start_response("500 INTERNAL SERVER ERROR", [("Content-Type", "application/json")])
        return [b'{"error": {"code": "internal"}}']

    server = make_server("127.0.0.1", 0, failing, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    app = create_app({
        "SANDESH_MONGO_URI": mongo_uri, "SANDESH_MONGO_DB_PREFIX": f"test_{unique}_",
        "SANDESH_OPERATOR_TOKEN": OPERATOR, "SANDESH_INTERNAL_SECRET": SECRET,
        "SANDESH_CONTACTS_URL": f"http://127.0.0.1:{server.server_port}",
        "SANDESH_CAMPAIGNS_URL": real_upstream,
        "SANDESH_PRIVACY_URL": real_upstream, "SANDESH_TRACKING_URL": real_upstream,
    })
    try:
        client = app.test_client()
        _, key, _ = new_account(client)
        response = client.get("/api/v1/usage", headers=auth(key))
        assert response.status_code == 502
        error = response.get_json()["error"]
        assert error["code"] == "upstream_error" and "contacts" in error["message"]
    finally:
        server.shutdown()
        from shared import mongo
        mongo.client(mongo_uri).drop_database(f"test_{unique}_gateway")


@pytest.mark.parametrize("given, kept", [
    ("jane.doe@example.com Jane Doe", False),   # it was the trace id of every event after
    ("Jane-Doe-from-Accounting-Dept", False),
    ("9b2f6c1e-5d4a-4f0e-8a3b-2c1d0e9f8a7b", True),
    ("4bf92f3577b34da6a3ce929d0e0e4736", True),
])
def test_a_callers_request_id_is_kept_only_when_it_is_an_opaque_id(gateway, given, kept):
    """The caller's X-Request-Id became the trace id stamped on Kafka events
    and log lines: a name or an address in it reached the analytics streams."""
    _, key, _ = new_account(gateway)
    response = gateway.get("/api/v1/campaigns/request-id",
                           headers={**auth(key), "X-Request-Id": given})
    assert response.status_code == 200
    answered = response.headers["X-Request-Id"]
    assert response.get_json()["request_id"] == answered   # what went on is what came back
    if kept:
        assert answered == given
    else:
        assert answered != given and re.fullmatch(r"[0-9a-f]{32}", answered)


def test_revoking_the_accounts_last_working_key_is_refused(gateway):
    """Nothing issues a key to an account that has none: revoking the last
    one locked the account out for good."""
    _, key, key_id = new_account(gateway)
    refused = gateway.delete(f"/api/v1/keys/{key_id}", headers=auth(key))
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "last_key"
    assert gateway.get("/api/v1/keys", headers=auth(key)).status_code == 200
    second = gateway.post("/api/v1/keys", json={"name": "next"}, headers=auth(key)).get_json()
    assert gateway.delete(f"/api/v1/keys/{key_id}", headers=auth(key)).status_code == 200
    refused = gateway.delete(f"/api/v1/keys/{second['id']}", headers=auth(second["key"]))
    assert refused.status_code == 409


def test_head_of_a_user_export_is_refused_before_anything_is_recorded(gateway):
    """Flask answers HEAD by running the GET: each link checker's HEAD made
    an access request and an "export downloaded" audit entry. (Privacy is
    the silent upstream here: reaching it would be a 504.)"""
    _, key, _ = new_account(gateway)
    user = gateway.post("/api/v1/users", json={"email": "ana@example.com"}, headers=auth(key))
    response = gateway.head(f"/api/v1/users/{user.get_json()['id']}/export", headers=auth(key))
    assert response.status_code == 405 and response.headers["Allow"] == "GET"


@contextlib.contextmanager
def gateway_before(services, mongo_uri, unique):
    """A gateway whose contacts, campaigns and privacy are the WSGI app
    `services`, served on a loopback port for the block."""
    server = make_server("127.0.0.1", 0, services, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{server.server_port}"
    try:
        yield create_app({"SANDESH_MONGO_URI": mongo_uri,
                          "SANDESH_MONGO_DB_PREFIX": f"test_{unique}_",
                          "SANDESH_OPERATOR_TOKEN": OPERATOR, "SANDESH_INTERNAL_SECRET": SECRET,
                          "SANDESH_CONTACTS_URL": upstream, "SANDESH_PRIVACY_URL": upstream,
                          "SANDESH_CAMPAIGNS_URL": upstream}).test_client()
    finally:
        server.shutdown()
        from shared import mongo
        mongo.client(mongo_uri).drop_database(f"test_{unique}_gateway")


def test_an_upstreams_html_error_page_becomes_the_apis_json_error(mongo_uri, unique):
    """A proxy's HTML 502 in front of a service was relayed as it was, and
    the operator's policy publish read it as JSON: a 500."""
    def html_error(environ, start_response):
        start_response("502 Bad Gateway", [("Content-Type", "text/html")])
        return [b"<html><body><h1>502 Bad Gateway</h1></body></html>"]

    with gateway_before(html_error, mongo_uri, unique) as client:
        _, key, _ = new_account(client)
        forwarded = client.get("/api/v1/lists", headers=auth(key))
        assert forwarded.status_code == 502 and forwarded.mimetype == "application/json"
        assert forwarded.get_json()["error"]["code"] == "upstream_error"
        published = client.post("/api/v1/privacy/policies", json={"summary": "x"},
                                headers=auth(OPERATOR))
        assert published.status_code == 502
        assert published.get_json()["error"]["code"] == "privacy_error"


def test_a_publisher_accounts_policy_is_mailed_to_every_user_as_the_operators_is(mongo_uri,
                                                                                   unique):
    """Privacy lets SANDESH_PRIVACY_PUBLISHER_ACCOUNTS publish too; their
    publication went through the plain proxy, and no user was told."""
    import json
    calls = []

    def services(environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        calls.append((method, path))
        if path == "/api/v1/contacts" and b"bo@example.com" in environ["wsgi.input"].read(
                int(environ.get("CONTENT_LENGTH") or 0)):
            path += "#suppressed"   # an address contacts has suppressed
        answers = {("POST", "/api/v1/privacy/policies"): (201, {"id": "p1", "summary": "x",
                                                               "effective_at": "2027-01-31"}),
                   ("GET", "/api/v1/lists"): (200, {"items": [], "next_cursor": None}),
                   ("POST", "/api/v1/lists"): (201, {"id": "l1"}),
                   ("POST", "/api/v1/contacts"): (201, {"id": "c1"}),
                   ("POST", "/api/v1/contacts#suppressed"): (409, {"error": {
                       "code": "suppressed", "message": "this address is suppressed"}}),
                   ("POST", "/api/v1/templates"): (201, {"id": "t1"}),
                   ("POST", "/api/v1/campaigns"): (201, {"id": "k1"}),
                   ("POST", "/api/v1/campaigns/k1/send"): (202, {"id": "k1"})}
        status, body = answers.get((method, path), (404, {"error": {"code": "not_found"}}))
        start_response(f"{status} X", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    with gateway_before(services, mongo_uri, unique) as client:
        _, key, _ = new_account(client)
        client.post("/api/v1/users", json={"email": "ana@example.com"}, headers=auth(key))
        client.post("/api/v1/users", json={"email": "bo@example.com"}, headers=auth(key))
        published = client.post("/api/v1/privacy/policies", json={"summary": "x"},
                                headers=auth(key))
        assert published.status_code == 201, published.get_json()
        notification = published.get_json()["notification"]
        assert notification["status"] == "sending"
        # a suppressed address is not on the list: it was counted as told
        assert (notification["users"], notification["not_reached"]) == (1, 1)
        assert ("POST", "/api/v1/campaigns/k1/send") in calls


def test_the_contract_documents_the_gateways_own_usage_not_a_services(gateway):
    """campaigns' internal /usage (its own figures only) replaced the
    gateway's entry, whose answer adds contacts' and lists'."""
    doc = gateway.get("/api/v1/openapi.json").get_json()
    ref = doc["paths"]["/api/v1/usage"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"]["$ref"]
    documented = doc["components"]["schemas"][ref.split("/")[-1]]["properties"]
    assert {"contacts", "lists", "campaigns"} <= set(documented)


def test_the_contract_is_served_at_once_while_a_service_does_not_answer(gateway):
    """Asked without a key, it waited the upstream timeout for the silent
    service each time, holding a gateway thread."""
    started = time.monotonic()
    first = gateway.get("/api/v1/openapi.json")
    assert first.status_code == 200
    again_started = time.monotonic()
    again = gateway.get("/api/v1/openapi.json")
    assert again.status_code == 200 and time.monotonic() - again_started < 0.5
    assert again.get_json()["info"]["x-missing-services"] == \
        first.get_json()["info"]["x-missing-services"]
    assert time.monotonic() - started < 10


def test_cors_refusal_is_json_and_the_dashboard_can_read_what_it_needs(gateway):
    evil = gateway.options("/api/v1/keys", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert evil.status_code == 403 and evil.get_json()["error"]["code"] == "cors_forbidden"
    preflight = gateway.options("/api/v1/keys", headers={
        "Origin": "https://dash.example.test", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "If-None-Match"})
    assert "If-None-Match" in preflight.headers["Access-Control-Allow-Headers"]
    _, key, _ = new_account(gateway)
    answer = gateway.get("/api/v1/keys", headers={**auth(key), "Origin": "https://dash.example.test"})
    exposed = answer.headers["Access-Control-Expose-Headers"]
    assert "Content-Disposition" in exposed and "Location" in exposed


def test_two_publications_at_once_make_one_platform_account(mongo_db):
    """Found, else inserted with a random id: two at once made two, and a
    user's erasure cleaned the notice list of the one it found."""
    from concurrent.futures import ThreadPoolExecutor
    from services.gateway.policy_mail import platform_account
    with ThreadPoolExecutor(8) as pool:
        made = set(pool.map(lambda _: platform_account(mongo_db), range(8)))
    assert len(made) == 1
    assert mongo_db["accounts"].count_documents({"platform": True}) == 1


# ------------------------------------------------- failed authentications

@pytest.fixture
def strict_gateways(mongo_uri, unique):
    """Two gateway processes (replicas) on one database, 3 failures a minute."""
    def make(**extra):
        return create_app({"SANDESH_MONGO_URI": mongo_uri, "SANDESH_MONGO_DB_PREFIX": f"test_{unique}_",
                           "SANDESH_OPERATOR_TOKEN": OPERATOR, "SANDESH_INTERNAL_SECRET": SECRET,
                           "SANDESH_AUTH_FAILURES_PER_MINUTE": "3", **extra}).test_client()
    yield make(), make(SANDESH_TRUSTED_PROXY_HOPS="1")
    from shared import mongo
    mongo.client(mongo_uri).drop_database(f"test_{unique}_gateway")


def from_address(address):
    return {"environ_base": {"REMOTE_ADDR": address}}


def test_an_address_past_its_failed_authentications_is_refused_before_any_check(strict_gateways):
    clear_of_boundary(MINUTE, margin=15)
    gateway, _ = strict_gateways
    _, key, _ = new_account(gateway)
    guesser, neighbour = from_address("203.0.113.7"), from_address("198.51.100.20")
    wrong = [gateway.get("/api/v1/keys", headers=auth(f"sk_guess{n}"), **guesser) for n in range(3)]
    assert [r.status_code for r in wrong] == [401, 401, 401]
    fourth = gateway.get("/api/v1/keys", headers=auth("sk_guess4"), **guesser)
    assert fourth.status_code == 429 and 1 <= int(fourth.headers["Retry-After"]) <= 60
    error = fourth.get_json()["error"]
    assert error["code"] == "too_many_failed_authentications"
    assert error["details"] == {"field": "Authorization", "limit_per_minute": 3}
    # The right key, too, until the minute ends: a right guess looks like a wrong one.
    assert gateway.get("/api/v1/keys", headers=auth(key), **guesser).status_code == 429
    assert gateway.get("/api/v1/keys", headers=auth(key), **neighbour).status_code == 200
    assert gateway.get("/api/v1/keys", headers=auth("sk_nope"), **neighbour).status_code == 401


def test_wrong_operator_tokens_count_too(strict_gateways):
    clear_of_boundary(MINUTE, margin=15)
    gateway, _ = strict_gateways
    guesser = from_address("203.0.113.8")
    for guess in ("admin", "operator", ""):
        answer = gateway.post("/api/v1/accounts", json={"name": "x"}, headers=auth(guess), **guesser)
        assert answer.status_code == 401
    right = gateway.post("/api/v1/accounts", json={"name": "x"}, headers=auth(OPERATOR), **guesser)
    assert right.status_code == 429
    elsewhere = gateway.post("/api/v1/accounts", json={"name": "x"}, headers=auth(OPERATOR),
                             **from_address("198.51.100.21"))
    assert elsewhere.status_code == 201


def test_failures_are_counted_across_replicas_and_the_address_is_not_stored(
        strict_gateways, mongo_uri, unique):
    clear_of_boundary(MINUTE, margin=15)
    first, second = strict_gateways
    guesser = from_address("203.0.113.9")
    assert [first.get("/api/v1/keys", headers=auth(f"sk_{n}"), **guesser).status_code
            for n in range(3)] == [401, 401, 401]
    # The other process has not seen those: its first failure finds the tickets taken.
    assert second.get("/api/v1/keys", headers=auth("sk_x"), **guesser).status_code == 429
    from shared import mongo
    tickets = list(mongo.client(mongo_uri)[f"test_{unique}_gateway"]["rate_tickets"].find())
    assert tickets and "203.0.113" not in repr(tickets)


def test_behind_the_ingress_the_client_is_read_from_x_forwarded_for(strict_gateways):
    clear_of_boundary(MINUTE, margin=15)
    direct, behind_ingress = strict_gateways
    controller = from_address("10.0.0.5")
    for n in range(3):
        forwarded = {**auth(f"sk_{n}"), "X-Forwarded-For": "203.0.113.10"}
        assert behind_ingress.get("/api/v1/keys", headers=forwarded, **controller).status_code == 401
    blocked = {**auth("sk_3"), "X-Forwarded-For": "203.0.113.10"}
    assert behind_ingress.get("/api/v1/keys", headers=blocked, **controller).status_code == 429
    # Another client through the same controller is not refused for it.
    other = {**auth("sk_4"), "X-Forwarded-For": "203.0.113.11"}
    assert behind_ingress.get("/api/v1/keys", headers=other, **controller).status_code == 401
    # Without trusted hops the header is anyone's to forge: the peer counts.
    forged = [direct.get("/api/v1/keys", headers={**auth(f"sk_{n}"), "X-Forwarded-For": f"192.0.2.{n}"},
                         **from_address("203.0.113.12")).status_code for n in range(4)]
    assert forged == [401, 401, 401, 429]
