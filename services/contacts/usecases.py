"""What the contacts service does for its HTTP API: lists, contacts and their
memberships, custom fields, the consent log, the suppression list, segments,
usage. Dependencies come in as arguments (`Ports`); every function takes the
calling account id and never touches another account's data."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from services.contacts import domain, events
from services.contacts.segments import SegmentError, fields_named
from services.contacts.store import (PLATFORM, Conflict, ContactsStore, IndexRefused, SeatsTaken,
                                     contact_document)
from shared.http.errors import ApiError, not_found
from shared.kafka.producer import EventProducer
from shared.pii import InvalidEmail, normalise_email
from shared.privacy_answers import RECTIFIABLE

log = logging.getLogger(__name__)


# What a contact's revision counts changes of: what a rectification may
# change (one tuple, shared with the privacy service, which checks requests).
CONTACT_DATA = RECTIFIABLE


@dataclass
class Ports:
    store: ContactsStore
    producer: EventProducer
    salt: str
    clock: Callable[[], datetime] = field(default=domain.now)


def invalid(field_name: str, message: str) -> ApiError:
    return ApiError(400, "validation_error", f"invalid input: {field_name}",
                    {field_name: [message]})


def conflict(message: str, code: str = "conflict", field_name: str | None = None) -> ApiError:
    return ApiError(409, code, message, {field_name: [message]} if field_name else None)


def clash(exc: Conflict) -> ApiError:
    """A unique index's refusal as a 409 naming the field that clashes."""
    return conflict(str(exc), field_name=exc.field)


def parse_address(ports: Ports, raw: Any, field_name: str = "email") -> domain.Address:
    try:
        return domain.address(raw, ports.salt)
    except InvalidEmail as exc:
        raise invalid(field_name, str(exc)) from None


# -- lists -------------------------------------------------------------------
def create_list(ports: Ports, account_id: str, body: dict) -> dict:
    at = ports.clock()
    doc = {"_id": domain.new_id(), "account_id": account_id, "name": body["name"],
           "description": body.get("description") or "", "created_at": at, "updated_at": at}
    try:
        return ports.store.insert_list(doc)
    except Conflict as exc:
        raise clash(exc) from None


def get_list(ports: Ports, account_id: str, list_id: str, with_counts: bool = False) -> dict:
    doc = ports.store.get_list(account_id, list_id) if domain.is_id(list_id) else None
    if doc is None:
        raise not_found("list")
    if with_counts:
        doc["counts"] = ports.store.count_members(account_id, list_id)
    return doc


def update_list(ports: Ports, account_id: str, list_id: str, body: dict) -> dict:
    get_list(ports, account_id, list_id)
    try:
        return ports.store.update_list(account_id, list_id, {**body, "updated_at": ports.clock()})
    except Conflict as exc:
        raise clash(exc) from None


def delete_list(ports: Ports, account_id: str, list_id: str) -> None:
    if not domain.is_id(list_id) or not ports.store.delete_list(account_id, list_id):
        raise not_found("list")


# -- custom fields -----------------------------------------------------------
def create_field(ports: Ports, account_id: str, body: dict) -> dict:
    if body["type"] == "choice" and not body.get("choices"):
        raise invalid("choices", "a choice field needs its choices")
    if body["type"] != "choice" and body.get("choices"):
        raise invalid("choices", "only a choice field has choices")
    doc = {"_id": domain.new_id(), "account_id": account_id, "key": body["key"],
           "label": body.get("label") or body["key"], "type": body["type"],
           "choices": body.get("choices") or [], "searchable": body.get("searchable", False),
           "created_at": ports.clock()}
    try:
        ports.store.insert_field(doc)
    except Conflict as exc:
        raise clash(exc) from None
    except SeatsTaken:
        raise too_many_searchable() from None
    if doc["searchable"]:
        try:
            ports.store.index_field(doc["key"])
        except IndexRefused as exc:
            ports.store.remove_field_definition(account_id, doc["_id"])
            raise index_refused(exc) from None
    return doc


