"""Exports and deletes are audited before they happen: an audit.recorded
event (ids only) on audit.events, and nothing exported or deleted when the
broker does not take it. The privacy service's side, and the whole way
through Kafka, is tests/e2e/test_privacy_audit.py."""
from __future__ import annotations

from shared.kafka.producer import EventProducer
from tests.integration.contacts.conftest import published

V1 = "/api/v1"


def _setup(client):
    list_id = client.post(f"{V1}/lists", {"name": "audited"}).get_json()["id"]
    contact = client.post(f"{V1}/contacts", {"email": "ana@example.com", "name": "Ana Audit",
                                             "list_ids": [list_id]}).get_json()
    return list_id, contact["id"]


def _audit(broker) -> list[dict]:
    return [e["data"] for e in published(broker, "audit.events")]


def test_an_export_and_a_delete_are_audited_with_ids_only(client, broker):
    list_id, contact_id = _setup(client)
    segment = client.post(f"{V1}/segments", {"name": "all", "definition": {
        "field": "list", "op": "member", "value": list_id}}).get_json()
    assert client.get(f"{V1}/lists/{list_id}/export").status_code == 200
    assert client.get(f"{V1}/segments/{segment['id']}/export").status_code == 200
    assert client.delete(f"{V1}/contacts/{contact_id}").status_code == 204
    entries = _audit(broker)
    assert [(e["action"], e["target_type"], e["target_id"], e["principal"]) for e in entries] == [
        ("contacts.exported", "list", list_id, "key-test"),
        ("contacts.exported", "segment", segment["id"], "key-test"),
        ("contact.deleted", "contact", contact_id, "key-test")]
    assert "ana" not in str(entries).lower()


def test_nothing_is_exported_or_deleted_when_the_audit_entry_is_not_out(client, app, broker):
    list_id, contact_id = _setup(client)
    sink = broker.sink()
    app.extensions["runtime"]._producer = EventProducer(sink)
    sink.fail_next_flush = RuntimeError("broker down")
    refused = client.delete(f"{V1}/contacts/{contact_id}")
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert client.get(f"{V1}/contacts/{contact_id}").status_code == 200
    sink.fail_next_flush = RuntimeError("broker down")
    export = client.get(f"{V1}/lists/{list_id}/export")
    assert export.status_code == 503 and b"ana@example.com" not in export.get_data()
    assert _audit(broker) == []
