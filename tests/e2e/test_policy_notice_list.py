"""A user's rectification reaches the platform's policy-notice list, through
the real stack: a corrected name is the name the next notice greets, and a
corrected address takes the old one off the list (it was mailed with every
notice after the correction)."""
from __future__ import annotations

import uuid

import pytest

from tests.e2e.test_privacy_account import _db, _publish_policy
from tests.e2e.test_send_path import gateway  # noqa: F401

pytestmark = pytest.mark.timeout(300)


def test_a_users_corrected_name_and_address_reach_the_platform_list(gateway, stack_env):  # noqa: F811
    marker = uuid.uuid4().hex[:10]  # the old address in mixed case: found in any case
    old_email, new_email = f"Typo-{marker}@e2e.example.com", f"right-{marker}@e2e.example.com"
    user = gateway.call("POST", "/users", json={"email": old_email, "name": f"Wrong {marker}"})
    colleague = f"colleague-{marker}@e2e.example.com"
    gateway.call("POST", "/users", json={"email": colleague, "name": "Colleague"})
    platform = _publish_policy(gateway, stack_env, marker)["account_id"]
    contacts = _db(stack_env, "contacts").contacts

    def on_list(email):
        return [c.get("name") for c in contacts.find({"account_id": platform, "email": email})]

    assert on_list(old_email) == [f"Wrong {marker}"]
    gateway.call("PATCH", f"/users/{user['id']}", json={"name": f"Right {marker}"})
    assert on_list(old_email) == [f"Right {marker}"]
    # A correction refused (the address is a colleague's) changes nothing, on the list either.
    gateway.call("PATCH", f"/users/{user['id']}", json={"email": colleague}, expect=409)
    assert on_list(old_email) == [f"Right {marker}"]
    gateway.call("PATCH", f"/users/{user['id']}", json={"email": new_email})
    assert on_list(old_email) == []
    _publish_policy(gateway, stack_env, marker + "-2")
    assert on_list(new_email) == [f"Right {marker}"]