def get_field(ports: Ports, account_id: str, field_id: str) -> dict:
    doc = ports.store.get_field(account_id, field_id) if domain.is_id(field_id) else None
    if doc is None:
        raise not_found("field")
    return doc


def update_field(ports: Ports, account_id: str, field_id: str, body: dict) -> dict:
    current = get_field(ports, account_id, field_id)
    if "choices" in body:
        if current["type"] != "choice":
            raise invalid("choices", "only a choice field has choices")
        missing = set(current["choices"]) - set(body["choices"])
        if missing:  # stored values must stay valid
            raise invalid("choices", "choices can be added, not removed")
    try:
        updated = ports.store.update_field(account_id, field_id, body)
    except SeatsTaken:
        raise too_many_searchable() from None
    if updated is None:
        raise not_found("field")
    if body.get("searchable"):  # again when already: a build cut short is finished
        try:
            ports.store.index_field(updated["key"])
        except IndexRefused as exc:
            ports.store.update_field(account_id, field_id, {"searchable": False})
            raise index_refused(exc) from None
    elif body.get("searchable") is False:  # again when already: a drop cut short
        ports.store.unindex_field(updated["key"])
    return updated


def too_many_searchable() -> ApiError:
    """At most MAX_SEARCHABLE_FIELDS an account, to the unit even when
    requests run at once (the store's seats, SEARCH_SEATS)."""
    return conflict(f"an account has at most {domain.MAX_SEARCHABLE_FIELDS} searchable fields: "
                    "make another one unsearchable first", "too_many_searchable", "searchable")


def index_refused(exc: IndexRefused) -> ApiError:
    return conflict(f"the database would not index this field: {exc}"[:500], "index_refused",
                    "searchable")


def delete_field(ports: Ports, account_id: str, field_id: str) -> None:
    """Refused (409) while a segment names the field: deleted, it made the
    segment a 400 to preview and a campaign to it go to nobody."""
    field = ports.store.get_field(account_id, field_id) if domain.is_id(field_id) else None
    if field is None:
        raise not_found("field")
    using = sorted(segment["name"] for segment in ports.store.segments.find(
        {"account_id": account_id}, {"name": 1, "definition": 1})
        if f"fields.{field['key']}" in fields_named(segment["definition"]))
    if using:
        raise conflict(f"segments use this field: {', '.join(using)[:500]}", "in_use")
    if ports.store.delete_field(account_id, field_id) is None:
        raise not_found("field")
    if field.get("searchable"):
        ports.store.unindex_field(field["key"])


def checked_fields(ports: Ports, account_id: str, values: dict) -> dict:
    if not values:
        return {}
    try:
        return domain.check_fields(ports.store.field_definitions(account_id), values)
    except domain.InvalidFields as exc:
        raise ApiError(400, "validation_error", "invalid input: fields",
                       {"fields": {k: [v] for k, v in exc.problems.items()}}) from None


# -- contacts ----------------------------------------------------------------
def refuse_erased(account_id: str, entries: list[dict]) -> None:
    """An erased contact is deleted; what is left of it is the platform-wide
    suppression entry of its address hash, which lists the accounts that
    erased it (or, for an address the account never held, its own entry
    for the erasure). Those accounts never store the address again: the
    person asked them to forget it. (Other accounts may keep it, never mailed.)"""
    if any(erased_by(e, account_id) for e in entries):
        raise conflict("this address was erased at its owner's request and cannot be "
                       "stored again", "erased")


def _refuse_erased_meanwhile(ports: Ports, account_id: str, doc: dict) -> None:
    """An erasure of the address between the check above and the insert
    found no contact to erase: the contact goes again (see
    imports._suppressed_meanwhile)."""
    try:
        refuse_erased(account_id, ports.store.suppression_entries(account_id, [doc["email_hash"]]))
    except ApiError:
        ports.store.contacts.delete_one({"_id": doc["_id"], "account_id": account_id})
        raise


def erased_by(entry: dict, account_id: str) -> bool:
    if entry["account_id"] is PLATFORM:
        return account_id in entry.get("erased_in", ())
    return entry["account_id"] == account_id and bool(entry.get("erased"))


