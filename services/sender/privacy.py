"""The sender's answer to data-subject requests (privacy.requested).

The sender keeps no address for long: send jobs carry it through Kafka
(7-day retention), it exists in memory while a message is composed, and a
paused campaign's jobs hold it in `parked_jobs` until the campaign goes on.
Its database also holds, per job, the delivery record (contact id,
recipient domain, masked SMTP reply) and, per contact id, the state checked
at send time.

- access: the messages sent to the contact, with dates and outcomes; the
  jobs parked for it (with the recipient data they carry); and what the
  send-time check holds on it for the requesting account.
- erasure: the contact's send-time state becomes "erased" at once (jobs
  already queued for them are skipped, even before contacts' contact.erased
  arrives), and its delivery records keep their outcome under a random
  pseudonym, without recipient domain or SMTP reply.
- restriction: the contact is suppressed at send time (queued jobs skipped).
- rectification: nothing corrected here. Contacts applies it and announces
  the contact's new revision (contact.updated); a job queued or parked
  before it is given back at send time and contacts sends it again with
  the corrected data (engine.Engine._screen, docs/sender.md).
- A request by address resolved to several ids (the address deleted more
  than once, perhaps held again) acts on each of them.
"""
from __future__ import annotations

import logging
from functools import cached_property

from services.sender.store import ContactStateStore, HeldJobs, ParkedJobs, as_erased
from shared.erased_accounts import ErasedAccounts
from shared.mongo import delete_all
from shared.privacy_answers import answer, contact_ids_or_wait

log = logging.getLogger(__name__)
SERVICE = "sender"


class PrivacyRuntime:
    """The sender's state consumers get a store, not a Runtime: this gives
    the privacy handler the database and a producer of its own."""

    def __init__(self, db, erased_accounts: ErasedAccounts | None = None):
        self.db = db
        # The contact-state handlers' own: marked here, their cache knows at once.
        self.erased_accounts = erased_accounts or ErasedAccounts(db)

    @cached_property
    def _producer(self):
        from shared.config import load_common
        from shared.kafka.factory import event_producer
        return event_producer(load_common(), SERVICE + "-privacy")

    def producer(self):
        return self._producer


def handler_for(db, erased_accounts: ErasedAccounts | None = None):
    runtime = PrivacyRuntime(db, erased_accounts)
    return lambda event: handle_privacy_request(runtime, event)


def handle_privacy_request(runtime, event) -> None:
    data = event.data
    subject = data["subject"]
    if subject["kind"] == "user":
        return  # account users get no campaign mail
    db = runtime.db
    if subject["kind"] == "account":
        if data["kind"] == "erasure":
            erase_account(db, event.account_id, getattr(runtime, "erased_accounts", None))
        answer(runtime.producer(), event, SERVICE, "done")
        return
    contact_ids, ready = contact_ids_or_wait(event)
    if not ready:
        return
    if not contact_ids:
        answer(runtime.producer(), event, SERVICE, "not_found")
        return
    kind = data["kind"]
    if kind == "access":
        export = collect_all_of(db, event.account_id, contact_ids)
        answer(runtime.producer(), event, SERVICE, "done" if any(export.values()) else "not_found",
               export=export)
    elif kind == "erasure":
        changed = sum(erase(db, event.account_id, contact_id) for contact_id in contact_ids)
        answer(runtime.producer(), event, SERVICE, "done",
               detail=f"send-time state erased; {changed} delivery record(s) pseudonymised",
               contact_ids=contact_ids)
    elif kind == "restriction":
        for contact_id in contact_ids:
            ContactStateStore(db).restricted_by(event.account_id, contact_id)
        answer(runtime.producer(), event, SERVICE, "done",
               detail="suppressed at send time: queued jobs are skipped")
    else:
        answer(runtime.producer(), event, SERVICE, "done",
               detail="the sender holds no contact attributes; a job read before the "
                      "correction is asked of contacts again at send time")


def erase_account(db, account_id: str, erased: ErasedAccounts | None = None) -> None:
    """First the mark that drops the account's jobs still queued (send.jobs,
    send.retry): without their campaign they would hold their partitions.
    Then the jobs parked for its paused campaigns (they carry addresses),
    the claims of its campaigns, its delivery records, its contacts'
    send-time state and its suppressed address hashes."""
    (erased or ErasedAccounts(db)).mark(account_id)
    campaign_ids = [c["_id"] for c in db.campaigns.find({"account_id": account_id}, {"_id": 1})]
    ParkedJobs(db).forget_account(account_id)
    HeldJobs(db).forget_account(account_id)
    if campaign_ids:
        delete_all(db.claims, {"campaign_id": {"$in": campaign_ids}})
    delete_all(db.deliveries, {"account_id": account_id})
    delete_all(db.campaigns, {"account_id": account_id})
    delete_all(db.blocked_addresses, {"account_id": account_id})
    ContactStateStore(db).forget_account(account_id)


def _records(db, account_id: str, contact_id: str):
    return db.deliveries.find({"account_id": account_id, "event.data.contact_id": contact_id})


def collect_all(db, account_id: str, contact_id: str) -> dict:
    return {"messages": collect(db, account_id, contact_id),
            "queued_messages": ParkedJobs(db).held_for(account_id, contact_id),
            "send_time_state": ContactStateStore(db).held_for(account_id, contact_id)}


def collect_all_of(db, account_id: str, contact_ids: list[str]) -> dict:
    """collect_all for several ids of one person: their messages and parked
    jobs together; the send-time state of the first id, and of the others
    (when they hold any) by id."""
    first, *others = contact_ids
    export = collect_all(db, account_id, first)
    others_state = {}
    for contact_id in others:
        part = collect_all(db, account_id, contact_id)
        export["messages"] += part["messages"]
        export["queued_messages"] += part["queued_messages"]
        if part["send_time_state"]:
            others_state[contact_id] = part["send_time_state"]
    if others_state:
        export["send_time_state_of_other_ids"] = others_state
    return export


def collect(db, account_id: str, contact_id: str) -> list[dict]:
    out = []
    for record in _records(db, account_id, contact_id):
        event = record.get("event") or {}
        data = event.get("data") or {}
        out.append({"job_id": record["_id"], "campaign_id": record.get("campaign_id"),
                    "outcome": record.get("state"), "event": event.get("type"),
                    "at": record["updated_at"].isoformat() if record.get("updated_at") else None,
                    "attempt": record.get("attempt"), "message_id": data.get("message_id"),
                    "recipient_domain": data.get("recipient_domain"),  # before 2026-12-06
                    "mailbox_provider": data.get("mailbox_provider"),
                    "smtp_reply": record.get("smtp_reply")})
    return out


def erase(db, account_id: str, contact_id: str) -> int:
    # First the send-time check, so nothing more goes out while the rest runs.
    ContactStateStore(db).erased_by(account_id, contact_id)
    ParkedJobs(db).forget_recipient(account_id, contact_id)
    return db.deliveries.update_many(
        {"account_id": account_id, "event.data.contact_id": contact_id}, as_erased()
    ).modified_count
