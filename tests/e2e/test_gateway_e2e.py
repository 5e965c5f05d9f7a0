"""The platform spine through the real gateway and services of this stack."""
import uuid

import jsonschema
import requests

from tests.e2e.conftest import Api
from tests.kafka_reader import TopicReader

SERVICES = ["contacts", "campaigns", "tracking", "privacy"]


def test_account_key_lifecycle_through_the_gateway(new_account, gateway_url):
    account, api = new_account("Lifecycle Ltd")
    assert api.get("/api/v1/account").json()["id"] == account["id"]
    keys = api.get("/api/v1/keys").json()["items"]
    assert len(keys) == 1 and "key" not in keys[0]
    second = api.post("/api/v1/keys", json={"name": "ci"}).json()
    other = Api(gateway_url, second["key"])
    assert other.get("/api/v1/account").json()["id"] == account["id"]
    assert api.delete(f"/api/v1/keys/{second['id']}").status_code == 200
    revoked = other.get("/api/v1/account")
    assert revoked.status_code == 401
    assert revoked.json()["error"]["code"] == "unauthenticated"


def test_no_key_and_wrong_key_are_401_json(gateway_url):
    for headers in ({}, {"Authorization": "Bearer sk_0123456789_nope"},
                    {"Authorization": "Basic abc"}):
        response = requests.get(gateway_url + "/api/v1/lists", headers=headers, timeout=10)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"


def test_services_refuse_requests_that_bypass_the_gateway(stack_env, new_account):
    account, _ = new_account()
    for service in SERVICES:
        url = stack_env[f"SANDESH_{service.upper()}_URL"]
        response = requests.get(url + "/api/v1/usage", timeout=10,
                                headers={"X-Sandesh-Account": account["id"],
                                         "X-Sandesh-Principal": "forged",
                                         "X-Sandesh-Timestamp": "0",
                                         "X-Sandesh-Signature": "0" * 64})
        assert response.status_code == 401, service


def test_every_service_is_healthy_ready_and_exposes_metrics(stack_env):
    for service in ["gateway"] + SERVICES:
        url = stack_env[f"SANDESH_{service.upper()}_URL"]
        assert requests.get(url + "/healthz", timeout=10).json()["stack_id"] == \
            stack_env["SANDESH_STACK_ID"]
        ready = requests.get(url + "/readyz", timeout=10)
        assert ready.status_code == 200, (service, ready.text)
        metrics = requests.get(url + "/metrics", timeout=10).text
        assert "sandesh_http_requests_total" in metrics, service
    sender = requests.get(stack_env["SANDESH_SENDER_URL"] + "/readyz", timeout=10)
    assert sender.status_code == 200, sender.text


def test_merged_openapi_covers_every_service(gateway_url):
    doc = requests.get(gateway_url + "/api/v1/openapi.json", timeout=30).json()
    assert "x-missing-services" not in doc["info"], doc["info"]
    assert "/api/v1/accounts" in doc["paths"] and "/api/v1/keys" in doc["paths"]
    for ref_holder in doc["paths"].values():
        for operation in ref_holder.values():
            text = str(operation)
            for ref in [p for p in text.split("'") if p.startswith("#/components/schemas/")]:
                assert ref.split("/")[-1] in doc["components"]["schemas"], ref


def test_error_answers_have_the_shape_the_openapi_document_gives(api, gateway_url):
    """Each service's document described flask-smorest's error shape
    ({"code": <int>, "status", "errors"}) for every 400 and default answer,
    not the {"error": {...}} every answer has."""
    doc = requests.get(gateway_url + "/api/v1/openapi.json", timeout=30).json()
    asked = [("post", "/api/v1/contacts", "400", api.post("/api/v1/contacts", json={"email": 7})),
             ("get", "/api/v1/lists/{list_id}", "default", api.get(f"/api/v1/lists/{'0' * 32}")),
             ("post", "/api/v1/templates", "400", api.post("/api/v1/templates", json={})),
             ("get", "/api/v1/keys", "default", requests.get(gateway_url + "/api/v1/keys"))]
    for method, path, status, response in asked:
        assert response.status_code in (400, 401, 404), response.text
        documented = doc["paths"][path][method]["responses"][status]
        if "$ref" in documented:
            documented = doc["components"]["responses"][documented["$ref"].split("/")[-1]]
        schema = documented["content"]["application/json"]["schema"]
        jsonschema.validate(response.json(), {**schema, "components": doc["components"]})


