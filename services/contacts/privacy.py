"""Contacts' answer to data-subject requests (privacy.requested).

Contacts is where a person's address, name, custom fields, list
memberships and consent log live, and the only service that can turn the
address hash of a request into a contact id (it answers with the id, and
the privacy service asks the id-only services again).

- access: the contact record, memberships (with list names), the consent
  log, the suppression entries of the address and the account's history
  of suppressing and lifting it.
- erasure: the salted hash goes on the platform-wide suppression list
  (reason erasure) first, so no import brings the address back; then the
  consent entries and the contact (its memberships and custom fields are
  inside it) are deleted; contact.erased goes out (the sender's send-time
  check) and a tombstone (null value, key = contact id) on the compacted
  contacts.events removes the contact's history there.
- rectification: the changes (name, email, fields) are applied with the
  contact API's own rules, and logged in the consent log.
- restriction: the contact's status becomes "restricted" (the audience
  takes only active contacts) and the consent log says so.
"""
from __future__ import annotations

import logging
from typing import Any

from marshmallow import ValidationError

from services.contacts import domain, events, imports, rejected_rows, schemas, segments, usecases
from services.contacts.store import PLATFORM, ContactsStore
from shared import topics
from shared.http.errors import ApiError
from shared.mongo import delete_all
from shared.privacy_answers import RECTIFIABLE, answer

log = logging.getLogger(__name__)
SERVICE = "contacts"
ACTOR = "privacy-request"


def _salt(config) -> str:
    if config.get("pii_salt") is not None:
        return config.pii_salt
    from services.contacts.settings import SETTINGS
    from shared.config import load
    return load([s for s in SETTINGS if s.name == "SANDESH_PII_SALT"]).pii_salt


def _ports(runtime) -> usecases.Ports:
    return usecases.Ports(ContactsStore(runtime.db), runtime.producer(), _salt(runtime.config))


def handle_privacy_request(runtime, event) -> None:
    data = event.data
    subject = data["subject"]
    if subject["kind"] == "user":
        return  # account users are the gateway's
    ports = _ports(runtime)
    if subject["kind"] == "account":
        if data["kind"] == "erasure":
            erase_account(ports, event.account_id)
            if runtime.config.get("import_dir"):
                imports.discard_account_files(runtime.config.import_dir, event.account_id)
        answer(ports.producer, event, SERVICE, "done")
        return
    contact = _find(ports.store, event.account_id, subject)
    kind = data["kind"]
    ids = [contact["_id"]] if contact else None
    # Contacts of the same address deleted through the API before are the
    # person's too, whether or not the address is held again now; only an
    # erasure and an access act on them.
    deleted = ports.store.deleted_contacts_of(
        event.account_id, {"email_hash": contact["email_hash"]} if contact else subject) \
        if kind in ("erasure", "access") else []
    if kind == "erasure":
        _erase(ports, event, contact, subject.get("email_hash"), deleted,
               runtime.config.get("import_dir"))
        return
    rejected = _rejected_rows(ports, runtime.config.get("import_dir"), event.account_id,
                              contact, subject) if kind == "access" else {}
    if contact is None and (deleted or rejected) and kind == "access":
        # Deleted through the API, its consent entries (IP, form URL) are kept
        # as the account's record: they are the person's data all the same,
        # as are the cells of an import's row refused before any contact
        # was made of it.
        export: dict[str, Any] = {}
        if deleted:
            export["deleted_contacts"] = [_collect_deleted(ports.store, d) for d in deleted]
        export.update(rejected)
        answer(ports.producer, event, SERVICE, "done", export=export,
               contact_ids=[d["_id"] for d in deleted])
        return
    if contact is None:
        answer(ports.producer, event, SERVICE, "not_found")
        return
    if kind == "access":
        export = collect(ports.store, contact)
        if deleted:
            export["deleted_contacts"] = [_collect_deleted(ports.store, d) for d in deleted]
        export.update(rejected)
        answer(ports.producer, event, SERVICE, "done", export=export,
               contact_ids=ids + [d["_id"] for d in deleted])
    elif kind == "rectification":
        try:
            fields = rectify(ports, event, contact, data.get("changes") or {})
        except ApiError as exc:  # the change itself is invalid: say so, do not retry
            answer(ports.producer, event, SERVICE, "failed", contact_ids=ids,
                   detail=f"{exc.message}: {exc.details}")
            return
        answer(ports.producer, event, SERVICE, "done", contact_ids=ids,
               detail="changed: " + ", ".join(fields))
    elif kind == "restriction":
        restrict(ports, event, contact)
        answer(ports.producer, event, SERVICE, "done", contact_ids=ids,
               detail="restricted: no longer in any audience")