def get_contact(ports: Ports, account_id: str, contact_id: str) -> dict:
    doc = ports.store.get_contact(account_id, contact_id) if domain.is_id(contact_id) else None
    if doc is None:
        raise not_found("contact")
    return doc


def create_contact(ports: Ports, account_id: str, body: dict, actor: str) -> dict:
    addr = parse_address(ports, body["email"])
    values = checked_fields(ports, account_id, body.get("fields") or {})
    for list_id in body.get("list_ids") or []:
        get_list(ports, account_id, list_id)
    at = ports.clock()
    entries = ports.store.suppression_entries(account_id, [addr.hash])
    refuse_erased(account_id, entries)
    suppressed = bool(entries)
    if suppressed and body.get("list_ids") and \
            (not body.get("reconsent") or any(e["account_id"] is PLATFORM for e in entries)):
        raise conflict("this address is suppressed; create it without lists, or subscribe it "
                       "with reconsent: true and the consent it gave", "suppressed")
    if suppressed and body.get("list_ids"):
        # set_membership's own check, before anything is stored: after the
        # insert, a 400 here left the contact behind and the retry got 409
        _refuse_reconsent_without_wording(body.get("consent") or {})
    doc = contact_document(account_id, addr, name=body.get("name"), fields=values, at=at,
                           origin={"via": "api"}, suppressed=suppressed)
    try:
        ports.store.insert_contact(doc)
    except Conflict as exc:
        raise clash(exc) from None
    _refuse_erased_meanwhile(ports, account_id, doc)
    events.contact_created(ports.producer, doc, via="api")
    if body.get("list_ids"):
        for list_id in body["list_ids"]:
            doc = set_membership(ports, account_id, doc["_id"], list_id,
                                 {"status": body.get("list_status", "subscribed"),
                                  "consent": body.get("consent") or {},
                                  "reconsent": body.get("reconsent", False)},
                                 actor, flush=False)
    ports.producer.flush()
    return doc


def update_contact(ports: Ports, account_id: str, contact_id: str, body: dict) -> dict:
    current = get_contact(ports, account_id, contact_id)
    changes: dict[str, Any] = {}
    entries: list[dict] = []
    if "email" in body:
        addr = parse_address(ports, body["email"])
        if addr.email != current["email"]:
            entries = ports.store.suppression_entries(account_id, [addr.hash])
            if addr.hash != current["email_hash"]:
                refuse_erased(account_id, entries)
                changes["former_addresses"] = domain.former_addresses(current)
            changes.update(email=addr.email, email_hash=addr.hash, suppressed=bool(entries))
    if "name" in body and body["name"] != current.get("name"):
        changes["name"] = body["name"]
    held = current.get("fields") or {}
    for key, value in checked_fields(ports, account_id, body.get("fields") or {}).items():
        if key not in held or held[key] != value:
            changes[f"fields.{key}"] = value  # key checked against the declared fields
    # Only what differs: each change counts a revision, which sends the
    # contact's queued jobs back to be read again (fanout.job_again).
    if not changes:
        if current.get("revision"):
            # Perhaps the retry of a change stored before its announcement
            # failed: say the revision again (the sender keeps the highest).
            events.contact_updated(ports.producer, current,
                                   sorted(body.keys() & set(CONTACT_DATA)),
                                   current["revision"])
            ports.producer.flush()
        return current
    changes["updated_at"] = ports.clock()
    changes.update(domain.changed_search_keys(changes))
    try:
        doc = ports.store.update_contact(account_id, contact_id,
                                         {"$set": changes, "$inc": {"revision": 1}})
    except Conflict as exc:  # the unique (account, email hash) index
        raise clash(exc) from None
    if doc is None:
        raise not_found("contact")
    names = sorted({k.split(".")[0] if k.startswith("fields.") else k for k in changes}
                   - {"updated_at", "email_hash", "suppressed", "former_addresses", "email_key",
                      "name_key"})
    events.contact_updated(ports.producer, doc, names, doc["revision"])
    _announce_suppression_change(ports, current, doc, entries)
    ports.producer.flush()
    return doc


