"""Tracking's answer to data-subject requests (privacy.requested).

Tracking never holds an address: it holds contact ids in its delivery
records (job -> contact, sent time, last click), in the id of its per-contact
markers ("<campaign>|open_unique|human|<contact id>"), and in soft-bounce
tallies.

- access: the messages it saw delivered, the opens, clicks, unsubscribes
  and complaints it counted, per campaign, and its soft-bounce tally.
- erasure: the contact id is replaced by a random pseudonym everywhere.
  Nothing is deleted, so campaign totals (and a recount from the markers)
  stay exactly what they were, and nothing leads back to the person. The
  contact is noted as erased first: its deliveries and bounces still to
  come are counted under a pseudonym, and its opens, clicks, unsubscribes
  and complaints from mail it still has are not recorded or published
  (shared/erased_contacts.py).
- rectification / restriction: tracking holds no attribute to correct and
  counts only what the contact does; answered done with a note.
- A request by address resolved to several ids (the address deleted more
  than once, perhaps held again) acts on each of them.
"""
from __future__ import annotations

import logging
import re

from pymongo.errors import DuplicateKeyError

from services.tracking.store import soft_bounce_key
from shared.erased_accounts import ErasedAccounts
from shared.erased_contacts import ErasedContacts
from shared.mongo import delete_all
from shared.privacy_answers import answer, contact_ids_or_wait, pseudonym

log = logging.getLogger(__name__)
SERVICE = "tracking"
FACT_KINDS = {"open_unique": "opened", "click_unique": "clicked", "link_unique": "clicked_link",
              "unsubscribe": "unsubscribed", "complaint": "complained"}


def handle_privacy_request(runtime, event) -> None:
    data = event.data
    subject = data["subject"]
    if subject["kind"] == "user":
        return  # account users are not tracked
    db = runtime.db
    if subject["kind"] == "account":
        if data["kind"] == "erasure":
            erase_account(db, event.account_id)
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
        export = collect_of(db, event.account_id, contact_ids)
        held = any(export.values())
        answer(runtime.producer(), event, SERVICE, "done" if held else "not_found", export=export)
    elif kind == "erasure":
        changed = sum(erase(db, event.account_id, contact_id) for contact_id in contact_ids)
        answer(runtime.producer(), event, SERVICE, "done" if changed else "not_found",
               detail=f"{changed} record(s) pseudonymised", contact_ids=contact_ids)
    else:
        answer(runtime.producer(), event, SERVICE, "done",
               detail="tracking holds ids and counts only: nothing to correct or restrict; "
                      "no mail goes to a restricted contact, so nothing new is tracked")


def _deliveries(db, account_id: str, contact_id: str) -> list[dict]:
    return list(db.deliveries.find({"account_id": account_id, "contact_id": contact_id}))


def _campaigns(db, account_id: str, deliveries: list[dict]) -> list[str]:
    """The account's campaigns, and those of the contact's deliveries. An
    open or click is counted from its token even before delivery.sent is
    read, so a marker's campaign may have no delivery of the contact yet."""
    known = {c["_id"] for c in db.campaigns.find({"account_id": account_id}, {"_id": 1})}
    return sorted(known | {d["campaign_id"] for d in deliveries})


def _markers(db, campaign_ids: list[str], contact_id: str) -> list[dict]:
    """The contact's markers ("<campaign>|<kind>|...|<contact id>"), one
    campaign at a time: `c` reads only that campaign's markers on FerretDB
    (a top-level string is pushed down), the anchored `_id` keeps MongoDB
    to its range of the `_id` index."""
    ending = "\\|.*\\|" + re.escape(contact_id) + "$"
    found = []
    for campaign_id in campaign_ids:
        found += db.markers.find({"c": campaign_id,
                                  "_id": {"$regex": "^" + re.escape(campaign_id) + ending}})
    return found


