"""What the contacts worker consumes: {event type: handler}.

Unsubscribes, complaints and hard bounces are applied at once (the sender
re-checks at send time with what we publish). Every handler is idempotent:
a redelivered event changes nothing more, and the consent entry it appends
has an id derived from the event id, so it is written once.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from services.contacts import domain, events, fanout, privacy, usecases
from services.contacts.store import PLATFORM, ContactsStore
from shared import topics
from shared.events import Event, InvalidEvent

log = logging.getLogger(__name__)

GROUP = "contacts"
TOPICS = [topics.CAMPAIGNS_EVENTS, topics.TRACKING_EVENTS, topics.DELIVERY_EVENTS,
          topics.PRIVACY_REQUESTS]
ACTOR = "platform"
# A status only moves towards the more serious one.
SEVERITY = {"active": 0, "restricted": 0, "bounced": 1, "complained": 2}
# How tracking says the recipient unsubscribed -> the consent log's `via`.
# An event without `method` (tracking before it was added) came from a link.
UNSUBSCRIBE_VIA = {"one-click": "one-click", "page": "form", "mail": "mail"}


def ports_for(runtime) -> usecases.Ports:
    return usecases.Ports(ContactsStore(runtime.db), runtime.producer(), runtime.config.pii_salt)


def _event_time(event: Event) -> datetime:
    try:
        return domain.parse_date(event.time)
    except domain.InvalidValue:
        return domain.now()


def _consent_id(event: Event, at: datetime, list_id: str | None) -> str:
    """Time-ordered like domain.ordered_id(), but the same for a redelivery."""
    digest = hashlib.sha256(f"{event.id}:{list_id}".encode()).hexdigest()
    return f"{int(at.timestamp() * 1000):012x}{digest[:20]}"


def _contact(ports: usecases.Ports, event: Event) -> dict | None:
    contact_id = event.data.get("contact_id")
    if not domain.is_id(contact_id):
        return None
    query = {"_id": contact_id}
    if event.account_id:
        query["account_id"] = event.account_id
    return ports.store.contacts.find_one(query)


def _log_consent(ports, event: Event, contact: dict, list_id: str | None, via: str) -> None:
    at = _event_time(event)
    try:
        ports.store.append_consent({
            "_id": _consent_id(event, at, list_id), "account_id": contact["account_id"],
            "contact_ids": [contact["_id"]], "list_id": list_id, "action": "unsubscribe",
            "via": via, "ip": event.data.get("ip_prefix"), "actor": ACTOR, "event_id": event.id,
            "campaign_id": event.data.get("campaign_id"), "at": at})
    except Exception as exc:
        if getattr(exc, "code", None) != 11000:   # a redelivery: already logged
            raise


def _deleted(ports: usecases.Ports, event: Event) -> dict | None:
    """A contact the account deleted through the API that the event names:
    mail the person still has keeps naming it (store.remember_deleted)."""
    contact_id = event.data.get("contact_id")
    if not event.account_id or not domain.is_id(contact_id):
        return None
    return ports.store.deleted_contact(event.account_id, contact_id)


def unsubscribe(ports: usecases.Ports, event: Event) -> None:
    """One list when the event names it, otherwise every list of the account
    (and the address goes on the account's suppression list)."""
    contact = _contact(ports, event)
    if contact is None:
        gone = _deleted(ports, event)
        if gone is not None:  # re-added later, the address must not be mailed again
            if not _logged_before(ports, event, gone, event.data.get("list_id")):
                _log_consent(ports, event, gone, event.data.get("list_id"),
                             UNSUBSCRIBE_VIA.get(event.data.get("method"), "link"))
            usecases.suppress(ports, gone["account_id"], gone["email_hash"], "unsubscribe",
                              ACTOR, flush=False)
        return
    list_id = event.data.get("list_id")
    memberships = contact.get("lists", {})
    targets = [list_id] if list_id in memberships else \
        ([] if list_id else list(memberships))
    at = _event_time(event)
    via = UNSUBSCRIBE_VIA.get(event.data.get("method"), "link")
    if list_id and list_id not in memberships and \
            not _logged_before(ports, event, contact, list_id):
        # The list was deleted (or the contact taken off it) since the mail
        # went: nothing to change, but the person's choice is still logged;
        # it was dropped without a trace.
        _log_consent(ports, event, contact, list_id, via)
    for target in targets:
        if not (memberships[target].get("status") == "unsubscribed"
                and _logged_before(ports, event, contact, target)):
            update = domain.membership_update(target, domain.membership(
                "unsubscribed", via, at, campaign_id=event.data.get("campaign_id")))
            update["$set"]["updated_at"] = domain.now()
            ports.store.contacts.update_one({"_id": contact["_id"]}, update)
            _log_consent(ports, event, contact, target, via)
        events.contact_unsubscribed(ports.producer, contact, target, via)
    if not list_id:
        if not (contact.get("suppressed") and _logged_before(ports, event, contact, None)):
            _log_consent(ports, event, contact, None, via)
        usecases.suppress(ports, contact["account_id"], contact["email_hash"], "unsubscribe",
                          ACTOR, contact_id=contact["_id"], flush=False)
        events.contact_unsubscribed(ports.producer, contact, None, via)


def _logged_before(ports, event: Event, contact: dict, list_id: str | None) -> bool:
    """Whether this unsubscribe (its event id: one per message and list) is
    in the consent log already. A person who clicks one-click three times
    makes three events of one id at three times: each was a new entry, and
    moved the membership's time. A redelivery has the same time, and its
    entry's id (_consent_id) catches it too. Asked only while the contact
    is still unsubscribed: after a re-subscription, the old message's link
    unsubscribes again, and is logged again."""
    return ports.store.consent.find_one(
        {"account_id": contact["account_id"], "contact_ids": contact["_id"],
         "event_id": event.id, "list_id": list_id}, {"_id": 1}) is not None


def _escalate(ports: usecases.Ports, contact: dict, status: str, reason: str) -> None:
    current = SEVERITY.get(contact["status"], 0)
    if current < SEVERITY[status]:
        ports.store.contacts.update_one({"_id": contact["_id"], "status": contact["status"]},
                                        {"$set": {"status": status, "updated_at": domain.now()}})
    if current <= SEVERITY[status]:
        # Also when the status is there already: this event's first handling
        # may have written it and died before its event went out (the sender
        # learns of bounces only from it). Consumers take a repeat as a no-op.
        events.status_changed(ports.producer, contact, status, reason)


@dataclass(frozen=True)
class _Mailed:
    """The address an event's mail went to: its account, its hash, and the
    contact when that address is the contact's current one."""
    account_id: str
    email_hash: str
    contact: dict | None


def _mailed(ports: usecases.Ports, event: Event) -> _Mailed | None:
    """Mail sent before an address change is about the address of then
    (the event's contact_revision), not the one the contact moved to, whose
    owner would otherwise never be mailed by anyone again; mail to a
    contact deleted through the API, about its remembered hash."""
    contact = _contact(ports, event)
    if contact is None:
        gone = _deleted(ports, event)
        return _Mailed(gone["account_id"], gone["email_hash"], None) if gone else None
    hash_, current = domain.address_at(contact, event.data.get("contact_revision"))
    return _Mailed(contact["account_id"], hash_, contact if current else None)


def complained(ports: usecases.Ports, event: Event) -> None:
    """A complaint: status complained, and the address is suppressed
    platform-wide (no account mails it again)."""
    mailed = _mailed(ports, event)
    if mailed is None:
        return
    if mailed.contact:
        _escalate(ports, mailed.contact, "complained", "complaint")
    usecases.suppress(ports, PLATFORM, mailed.email_hash, "complaint", ACTOR,
                      contact_id=mailed.contact["_id"] if mailed.contact else None, flush=False,
                      origin_account_id=mailed.account_id)


def bounced(ports: usecases.Ports, event: Event) -> None:
    """A hard bounce: status bounced and suppressed for the account; soft
    bounces are the sender's business (retries)."""
    if event.data.get("bounce_type") != "hard":
        return
    mailed = _mailed(ports, event)
    if mailed is None:
        return
    if mailed.contact:
        _escalate(ports, mailed.contact, "bounced", "hard_bounce")
    usecases.suppress(ports, mailed.account_id, mailed.email_hash, "hard_bounce", ACTOR,
                      contact_id=mailed.contact["_id"] if mailed.contact else None, flush=False)


def reissue(ports: usecases.Ports, event: Event) -> None:
    """delivery.held: a sender holds back a job whose contact changed after
    the fan-out read it. The same job goes out again with the contact as
    it is now, so a corrected address is mailed instead of the old one (a
    redelivery only sends it twice: the sender claims it once)."""
    contact = _contact(ports, event) if event.account_id else None
    job = fanout.job_again(event.data, contact)
    try:
        fanout.publish_job(ports.producer, event.account_id, job)
    except (InvalidEvent, TypeError, ValueError):
        # A contact the send.job schema refuses (stored before a rule):
        # the job is given up, not retried for ever on this partition.
        log.error("a held job's contact fails the send.job schema; the job is withdrawn",
                  extra={"job_id": job["job_id"], "contact_id": job["contact_id"]})
        fanout.publish_job(ports.producer, event.account_id, fanout.job_again(event.data, None))


def build_handlers(runtime, wake_fanouts: Callable[[], None] = lambda: None) -> dict:
    """Add handlers here (e.g. privacy.requested from services/contacts/privacy.py,
    campaign.launched from services/contacts/fanout.py). `wake_fanouts` tells
    the worker's fan-out threads that there is work."""
    ports = ports_for(runtime)

    def with_ports(fn):
        return lambda event: fn(ports, event)

    return {
        **fanout.handlers(runtime, wake=wake_fanouts),
        "tracking.unsubscribed": with_ports(unsubscribe),
        "tracking.complained": with_ports(complained),
        "tracking.bounced": with_ports(bounced),
        "delivery.bounced": with_ports(bounced),
        "delivery.held": with_ports(reissue),
        "privacy.requested": lambda event: privacy.handle_privacy_request(runtime, event),
    }