def test_an_options_request_lists_the_methods_the_path_takes_and_another_is_a_405(
        gateway_url, api):
    def allow(path):
        response = requests.options(gateway_url + path, timeout=30)
        assert response.status_code == 200, (path, response.text)
        return set(response.headers["Allow"].split(", "))

    an_id = "0" * 32
    assert allow(f"/api/v1/campaigns/{an_id}/pause") == {"POST", "OPTIONS"}
    assert allow(f"/api/v1/lists/{an_id}") == {"GET", "HEAD", "PATCH", "DELETE", "OPTIONS"}
    assert allow("/api/v1/suppressions/check") == {"POST", "OPTIONS"}
    assert allow(f"/api/v1/suppressions/{an_id}") == {"DELETE", "OPTIONS"}
    assert allow("/api/v1/keys") == {"GET", "POST", "HEAD", "OPTIONS"}      # the gateway's own
    foreign_user = {"user_id": "f" * 32}   # refused for a POST, which the path takes
    for method, path in (("PUT", f"/api/v1/privacy/notices/{an_id}/ack"),
                         ("GET", f"/api/v1/privacy/notices/{an_id}/ack"),
                         ("POST", f"/api/v1/campaigns/{an_id}")):
        body = {"audience": {"segment_id": an_id}} if "campaigns" in path else foreign_user
        wrong = api.request(method, path, json=body)
        assert wrong.status_code == 405, (method, path, wrong.text)
        assert method not in wrong.headers["Allow"]
    for nothing in ("/api/v1/no-such-thing", f"/api/v1/lists/{an_id}/nothing",
                    "/api/v1/lists/%2e%2e/keys"):
        missing = requests.options(gateway_url + nothing, timeout=30)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_usage_has_every_figure(api):
    usage = api.get("/api/v1/usage").json()
    assert set(usage) == {"lists", "contacts", "templates", "campaigns", "mailings_sent",
                          "mailings_bytes"}
    assert all(isinstance(v, int) and v >= 0 for v in usage.values())


def test_request_id_is_returned_and_propagated(api, stack_env):
    """The id a caller sends (an opaque one: hex digits and hyphens) comes
    back, and is the trace id of the event the service it reached published
    on Kafka."""
    given = str(uuid.uuid4())
    response = api.get("/api/v1/keys", headers={"X-Request-Id": given})
    assert response.headers["X-Request-Id"] == given
    trace = uuid.uuid4().hex
    tail = TopicReader(stack_env["SANDESH_KAFKA_BOOTSTRAP"], "contacts.events", since="now")
    try:
        created = api.post("/api/v1/contacts", json={"email": f"trace-{trace}@example.com"},
                           headers={"X-Request-Id": trace})
        assert created.status_code == 201, created.text
        assert created.headers["X-Request-Id"] == trace
        contact_id = created.json()["id"]
        events = tail.wait_for(lambda e: e["subject"] == contact_id, timeout=30)
    finally:
        tail.close()
    assert events and events[0]["type"] == "contact.created"
    assert events[0]["traceid"] == trace


def test_a_campaign_naming_lists_or_a_segment_the_account_lacks_is_a_400(new_account):
    """Saved, it went to nobody, with only the finished campaign to say why."""
    _, api = new_account("Audience Ltd")
    _, other = new_account("Other Ltd")
    mine = api.post("/api/v1/lists", json={"name": "mine"}).json()["id"]
    theirs = other.post("/api/v1/lists", json={"name": "theirs"}).json()["id"]
    their_segment = other.post("/api/v1/segments", json={
        "name": "all", "definition": {"field": "email", "op": "contains", "value": "@"}})
    assert their_segment.status_code == 201, their_segment.text
    template = api.post("/api/v1/templates", json={
        "name": "t", "subject": "Hi", "html": "<p>Hi</p>"}).json()["id"]
    campaign = {"name": "c", "template_id": template, "from_email": "news@example.com",
                "postal_address": "1 Main St"}

    refused = api.post("/api/v1/campaigns", json={**campaign, "audience": {
        "list_ids": [mine, theirs, "0" * 32], "segment_id": their_segment.json()["id"]}})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["details"] == {
        "audience.list_ids": [f"no list {theirs} in the account", f"no list {'0' * 32} in the account"],
        "audience.segment_id": ["no segment with this id in the account"]}

    made = api.post("/api/v1/campaigns", json={**campaign, "audience": {"list_ids": [mine]}})
    assert made.status_code == 201, made.text
    patched = api.patch(f"/api/v1/campaigns/{made.json()['id']}",
                        json={"audience": {"list_ids": [theirs]}})
    assert patched.status_code == 400 and "audience.list_ids" in patched.json()["error"]["details"]
    assert api.get(f"/api/v1/campaigns/{made.json()['id']}").json()["audience"]["list_ids"] == [mine]
    stats = api.get(f"/api/v1/campaigns/{made.json()['id']}/stats")   # a draft: none yet
    assert stats.status_code == 404 and "not been launched" in stats.json()["error"]["message"]