def _announce_suppression_change(ports: Ports, before: dict, after: dict,
                                 entries: list[dict]) -> None:
    """A new address that is, or is not, suppressed where the old one was
    not, or was: the sender keeps the contact's flag from the events, and a
    contact suppressed under its old address stayed blocked there for good
    (the lift of the old address's entry names no contact any more)."""
    if bool(before.get("suppressed")) == bool(after.get("suppressed")):
        return
    if after.get("suppressed"):
        entries = sorted(entries, key=lambda e: e["account_id"] is not PLATFORM)  # platform first
        entry = entries[0]
        events.contact_suppressed(ports.producer, after["account_id"], after["_id"],
                                  entry["scope"], entry["reason"], after["email_hash"])
    else:
        events.contact_unsuppressed(ports.producer, after["account_id"], after["_id"],
                                    after["email_hash"])


def delete_contact(ports: Ports, contact: dict) -> None:
    """Delete a contact the caller found (get_contact). Announced first,
    deleted after: the other way round, a failed flush answered 500 and the
    client's retry found nothing to delete (404), so the sender and
    tracking never heard of it."""
    events.contact_erased(ports.producer, contact, request_id=None)
    ports.producer.flush()
    ports.store.remember_deleted(contact)
    ports.store.delete_contact(contact["account_id"], contact["_id"])


def set_membership(ports: Ports, account_id: str, contact_id: str, list_id: str, body: dict,
                   actor: str, flush: bool = True) -> dict:
    """Subscribe, mark pending or unsubscribe one contact on one list, and
    append the consent log. A suppressed address, or a contact that
    unsubscribed from this list, is not subscribed (or marked pending)
    again unless the call carries an explicit re-consent (which is logged);
    platform-wide suppression (complaints, erasures) is never lifted here."""
    contact = get_contact(ports, account_id, contact_id)
    get_list(ports, account_id, list_id)
    status = body["status"]
    consent = body.get("consent") or {}
    at = ports.clock()
    current = contact.get("lists", {}).get(list_id, {}).get("status")
    if current == status:
        if status == "unsubscribed":  # the call that set it may have failed to announce it,
            # and the sender must hear of every unsubscribe (a lost re-subscribe only
            # under-sends, and is not re-announced over a newer unsubscribe).
            _announce_membership(ports, contact, list_id, status,
                                 contact["lists"][list_id].get("via") or "api", flush)
        return contact
    action = "unsubscribe" if status == "unsubscribed" else "subscribe"
    lifting = False
    if status != "unsubscribed":
        entries = ports.store.suppression_entries(account_id, [contact["email_hash"]])
        if any(e["account_id"] is PLATFORM for e in entries):
            raise conflict("this address is suppressed platform-wide (complaint or erasure)",
                           "suppressed")
        refuse_erased(account_id, entries)
        if entries:
            if not body.get("reconsent"):
                raise conflict("this address is suppressed; subscribe it again only with "
                               "reconsent: true and the consent it gave", "suppressed")
            _refuse_reconsent_without_wording(consent)
            action, lifting = "reconsent", True
        elif current == "unsubscribed":
            # An unsubscribe from this list alone writes no suppression
            # entry: a plain PUT (or a double opt-in "confirmed" later)
            # subscribed the person again, logged as an ordinary subscribe.
            if not body.get("reconsent"):
                raise conflict("this contact unsubscribed from this list; subscribe it again "
                               "only with reconsent: true and the consent it gave",
                               "unsubscribed")
            _refuse_reconsent_without_wording(consent)
            action = "reconsent"
    via = consent.get("via") or "api"
    # The consent entry first: written after the change, a database error
    # between the two left a subscription (and a lifted suppression) with no
    # entry, and the client's retry, finding the status set, wrote none. A
    # change that then fails leaves an entry its retry repeats: the person
    # did consent then.
    append_consent(ports, account_id, [contact_id], list_id, action, via, consent, actor, at)
    if lifting:
        lift_suppression(ports, account_id, contact["email_hash"],
                         "re-consent", actor, contact_id=contact_id)
    entry = domain.membership(status, via, at)
    update = domain.membership_update(list_id, entry)
    update["$set"]["updated_at"] = at
    doc = ports.store.update_contact(account_id, contact_id, update)
    _announce_membership(ports, doc, list_id, status, via, flush)
    return doc