def _rejected_rows(ports: usecases.Ports, import_dir: str | None, account_id: str,
                   contact: dict | None, subject: dict) -> dict:
    """The export's part for the rows of imports refused with the person's
    address in them (the addresses an erasure takes out of them: the
    contact's, its former ones no other contact holds, the one asked for)."""
    hashes = {h for h in ((contact or {}).get("email_hash"), subject.get("email_hash")) if h}
    if contact:
        hashes.update(_former_addresses_still_theirs(ports.store, contact))
    if not import_dir or not hashes:
        return {}
    rows, total = rejected_rows.rows_with(import_dir, account_id, ports.salt, hashes)
    if not total:
        return {}
    return {"rejected_import_rows": rows,
            **({"rejected_import_rows_total": total} if total > len(rows) else {})}


def _consent_log(store: ContactsStore, account_id: str, contact_id: str) -> list[dict]:
    return [_plain({k: v for k, v in entry.items() if k not in ("account_id", "contact_ids")})
            for entry in store.consent.find({"account_id": account_id,
                                             "contact_ids": contact_id}).sort("_id", 1)]


def _collect_deleted(store: ContactsStore, deleted: dict) -> dict:
    return {"id": deleted["_id"], "deleted_at": _plain(deleted.get("deleted_at")),
            "consent_log": _consent_log(store, deleted["account_id"], deleted["_id"])}


def _forget_records_of(store: ContactsStore, account_id: str, contact_id: str) -> None:
    """The contact's consent entries, and its id in the suppression log."""
    delete_all(store.consent, {"account_id": account_id, "contact_ids": [contact_id]})
    store.consent.update_many({"account_id": account_id, "contact_ids": contact_id},
                              {"$pull": {"contact_ids": contact_id}})
    store.suppression_log.update_many({"contact_id": contact_id}, {"$unset": {"contact_id": ""}})


def _find(store: ContactsStore, account_id: str, subject: dict) -> dict | None:
    if subject.get("contact_id"):
        return store.get_contact(account_id, subject["contact_id"])
    if subject.get("email_hash"):
        return store.contacts.find_one({"account_id": account_id,
                                        "email_hash": subject["email_hash"]})
    return None


def _suppression_told(entry: dict, account_id: str) -> dict:
    """A platform-wide entry says only that it exists, unless the account
    may know why (usecases.reason_told_to): its reason and date came from
    another account's complaint."""
    reason = usecases.reason_told_to(entry, account_id)
    return {"scope": entry.get("scope"), "reason": reason,
            "since": _plain(entry.get("created_at")) if reason else None}


def collect(store: ContactsStore, contact: dict) -> dict:
    account_id = contact["account_id"]
    names = {d["_id"]: d.get("name") for d in store.lists.find({"account_id": account_id},
                                                               {"name": 1})}
    memberships = [{"list_id": list_id, "list_name": names.get(list_id), **_plain(entry)}
                   for list_id, entry in (contact.get("lists") or {}).items()]
    consent = _consent_log(store, account_id, contact["_id"])
    suppressions = [_suppression_told(e, account_id)
                    for e in store.suppression_entries(account_id, [contact["email_hash"]])]
    # The account's own additions and removals of the address, with their
    # notes (free text, which may say anything about the person). Platform-
    # wide entries came from other accounts' complaints and erasures: the
    # `suppressions` above say only that one exists.
    history = [{"action": e.get("action"), "reason": e.get("reason"), "note": e.get("note"),
                "at": _plain(e.get("at"))}
               for e in store.suppression_log.find({"account_id": account_id,
                                                    "email_hash": contact["email_hash"]})
               .sort("at", 1)]
    record = {k: _plain(contact.get(k)) for k in
              ("email", "name", "fields", "status", "suppressed", "origin", "created_at",
               "updated_at")}
    return {"contact": {"id": contact["_id"], **record}, "memberships": memberships,
            "consent_log": consent, "suppressions": suppressions,
            "suppression_history": history}


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "_id"}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.isoformat() if hasattr(value, "isoformat") else value


