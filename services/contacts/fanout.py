"""Audience fan-out: campaign.launched -> one send.jobs message per recipient.

The audience (lists and/or a segment, minus suppressed, unsubscribed,
bounced, complained and erased contacts, each address once) comes from the
contacts store's `stream_audience`, in batches, in the database's own order
(a sort makes FerretDB read the whole collection before the first contact
comes back; see the store). After each batch is produced AND flushed, its
contact ids are recorded in `fanout_batches`: a restart, or a new query
after a lost cursor, skips every contact recorded, so nobody is produced
twice. A crash between a flush and its record re-produces at most that
batch, with the same job ids (shared.jobs), which the sender claims once.
When the stream ends, the campaign's `fanouts` document is marked done, its
batch records go, and the audience size goes out as audience.ready on
contacts.events.

A campaign cancelled while it fans out stops before its next batch: the
worker's cancel watcher (`cancel_handlers`, a consumer group of its own,
because the fan-out holds the main loop) marks its `fanouts` document, and
the fan-out reads the mark before producing each batch. audience.ready then
counts the recipients produced (`cut_short`); those the senders skip. A
cancel of a million-recipient campaign no longer leaves most of a million
jobs to be produced, claimed and skipped.

A resume holds the recorded ids in memory (about 100 bytes each: 100 MB for
a million); a fan-out that runs through holds none.

One campaign's launched events all land on one partition (keyed by campaign
id), so one consumer at a time fans a campaign out.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Callable, Iterable

from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import CursorNotFound, DuplicateKeyError
from pymongo.operations import IndexModel

from shared import topics
from shared.events import Event, new_event
from shared.jobs import job_id_for
from shared.kafka.consumer import Interrupted
from shared.kafka.producer import EventProducer
from shared.mongo import delete_all

log = logging.getLogger(__name__)
SOURCE = "contacts"
BATCH_SIZE = 1000
INDEXES = {"fanouts": [IndexModel([("account_id", ASCENDING)])],
           "fanout_batches": [IndexModel([("campaign_id", ASCENDING)]),
                              IndexModel([("account_id", ASCENDING)])]}

# stream(account_id, list_ids, segment_id, batch_size) -> batches of contacts
AudienceStream = Callable[..., Iterable[list[dict]]]


class FanoutStore:
    """`fanouts`: one document per campaign (produced, done).
    `fanout_batches`: the contact ids of each batch produced, until done."""

    def __init__(self, db: Database):
        self.fanouts = db["fanouts"]
        self.batches = db["fanout_batches"]

    def start(self, campaign_id: str, account_id: str) -> tuple[dict, bool]:
        """(the campaign's fan-out document, whether this call created it)."""
        found = self.fanouts.find_one({"_id": campaign_id})
        if found is not None and "started_at" in found:
            return found, False
        if found is not None:  # only a cancel came first: nothing was produced yet
            self.fanouts.update_one({"_id": campaign_id}, {"$set": {
                "started_at": datetime.now(timezone.utc)}})
            return found, True
        doc = {"_id": campaign_id, "account_id": account_id, "produced": 0, "done": False,
               "started_at": datetime.now(timezone.utc)}
        try:
            self.fanouts.insert_one(doc)
        except DuplicateKeyError:  # the cancel watcher marked it meanwhile
            return self.start(campaign_id, account_id)
        return doc, True

    def request_cancel(self, campaign_id: str, account_id: str) -> None:
        """Mark the campaign's fan-out to stop; the mark may come before the
        fan-out starts (the watcher reads campaigns.events on its own)."""
        self.fanouts.update_one({"_id": campaign_id},
                                {"$set": {"cancel_requested": True},
                                 "$setOnInsert": {"account_id": account_id, "produced": 0,
                                                  "done": False}}, upsert=True)

    def cancel_requested(self, campaign_id: str) -> bool:
        found = self.fanouts.find_one({"_id": campaign_id}, {"cancel_requested": 1})
        return bool(found and found.get("cancel_requested"))

    def record_batch(self, campaign_id: str, account_id: str, contact_ids: list[str]) -> None:
        self.batches.insert_one({"campaign_id": campaign_id, "account_id": account_id,
                                 "contact_ids": contact_ids, "at": datetime.now(timezone.utc)})

    def produced_ids(self, campaign_id: str) -> set[str]:
        produced: set[str] = set()
        for doc in self.batches.find({"campaign_id": campaign_id}, {"contact_ids": 1}):
            produced.update(doc["contact_ids"])
        return produced

    def finish(self, campaign_id: str, produced: int, cut_short: bool = False) -> None:
        self.fanouts.update_one({"_id": campaign_id}, {"$set": {
            "done": True, "produced": produced, "cut_short": cut_short,
            "finished_at": datetime.now(timezone.utc)}})
        delete_all(self.batches, {"campaign_id": campaign_id})


def send_job(campaign_id: str, contact: dict, list_id: str | None) -> dict:
    contact_id = str(contact["_id"])
    recipient: dict[str, Any] = {"email": contact["email"]}
    if contact.get("name"):
        recipient["name"] = contact["name"]
    if contact.get("fields"):
        recipient["fields"] = contact["fields"]
    return {"job_id": job_id_for(campaign_id, contact_id), "campaign_id": campaign_id,
            "contact_id": contact_id, "list_id": list_id, "recipient": recipient,
            "attempt": 0}


def fan_out(event: Event, *, stream: AudienceStream, store: FanoutStore,
            producer: EventProducer, batch_size: int = BATCH_SIZE,
            should_stop: Callable[[], bool] = lambda: False) -> int:
    """Handle one campaign.launched; returns the audience size. Idempotent:
    a redelivered launch resumes, skipping the contacts recorded as
    produced, or only re-announces the size when the fan-out is done.
    When `should_stop` says the process is stopping, it raises Interrupted
    between batches: a big audience takes minutes, longer than a pod is
    given to stop, and the launch is redelivered to resume."""
    campaign_id, account_id = event.data["campaign_id"], event.account_id
    state, new = store.start(campaign_id, account_id)
    produced = int(state.get("produced") or 0)
    cut_short = bool(state.get("cut_short"))
    if not state.get("done"):
        produced, cut_short = _produce_audience(event, stream, store, producer, batch_size,
                                                resuming=not new, should_stop=should_stop)
        store.finish(campaign_id, produced, cut_short)
        log.info("fan-out cut short by a cancel" if cut_short else "fan-out done",
                 extra={"campaign_id": campaign_id, "audience_size": produced})
    data = {"campaign_id": campaign_id, "audience_size": produced}
    if cut_short:
        data["cut_short"] = True
    producer.publish(topics.CONTACTS_EVENTS, new_event(
        "audience.ready", source=SOURCE, subject=campaign_id, account_id=account_id,
        data=data), key=campaign_id)
    producer.flush()
    return produced


def _produce_audience(event: Event, stream: AudienceStream, store: FanoutStore,
                      producer: EventProducer, batch_size: int, resuming: bool,
                      should_stop: Callable[[], bool]) -> tuple[int, bool]:
    """One send.jobs message per recipient not recorded as produced yet,
    until the stream ends or the campaign is cancelled; returns how many
    are recorded in all, and whether a cancel cut the fan-out short."""
    campaign_id, account_id = event.data["campaign_id"], event.account_id
    audience = event.data.get("audience") or {}
    list_ids = list(audience.get("list_ids") or [])
    segment_id = audience.get("segment_id")
    single_list = list_ids[0] if len(list_ids) == 1 and not segment_id else None
    while True:
        skip = store.produced_ids(campaign_id) if resuming else set()
        if skip:
            log.info("fan-out resumes", extra={"campaign_id": campaign_id, "produced": len(skip)})
        produced = len(skip)
        try:
            for batch in stream(account_id, list_ids, segment_id, batch_size=batch_size):
                jobs = [send_job(campaign_id, contact, single_list) for contact in batch
                        if str(contact["_id"]) not in skip]
                if not jobs:
                    continue
                if store.cancel_requested(campaign_id):
                    return produced, True
                if should_stop():
                    raise Interrupted(f"{produced} recipients produced, the rest on resume")
                for job in jobs:
                    producer.publish(topics.SEND_JOBS, new_event(
                        "send.job", source=SOURCE, subject=job["job_id"],
                        account_id=account_id, data=job), key=job["job_id"])
                producer.flush()  # the record may only follow what is durably out
                store.record_batch(campaign_id, account_id, [job["contact_id"] for job in jobs])
                produced += len(jobs)
            return produced, False
        except CursorNotFound:  # held too long (a slow broker): query again, skip what is out
            log.warning("audience cursor lost; the fan-out queries again",
                        extra={"campaign_id": campaign_id, "produced": produced})
            resuming = True


def contacts_stream(contacts_store) -> AudienceStream:
    """The contacts store's audience as fan-out reads it. A segment that no
    longer exists or no longer compiles (a field or list deleted since) is
    left out, with a warning: what remains (the lists) is still sent, and an
    audience left empty completes the campaign with 0 recipients rather
    than leaving it sending forever."""
    def stream(account_id, list_ids, segment_id, batch_size=BATCH_SIZE):
        segment_filter = None
        if segment_id:
            try:
                segment_filter = contacts_store.compile_segment(account_id, segment_id)
            except Exception as exc:  # LookupError, SegmentError: the definition is gone
                log.warning("campaign segment unusable; left out of the audience",
                            extra={"segment_id": segment_id, "reason": str(exc)[:200]})
        if not list_ids and not segment_filter:
            return iter(())
        return contacts_store.stream_audience(account_id, list_ids, segment_filter,
                                              batch_size=batch_size)
    return stream


CANCEL_WATCH_GROUP = "contacts-fanout-cancels"


def cancel_handlers(db: Database) -> dict:
    """{event type: handler} for the worker's cancel watcher (see the module
    docstring). Idempotent: a redelivered cancel sets the same mark."""
    store = FanoutStore(db)
    return {"campaign.cancelled": lambda event: store.request_cancel(
        event.data["campaign_id"], event.account_id)}


def handlers(runtime, stream: AudienceStream | None = None, batch_size: int = BATCH_SIZE,
             should_stop: Callable[[], bool] = lambda: False) -> dict:
    """{event type: handler} for services/contacts/handlers.py."""
    from services.contacts.store import ContactsStore
    from shared import mongo
    mongo.ensure_indexes(runtime.db, INDEXES)
    stream = stream or contacts_stream(ContactsStore(runtime.db))
    store = FanoutStore(runtime.db)
    return {"campaign.launched": lambda event: fan_out(
        event, stream=stream, store=store, producer=runtime.producer(), batch_size=batch_size,
        should_stop=should_stop)}