def collect_of(db, account_id: str, contact_ids: list[str]) -> dict:
    """collect for several ids of one person: their messages and engagement
    together, their soft-bounce tallies as one."""
    parts = [collect(db, account_id, contact_id) for contact_id in contact_ids]
    tallies = [p["soft_bounces"] for p in parts if p["soft_bounces"]]
    return {
        "messages_delivered": [m for p in parts for m in p["messages_delivered"]],
        "engagement": sorted((e for p in parts for e in p["engagement"]),
                             key=lambda e: (e["campaign_id"], e["event"])),
        "soft_bounces": _one_tally(tallies),
    }


def _one_tally(tallies: list[dict]) -> dict | None:
    if not tallies:
        return None
    return {"messages": sorted({job for t in tallies for job in t["messages"]}),
            "last_at": max((t["last_at"] for t in tallies if t["last_at"]), default=None)}


def collect(db, account_id: str, contact_id: str) -> dict:
    deliveries = _deliveries(db, account_id, contact_id)
    events = []
    for marker in _markers(db, _campaigns(db, account_id, deliveries), contact_id):
        parts = marker["_id"].split("|")
        what = FACT_KINDS.get(parts[1])
        if what is None:
            continue
        item = {"campaign_id": marker["c"], "event": what,
                "hour": marker["h"].isoformat() if marker.get("h") else None}
        if parts[1] == "link_unique":
            item["link_index"] = int(parts[2])
        events.append(item)
    return {
        "messages_delivered": [{"campaign_id": d["campaign_id"], "job_id": d["_id"],
                                "sent_at": d["sent_at"].isoformat() if d.get("sent_at") else None}
                               for d in deliveries],
        "engagement": sorted(events, key=lambda e: (e["campaign_id"], e["event"])),
        "soft_bounces": _soft_bounces(db, account_id, contact_id),
    }


def _soft_bounces(db, account_id: str, contact_id: str) -> dict | None:
    """The tally that turns repeated soft bounces into a hard one."""
    tally = db.soft_bounces.find_one({"_id": soft_bounce_key(account_id, contact_id)})
    if tally is None:
        return None
    return {"messages": sorted(tally.get("jobs") or []),
            "last_at": tally["at"].isoformat() if tally.get("at") else None}


def erase(db, account_id: str, contact_id: str) -> int:
    """Replace the contact id with a pseudonym. Deliveries go last: they are
    how the markers' campaigns are found (besides the account's), so a crash
    half-way is finished by the redelivered request. First the contact is
    noted as erased, so that its events still coming are not recorded under
    its id."""
    ErasedContacts(db).mark(account_id, [contact_id])
    alias = pseudonym()
    deliveries = _deliveries(db, account_id, contact_id)
    changed = 0
    for marker in _markers(db, _campaigns(db, account_id, deliveries), contact_id):
        renamed = {**marker, "_id": marker["_id"][:-len(contact_id)] + alias}
        try:
            db.markers.insert_one(renamed)
        except DuplicateKeyError:
            pass
        db.markers.delete_one({"_id": marker["_id"]})
        changed += 1
    bounce = db.soft_bounces.find_one({"_id": soft_bounce_key(account_id, contact_id)})
    if bounce is not None:
        db.soft_bounces.insert_one({**bounce, "_id": soft_bounce_key(account_id, alias)})
        db.soft_bounces.delete_one({"_id": bounce["_id"]})
        changed += 1
    changed += db.deliveries.update_many({"account_id": account_id, "contact_id": contact_id},
                                         {"$set": {"contact_id": alias}}).modified_count
    log.info("contact pseudonymised in tracking", extra={"records": changed})
    return changed


def erase_account(db, account_id: str) -> None:
    """A deleted account: its campaigns' counters, markers and records go,
    and its events still in flight are not counted (see
    shared/erased_accounts.py)."""
    ErasedAccounts(db).mark(account_id)
    campaigns = [c["_id"] for c in db.campaigns.find({"account_id": account_id}, {"_id": 1})]
    for collection in ("markers", "hourly", "counters"):
        delete_all(db[collection], {"c": {"$in": campaigns}})
    delete_all(db.deliveries, {"account_id": account_id})
    delete_all(db.soft_bounces,
               {"_id": {"$regex": "^" + re.escape(soft_bounce_key(account_id, ""))}})
    delete_all(db.campaigns, {"account_id": account_id})
    ErasedContacts(db).forget_account(account_id)