def _erase(ports: usecases.Ports, event, contact: dict | None, email_hash: str | None,
           deleted: list[dict] = (), import_dir: str | None = None) -> None:
    """Each step is idempotent; a redelivered request finishes what a crash
    left undone. The contact goes last, after its events and this service's
    answer are out: it is how the steps find their data, and a redelivery
    that no longer found it answered "not_found" without the contact id, so
    the other services never replaced it with a pseudonym."""
    # The address the account held (its contact's, or the deleted one's),
    # else the one the request names. A request naming a contact and another
    # address does not make that address held.
    held = contact or (deleted[0] if deleted else None)
    held_hash = held["email_hash"] if held else None
    hash_ = held_hash or email_hash
    contact_id = contact["_id"] if contact else None
    # Suppressed platform-wide only if the account held the address: an
    # erasure of any address an account named silenced it for every other
    # account for good. One it never held is suppressed in it alone.
    if held_hash is None and hash_ and ports.store.erased_platform_wide_by(event.account_id, hash_):
        held_hash = hash_  # a redelivery of an erasure of a contact now gone
    formers = _former_addresses_still_theirs(ports.store, contact) if contact else []
    named = [email_hash] if email_hash and email_hash != hash_ else []
    hashes = list(dict.fromkeys(([hash_] if hash_ else []) + formers + named))
    for address_hash in hashes:
        platform = address_hash == held_hash
        usecases.suppress(ports, PLATFORM if platform else event.account_id, address_hash,
                          "erasure", ACTOR, note=f"privacy request {event.data['request_id']}",
                          contact_id=contact_id, flush=False, origin_account_id=event.account_id)
        if platform:
            ports.store.note_erasure(event.account_id, address_hash)
        else:  # an entry there was already (a manual one) is now an erasure's too
            ports.store.mark_erased_in_account(event.account_id, address_hash)
        # Notes, and the reasons given for lifting a suppression, are free text
        # the account's users wrote about the address: the person's data. The
        # entries stay (hash, action, reason code) as the account's record.
        for records in (ports.store.suppressions, ports.store.suppression_log):
            records.update_many({"account_id": event.account_id, "email_hash": address_hash,
                                 "note": {"$exists": True}}, {"$unset": {"note": ""}})
        ports.store.suppression_log.update_many(
            {"account_id": event.account_id, "email_hash": address_hash, "action": "remove"},
            {"$set": {"reason": "lifted"}})
        _scrub_segments(ports, event.account_id, address_hash)
    if hashes and import_dir:
        rejected_rows.scrub_account(ports.store, import_dir, event.account_id, ports.salt,
                                    set(hashes))
    if contact is None and hash_:
        # An import or an API call may have written the address between the
        # look-up and its suppression above; none can add it now (both look
        # again after their insert: imports._suppressed_meanwhile).
        late = ports.store.contacts.find_one({"account_id": event.account_id, "email_hash": hash_})
        if late is not None:
            return _erase(ports, event, late, email_hash, deleted, import_dir)
    if contact is None and deleted:
        # Deleted through the API before: its consent entries go, and the
        # other services hear its id, whose records they still keep.
        for gone in deleted:
            _forget_records_of(ports.store, gone["account_id"], gone["_id"])
        ids = [gone["_id"] for gone in deleted]
        answer(ports.producer, event, SERVICE, "done", contact_ids=ids)  # flushes
        ports.store.forget_deleted(ids)
        return
    if contact is None:
        answer(ports.producer, event, SERVICE, "not_found", detail=(
            "no such contact; the address is suppressed in this account anyway"
            if hash_ else None))
        return
    store, account_id = ports.store, contact["account_id"]
    gone_ids = [gone["_id"] for gone in deleted]
    for former_id in [contact_id, *gone_ids]:
        _forget_records_of(store, account_id, former_id)
    events.contact_erased(ports.producer, contact, request_id=event.data["request_id"])
    answer(ports.producer, event, SERVICE, "done", contact_ids=[contact_id, *gone_ids])  # flushes
    # The tombstone follows the erased event: compaction then drops both.
    ports.producer.sink.send(topics.CONTACTS_EVENTS, contact_id.encode(), None, [])
    ports.producer.flush()
    if gone_ids:
        store.forget_deleted(gone_ids)
    store.delete_contact(account_id, contact_id)
    log.info("contact erased", extra={"contact_id": contact_id})


