"""Policy versions through the real gateway: 29 days out is refused, 30
accepted; every account user gets the notice by email (a system campaign of
the platform account through the real send path) and sees it in
privacy/notices until acknowledged."""
from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from tests.clock import UTC_DAY, clear_of_boundary
from tests.e2e.test_send_path import REPO, by_recipient, gateway, received  # noqa: F401

pytestmark = pytest.mark.timeout(600)


def test_a_policy_needs_30_days_notice_and_every_user_is_told(gateway, stack_env):  # noqa: F811
    marker = uuid.uuid4().hex[:10]
    users = [gateway.call("POST", "/users", json={"email": f"user{i}.{marker}@e2e.example.com",
                                                  "name": f"User {i}"}) for i in range(2)]
    token = Path(stack_env.get("SANDESH_OPERATOR_TOKEN_FILE",
                               REPO / "run" / "operator-token")).read_text().strip()
    operator = {"Authorization": f"Bearer {token}"}
    clear_of_boundary(UTC_DAY, margin=180)  # the rule counts calendar days from the server's now
    now = datetime.now(timezone.utc)
    body = {"text": f"Policy {marker}", "summary": "We keep delivery records 30 days.",
            "material": True}
    url = gateway.base + "/privacy/policies"
    early = requests.post(url, headers=operator, timeout=60,
                          json={**body, "effective_at": (now + timedelta(days=29)).isoformat()})
    assert early.status_code == 400 and "effective_at" in early.json()["error"]["details"]
    as_text = requests.post(url, headers={**operator, "Content-Type": "text/plain"}, timeout=60,
                            data=json.dumps({**body, "effective_at": (now + timedelta(days=30))
                                             .isoformat()}))
    assert as_text.status_code == 415   # as every JSON endpoint answers; nothing published
    published = requests.post(url, headers=operator, timeout=120,
                              json={**body, "effective_at": (now + timedelta(days=30)).isoformat()})
    assert published.status_code == 201, published.text
    policy = published.json()
    assert policy["notification"]["status"] == "sending", policy["notification"]

    deadline = time.monotonic() + 300
    got = {}
    while time.monotonic() < deadline:
        got = by_recipient(received(stack_env, marker))
        if len(got) == len(users):
            break
        time.sleep(1)
    assert set(got) == {u["email"] for u in users}
    assert all(len(copies) == 1 for copies in got.values())
    assert "privacy policy" in next(iter(got.values()))[0]["Subject"].lower()
    html = next(iter(got.values()))[0].get_body(("html",)).get_content()
    # the name an account gave its user is not the platform's to say
    assert "Hello," in html and "User " not in html

    for user in users:
        notices = gateway.call("GET", "/privacy/notices", params={"user_id": user["id"]})["items"]
        assert policy["id"] in [n["policy_id"] for n in notices]
    gateway.call("POST", f"/privacy/notices/{policy['id']}/ack", json={"user_id": users[0]["id"]})
    left = gateway.call("GET", "/privacy/notices", params={"user_id": users[0]["id"]})["items"]
    assert policy["id"] not in [n["policy_id"] for n in left]
