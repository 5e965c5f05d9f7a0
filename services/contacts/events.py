"""contacts.events: what the service tells the platform. Ids and status only,
never an address or a name (the schemas in shared/events/schemas enforce it).
One exception, on contact.suppressed: the salted address hash the
suppression list is keyed by (see contact_suppressed)."""
from __future__ import annotations

from shared import topics
from shared.events import new_event
from shared.kafka.producer import EventProducer

SOURCE = "contacts"


def _publish(producer: EventProducer, type_: str, account_id: str, contact_id: str | None,
             data: dict, key: str | None = None) -> None:
    subject = contact_id or ""
    producer.publish(topics.CONTACTS_EVENTS,
                     new_event(type_, source=SOURCE, subject=subject, account_id=account_id,
                               data=data),
                     key=contact_id or key or account_id or "platform")


def contact_created(producer, doc: dict, via: str) -> None:
    _publish(producer, "contact.created", doc["account_id"], doc["_id"],
             {"contact_id": doc["_id"], "list_ids": list(doc.get("list_ids", [])),
              "status": doc["status"], "via": via})


def contact_updated(producer, doc: dict, field_names: list[str], revision: int) -> None:
    """`revision`: the contact's, after the change (see fanout.send_job)."""
    _publish(producer, "contact.updated", doc["account_id"], doc["_id"],
             {"contact_id": doc["_id"], "fields": field_names, "revision": revision})


def contact_subscribed(producer, doc: dict, list_id: str, via: str) -> None:
    _publish(producer, "contact.subscribed", doc["account_id"], doc["_id"],
             {"contact_id": doc["_id"], "list_id": list_id, "via": via})


def contact_unsubscribed(producer, doc: dict, list_id: str | None, via: str) -> None:
    _publish(producer, "contact.unsubscribed", doc["account_id"], doc["_id"],
             {"contact_id": doc["_id"], "list_id": list_id, "via": via})


def contact_suppressed(producer, account_id: str, contact_id: str | None, scope: str,
                       reason: str, email_hash: str) -> None:
    """The hash lets the sender skip jobs already queued for the address in
    every account a platform-wide entry covers, whose contacts this event
    cannot name. It is the keyed hash privacy.requests already carries:
    without SANDESH_PII_SALT it cannot be reversed or matched to an address.
    An entry without a contact is keyed by the hash, so that compaction
    keeps one event per address rather than one per account."""
    _publish(producer, "contact.suppressed", account_id, contact_id,
             {"contact_id": contact_id, "scope": scope, "reason": reason,
              "email_hash": email_hash}, key=email_hash)


def contact_unsuppressed(producer, account_id: str, contact_id: str | None,
                         email_hash: str) -> None:
    """The account's entry is gone and no other covers the address: the
    sender may mail it again. Keyed as contact_suppressed is, so a contact's
    two events stay in order on one partition."""
    _publish(producer, "contact.unsuppressed", account_id, contact_id,
             {"contact_id": contact_id, "scope": "account", "email_hash": email_hash},
             key=email_hash)


def status_changed(producer, doc: dict, status: str, reason: str) -> None:
    _publish(producer, "contact.status_changed", doc["account_id"], doc["_id"],
             {"contact_id": doc["_id"], "status": status, "reason": reason})


def contact_erased(producer, doc: dict, request_id: str | None) -> None:
    _publish(producer, "contact.erased", doc["account_id"], doc["_id"],
             {"contact_id": doc["_id"], "request_id": request_id})