def _former_addresses_still_theirs(store: ContactsStore, contact: dict) -> list[str]:
    """The hashes of the addresses the contact had before a correction:
    the person's too, so an old list re-imported must not bring them back.
    They are suppressed in the account (whose they were), not platform-wide,
    and not one another contact of the account holds now: a mailbox that
    changed hands (info@) belongs to someone else since."""
    formers = {f["hash"] for f in contact.get("former_addresses") or []}
    held_by_others = {h for h, other in store.contacts_by_hashes(
        contact["account_id"], sorted(formers), {"email_hash": 1}).items()
        if other["_id"] != contact["_id"]}
    return sorted(formers - held_by_others)


def _scrub_segments(ports: usecases.Ports, account_id: str, hash_: str) -> None:
    """A segment that names the person's address (email is x) kept it as
    long as the segment existed: it is taken out (segments.without_address)."""
    def is_their_address(text: str) -> bool:
        return domain.address_hash(text, ports.salt) == hash_
    for segment in ports.store.segments.find({"account_id": account_id}):
        scrubbed = segments.without_address(segment["definition"], is_their_address)
        if scrubbed != segment["definition"]:
            ports.store.update_segment(account_id, segment["_id"], {"definition": scrubbed})


def rectify(ports: usecases.Ports, event, contact: dict, changes: dict) -> list[str]:
    unknown = sorted(set(changes) - set(RECTIFIABLE))
    if unknown:
        raise ApiError(400, "validation_error", "cannot rectify these",
                       {k: ["not a contact attribute"] for k in unknown})
    # The API's rules for the same change: the privacy API takes any JSON
    # value, and a 10,000-character or numeric name stored here made every
    # send job of the contact fail its schema.
    try:
        changes = schemas.ContactUpdate().load(changes)
    except ValidationError as exc:
        raise ApiError(400, "validation_error", "invalid rectification", exc.messages) from None
    usecases.update_contact(ports, contact["account_id"], contact["_id"], changes)
    fields = sorted(changes)
    usecases.append_consent(ports, contact["account_id"], [contact["_id"]], None, "rectified",
                            "admin", {}, ACTOR, domain.now(),
                            request_id=event.data["request_id"], fields=fields)
    return fields


def restrict(ports: usecases.Ports, event, contact: dict) -> None:
    if contact.get("status") != "restricted":
        ports.store.update_contact(contact["account_id"], contact["_id"], {"$set": {
            "status": "restricted", "restricted_at": domain.now(),
            "status_before_restriction": contact.get("status")}})
        usecases.append_consent(ports, contact["account_id"], [contact["_id"]], None,
                                "restricted", "admin", {}, ACTOR, domain.now(),
                                request_id=event.data["request_id"])


def erase_account(ports: usecases.Ports, account_id: str) -> None:
    """A deleted account: every contact (with a tombstone each), list,
    field, segment, consent entry, suppression entry, import and campaign
    fan-out record of it.

    Every tombstone is out before any contact goes, so a crash in between
    leaves the contacts to find again; then they go in one delete. Deleting
    page by page cost FerretDB two reads of the whole collection per
    thousand contacts: minutes for an account of 20,000."""
    store = ports.store
    for ids in store.contact_ids(account_id):
        for contact_id in ids:
            ports.producer.sink.send(topics.CONTACTS_EVENTS, contact_id.encode(), None, [])
    ports.producer.flush()
    delete_all(store.contacts, {"account_id": account_id})
    for collection in ("lists", "fields", "segments", "consent", "suppressions",
                       "suppression_log", "imports", "fanouts", "fanout_batches",
                       "fanout_marks", "fanout_claims", "deleted_contacts"):
        delete_all(store.db[collection], {"account_id": account_id})