def _refuse_reconsent_without_wording(consent: dict) -> None:
    if not (consent.get("wording") or consent.get("policy_version")):
        raise invalid("consent", "a re-consent records the wording or policy version shown")


def _announce_membership(ports: Ports, contact: dict, list_id: str, status: str, via: str,
                         flush: bool) -> None:
    if status == "subscribed":
        events.contact_subscribed(ports.producer, contact, list_id, via)
    elif status == "unsubscribed":
        events.contact_unsubscribed(ports.producer, contact, list_id, via)
    if flush:
        ports.producer.flush()


def append_consent(ports: Ports, account_id: str, contact_ids: list[str], list_id: str | None,
                   action: str, via: str, consent: dict, actor: str, at: datetime,
                   **extra) -> None:
    ports.store.append_consent({
        "_id": domain.ordered_id(), "account_id": account_id, "contact_ids": contact_ids,
        "list_id": list_id, "action": action, "via": via, "ip": consent.get("ip"),
        "source_url": consent.get("source_url"), "wording": consent.get("wording"),
        "policy_version": consent.get("policy_version"), "actor": actor, "at": at, **extra})


# -- suppression -------------------------------------------------------------
def suppress(ports: Ports, account_id: str | None, hash_: str, reason: str, actor: str,
             note: str = "", contact_id: str | None = None, flush: bool = True,
             origin_account_id: str | None = None) -> bool:
    """Put a hash on the account's (or with account_id None, the platform's)
    list; idempotent. Returns True when the entry is new. The event goes out
    every time: a first call may have stored the entry and failed before its
    event was out, and a retry (a redelivery, a client's) must not stay silent."""
    at = ports.clock()
    scope = "platform" if account_id is PLATFORM else "account"
    new = ports.store.add_suppression({"_id": domain.new_id(), "account_id": account_id,
                                       "scope": scope, "email_hash": hash_, "reason": reason,
                                       "note": note, "created_by": actor, "created_at": at,
                                       "origin_account_id": origin_account_id or account_id})
    ports.store.mark_suppressed(account_id, hash_, True)
    if new:
        ports.store.log_suppression({"_id": domain.new_id(), "account_id": account_id,
                                     "email_hash": hash_, "action": "add", "reason": reason,
                                     "note": note, "actor": actor, "at": at})
    events.contact_suppressed(ports.producer, account_id or "", contact_id, scope, reason, hash_)
    if flush:
        ports.producer.flush()
    return new


def lift_suppression(ports: Ports, account_id: str, hash_: str, reason: str, actor: str,
                     contact_id: str | None = None) -> dict | None:
    """Take the account's entry off the list. The entry is marked first and
    deleted last, and goes on suppressing until then: a call that fails on
    the way (the broker away) leaves it for the call's retry to finish, and
    the sender must hear of every lift (contact.unsuppressed), or it would
    go on skipping the address whatever the contact consented to since."""
    entry = ports.store.begin_lift(account_id, hash_, {
        "id": domain.new_id(), "reason": reason, "actor": actor, "at": ports.clock()})
    if entry is None:
        return None
    lift = entry["lifting"]
    if contact_id is None:
        contact = ports.store.contact_by_hash(account_id, hash_)
        contact_id = contact["_id"] if contact else None
    others = [e for e in ports.store.suppression_entries(account_id, [hash_])
              if e["_id"] != entry["_id"]]
    if not others:
        events.contact_unsuppressed(ports.producer, account_id, contact_id, hash_)
        ports.producer.flush()
        ports.store.mark_suppressed(account_id, hash_, False)
    ports.store.log_suppression({"_id": lift["id"], "account_id": account_id,
                                 "email_hash": hash_, "action": "remove",
                                 "reason": lift["reason"], "actor": lift["actor"],
                                 "contact_id": contact_id, "at": lift["at"]})
    ports.store.end_lift(entry)
    return entry


