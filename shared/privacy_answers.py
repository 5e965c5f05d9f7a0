"""What every service's privacy module shares: reading the subject of a
privacy.requested event and answering it on privacy.acks.

A request by address travels as a salted hash that only contacts can turn
into a contact id. Services that know contacts by id only (sender,
tracking, campaigns) wait: when contacts answers, the privacy service sends
the request again with the id and `resolved: true` (no id then means that
address is not a contact of the account: nothing to do).
"""
from __future__ import annotations

import hashlib
import uuid

from shared import topics
from shared.events import Event, new_event


def contact_id_or_wait(event: Event) -> tuple[str | None, bool]:
    """(contact id, ready): not ready means "wait for the resolved request"."""
    subject = event.data["subject"]
    contact_id = subject.get("contact_id")
    if contact_id:
        return contact_id, True
    return None, bool(event.data.get("resolved"))


def contact_ids_or_wait(event: Event) -> tuple[list[str], bool]:
    """(every contact id the subject names, ready): an address deleted more
    than once resolves to several ids (`contact_ids`), each with records of
    its own."""
    contact_id, ready = contact_id_or_wait(event)
    named = [contact_id, *(event.data["subject"].get("contact_ids") or [])]
    return list(dict.fromkeys(i for i in named if i)), ready


PSEUDONYM_PREFIX = "erased-"

# What a rectification may change of a contact: its data, not its state
# (status, suppression, consent are the account's record, changed by their
# own requests). Contacts applies it; privacy refuses anything else at once.
RECTIFIABLE = ("email", "name", "fields")


def pseudonym() -> str:
    """What replaces an erased contact's id in records kept for the totals:
    random, so nothing maps it back (not even to the old id)."""
    return PSEUDONYM_PREFIX + uuid.uuid4().hex[:20]


def pseudonym_of(seed: str) -> str:
    """A pseudonym that is the same each time for `seed`, which must itself
    lead to nobody (a keyed job id, say): what a retried report names."""
    return PSEUDONYM_PREFIX + hashlib.sha256(seed.encode()).hexdigest()[:20]


def is_pseudonym(contact_id: str | None) -> bool:
    return bool(contact_id) and contact_id.startswith(PSEUDONYM_PREFIX)


def answer(producer, event: Event, service: str, status: str, *, export: dict | None = None,
           detail: str | None = None, contact_ids: list[str] | None = None) -> None:
    """Publish this service's answer and flush: the answer is out before the
    request's offset is committed."""
    data: dict = {"request_id": event.data["request_id"], "service": service, "status": status}
    if export is not None:
        data["export"] = export
    if detail:
        data["detail"] = detail[:500]
    if contact_ids:
        data["contact_ids"] = contact_ids
    producer.publish(topics.PRIVACY_ACKS, new_event(
        "privacy.answered", source=f"sandesh.{service}", subject=event.data["request_id"],
        account_id=event.account_id, data=data), key=event.data["request_id"])
    producer.flush()
