"""Deleting an account deletes all its data, through the real stack: its
users (and their addresses on the platform's policy-notice list), contacts,
lists, templates, campaigns and what was sent; only the account's id and
status, the revoked keys and the privacy request's record stay."""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from tests.e2e.test_privacy_erasure import add_contacts, databases_mentioning
from tests.e2e.test_send_path import (REPO, gateway, make_campaign, make_list,  # noqa: F401
                                      wait_for)

pytestmark = pytest.mark.timeout(900)


def _db(stack_env, service: str):
    from shared import mongo
    prefix = stack_env.get("SANDESH_MONGO_DB_PREFIX", "sandesh_")
    return mongo.client(stack_env["SANDESH_MONGO_URI"])[prefix + service]


def _publish_policy(gw, stack_env, marker: str) -> dict:
    """Puts every account user on the platform's notice list."""
    token = Path(stack_env.get("SANDESH_OPERATOR_TOKEN_FILE",
                               REPO / "run" / "operator-token")).read_text().strip()
    published = requests.post(gw.base + "/privacy/policies", timeout=120,
                              headers={"Authorization": f"Bearer {token}"},
                              json={"text": f"Policy {marker}", "summary": "Account deletion test",
                                    "material": False, "effective_at":
                                    (datetime.now(timezone.utc) + timedelta(days=31)).isoformat()})
    assert published.status_code == 201, published.text
    assert published.json()["notification"]["status"] == "sending", published.json()
    return published.json()["notification"]


def test_deleting_an_account_deletes_all_its_data(gateway, stack_env):  # noqa: F811
    marker = uuid.uuid4().hex[:10]
    user_email, user_name = f"owner-{marker}@e2e.example.com", f"Owner {marker}"
    contact_email, contact_name = f"client-{marker}@e2e.example.com", f"Client {marker}"
    account_id = gateway.account_id
    gateway.call("POST", "/users", json={"email": user_email, "name": user_name})
    list_id = make_list(gateway, "to delete")
    add_contacts(gateway, list_id, [(contact_email, contact_name)])
    campaign_id = make_campaign(gateway, stack_env, [list_id])
    gateway.call("POST", f"/campaigns/{campaign_id}/send")
    wait_for(gateway, campaign_id, timeout=300)
    notification = _publish_policy(gateway, stack_env, marker)
    platform_contacts = _db(stack_env, "contacts").contacts
    assert platform_contacts.count_documents(
        {"account_id": notification["account_id"], "email": user_email}) == 1

    privacy_db = _db(stack_env, "privacy")
    deadline = time.monotonic() + 60   # the delivery is counted in the aggregates
    while time.monotonic() < deadline and not privacy_db.agg_markers.count_documents({"account_id": account_id}):
        time.sleep(0.5)
    assert privacy_db.agg_markers.count_documents({"account_id": account_id}) > 0

    deleted = gateway.session.delete(gateway.base + "/account", timeout=120)
    assert deleted.status_code == 202, deleted.text
    request_id = deleted.json()["request_id"]
    assert gateway.session.get(gateway.base + "/lists", timeout=30).status_code == 401

    requests_ = _db(stack_env, "privacy").requests
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and requests_.find_one({"_id": request_id})["status"] != "complete":
        time.sleep(1)
    request = requests_.find_one({"_id": request_id})
    assert request["status"] == "complete", request
    assert set(request["answers"]) == {"campaigns", "contacts", "sender", "tracking"}

    owned = {"gateway": ["users"],
             "contacts": ["contacts", "lists", "imports", "consent", "fanouts", "fanout_claims",
                          "fanout_marks"],
             "campaigns": ["templates", "template_versions", "campaigns", "progress"],
             "sender": ["deliveries", "parked_jobs"], "tracking": ["deliveries", "campaigns"]}
    left = {f"{service}.{name}": _db(stack_env, service)[name].count_documents({"account_id": account_id})
            for service, names in owned.items() for name in names}
    assert {k: v for k, v in left.items() if v} == {}
    # the privacy service's own part (the campaign's aggregate markers) is
    # done by its worker, after the API answered
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and privacy_db.agg_markers.count_documents({"account_id": account_id}):
        time.sleep(1)
    assert privacy_db.agg_markers.count_documents({"account_id": account_id}) == 0
    assert _db(stack_env, "campaigns").job_outcomes.count_documents({"campaign_id": campaign_id}) == 0
    assert platform_contacts.count_documents({"email": user_email}) == 0
    assert databases_mentioning(stack_env, [user_email, user_name.lower(), contact_email,
                                            contact_name.lower()]) == []
    account = _db(stack_env, "gateway").accounts.find_one({"_id": account_id})
    assert (account["status"], account["name"], account["postal_address"]) == ("deleted", "", "")