def add_suppression(ports: Ports, account_id: str, body: dict, actor: str) -> dict:
    addr = parse_address(ports, body["email"])
    contact = ports.store.contact_by_hash(account_id, addr.hash)
    suppress(ports, account_id, addr.hash, body.get("reason", "manual"), actor,
             body.get("note") or "", contact_id=contact["_id"] if contact else None)
    return check_suppression(ports, account_id, {"email": body["email"]})


def check_suppression(ports: Ports, account_id: str, body: dict) -> dict:
    addr = parse_address(ports, body["email"])
    entries = ports.store.suppression_entries(account_id, [addr.hash])
    entries.sort(key=lambda e: e["account_id"] is not PLATFORM)  # platform first
    entry = entries[0] if entries else None
    return {"email_hash": addr.hash, "suppressed": entry is not None,
            "scope": entry["scope"] if entry else None,
            "reason": reason_told_to(entry, account_id) if entry else None,
            "id": entry["_id"] if entry and entry["account_id"] == account_id else None}


def reason_told_to(entry: dict, account_id: str) -> str | None:
    """Why an address is suppressed, as far as the account may know: a
    platform-wide entry's reason (a complaint, an erasure) would tell every
    account what the person did about another's mail. An account that
    erased the address hears "erasure", whatever the entry began as (a
    complaint to another account, before)."""
    if account_id in (entry["account_id"], entry.get("origin_account_id")):
        return entry["reason"]
    if account_id in entry.get("erased_in", ()):
        return "erasure"
    return None


def remove_suppression(ports: Ports, account_id: str, suppression_id: str, body: dict,
                       actor: str) -> None:
    entry = ports.store.suppressions.find_one({"_id": suppression_id, "account_id": account_id}) \
        if domain.is_id(suppression_id) else None
    if entry is None:
        raise not_found("suppression")
    if erased_by(entry, account_id):
        raise conflict("this address was erased at its owner's request; its suppression "
                       "cannot be lifted", "erased")
    lift_suppression(ports, account_id, entry["email_hash"], body["reason"], actor)
    ports.producer.flush()


# -- segments ----------------------------------------------------------------
def compiled(ports: Ports, account_id: str, definition: Any, audience: bool = False) -> dict:
    """The definition's filter: who matches it, or with `audience` whom a
    campaign to it may reach (segments.compile_condition)."""
    try:
        return ports.store.compile_definition(account_id, definition, now=ports.clock(),
                                              salt=ports.salt, audience=audience)
    except SegmentError as exc:
        raise ApiError(400, "validation_error", f"invalid input: {exc.path}",
                       {exc.path: [exc.message]}) from None


def create_segment(ports: Ports, account_id: str, body: dict) -> dict:
    compiled(ports, account_id, body["definition"])
    at = ports.clock()
    return ports.store.insert_segment({"_id": domain.new_id(), "account_id": account_id,
                                       "name": body["name"], "definition": body["definition"],
                                       "created_at": at, "updated_at": at})


def get_segment(ports: Ports, account_id: str, segment_id: str) -> dict:
    doc = ports.store.get_segment(account_id, segment_id) if domain.is_id(segment_id) else None
    if doc is None:
        raise not_found("segment")
    return doc


def update_segment(ports: Ports, account_id: str, segment_id: str, body: dict) -> dict:
    get_segment(ports, account_id, segment_id)
    if "definition" in body:
        compiled(ports, account_id, body["definition"])
    return ports.store.update_segment(account_id, segment_id, {**body, "updated_at": ports.clock()})


def delete_segment(ports: Ports, account_id: str, segment_id: str) -> None:
    if not domain.is_id(segment_id) or not ports.store.delete_segment(account_id, segment_id):
        raise not_found("segment")


def segment_filter(ports: Ports, account_id: str, segment_id: str) -> dict:
    """A stored segment's query (who matches it)."""
    return _stored_filter(ports, account_id, get_segment(ports, account_id, segment_id)["definition"])


