"""Bulk exports and deletes of contacts land in the privacy audit log,
through the real gateway, contacts, Kafka (audit.events) and privacy."""
from __future__ import annotations

import uuid

import pytest

from tests.e2e.test_privacy_erasure import poll
from tests.e2e.test_send_path import Gateway, gateway, make_list  # noqa: F401

pytestmark = pytest.mark.timeout(600)


def audit_entries(gw: Gateway) -> list[dict]:
    return gw.call("GET", "/privacy/audit", params={"limit": 500})["items"]


def test_list_and_segment_exports_and_contact_deletes_are_audited(gateway):  # noqa: F811
    marker = uuid.uuid4().hex[:10]
    list_id = make_list(gateway, "audited")
    contact = gateway.call("POST", "/contacts", json={
        "email": f"audit-{marker}@e2e.example.com", "name": f"Audit {marker}",
        "list_ids": [list_id]})
    segment = gateway.call("POST", "/segments", json={
        "name": f"audited {marker}",
        "definition": {"field": "list", "op": "member", "value": list_id}})

    for path in (f"/lists/{list_id}/export", f"/segments/{segment['id']}/export"):
        csv = gateway.session.get(gateway.base + path, timeout=60)
        assert csv.status_code == 200 and f"audit-{marker}" in csv.text, (path, csv.text[:300])
    deleted = gateway.session.delete(gateway.base + f"/contacts/{contact['id']}", timeout=60)
    assert deleted.status_code == 204, deleted.text

    wanted = {("contacts.exported", "list", list_id),
              ("contacts.exported", "segment", segment["id"]),
              ("contact.deleted", "contact", contact["id"])}
    entries = poll(lambda: audit_entries(gateway),
                   lambda got: wanted <= {(e["action"], e["target_type"], e["target_id"]) for e in got},
                   120, every=1)
    mine = [e for e in entries if e["action"] in ("contacts.exported", "contact.deleted")]
    assert all(e["principal"] and e["principal"] != "contacts" for e in mine), mine
    assert f"audit-{marker}" not in str(mine).lower()