def _stored_filter(ports: Ports, account_id: str, definition: Any, audience: bool = False) -> dict:
    """A stored definition's query. One that no longer compiles (a list or a
    field it names was deleted since) is a 409: the request was fine, the
    segment is what must change (a 400 on a GET named no input of it)."""
    try:
        return compiled(ports, account_id, definition, audience)
    except ApiError as exc:
        why = "; ".join(f"{path}: {', '.join(messages)}" for path, messages in exc.details.items())
        raise ApiError(409, "segment_stale", f"the segment no longer compiles ({why}); edit it",
                       exc.details) from None


def preview_segment(ports: Ports, account_id: str, segment_id: str, sample: int) -> dict:
    """The count and the first `sample` contacts; `sample=0` is the count
    alone (a cursor's limit of 0 is no limit: every contact, unaudited)."""
    definition = get_segment(ports, account_id, segment_id)["definition"]
    query = _stored_filter(ports, account_id, definition)
    first = list(ports.store.contacts.find(query).sort("_id", 1).limit(sample)) if sample else []
    # What a campaign to the segment would reach: the count alone also took
    # in the suppressed, bounced, complained and those subscribed nowhere,
    # and members of a list it names who are not subscribed to it.
    mailable = ports.store.audience_filter(
        account_id, [], _stored_filter(ports, account_id, definition, audience=True))
    return {"count": ports.store.count_contacts(account_id, query),
            "mailable": ports.store.count_contacts(account_id, mailable), "sample": first}


# -- search ------------------------------------------------------------------
def search_query(ports: Ports, account_id: str, args: dict) -> dict:
    """A MongoDB query built only from validated arguments: user text goes in
    as plain values or, folded, as the bounds of a range (domain.prefix_range)."""
    query: dict[str, Any] = {}
    if args.get("email_prefix"):
        # Either case and any accent, as with names: a local part keeps the
        # case it came with ("Ann.Lee@"), and "ann" should find it.
        prefix = args["email_prefix"].strip()
        try:  # a whole address is stored normalised: user@xn--bcher-kva.de as user@bücher.de
            prefix = normalise_email(prefix)
        except InvalidEmail:
            pass  # a prefix, as typed
        _add_prefix(query, "email_key", prefix)
    if args.get("name"):
        _add_prefix(query, "name_key", args["name"])
    if args.get("status"):
        query["status"] = args["status"]
    if args.get("list_status") and not args.get("list_id"):
        raise invalid("list_status", "give list_id with list_status")
    if args.get("list_id"):
        list_id = args["list_id"]
        if not domain.is_id(list_id) or ports.store.get_list(account_id, list_id) is None:
            # 404 as for another account's id anywhere; details name the filter.
            raise ApiError(404, "not_found", "list not found",
                           {"list_id": ["no list with this id in the account"]})
        query["list_ids"] = list_id     # also with list_status: the (account, list_ids, _id) index
        if args.get("list_status"):
            query[f"lists.{list_id}.status"] = args["list_status"]  # list_id: 32 hex digits
    if ("field" in args) != ("value" in args):
        raise invalid("field" if "value" in args else "value", "give field and value together")
    if args.get("field"):
        definition = ports.store.field_definitions(account_id).get(args["field"])
        if definition is None:
            raise invalid("field", "not a custom field of this account")
        try:
            query[f"fields.{args['field']}"] = domain.coerce_field(definition, args["value"],
                                                                   from_text=True)
        except domain.InvalidValue as exc:
            raise invalid("value", str(exc)) from None
    return query


def _add_prefix(query: dict, key_field: str, typed: str) -> None:
    """Contacts whose folded `key_field` starts with the folded text (a
    prefix of nothing but spaces or accents matches every contact)."""
    bounds = domain.prefix_range(domain.search_key(typed))
    if bounds:
        query[key_field] = bounds


def search_contacts(ports: Ports, account_id: str, args: dict, after: str | None) -> list[dict]:
    return ports.store.search_contacts(account_id, search_query(ports, account_id, args), after,
                                       args["limit"])


def usage(ports: Ports, account_id: str) -> dict:
    return ports.store.usage(account_id)
