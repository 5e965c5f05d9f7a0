"""Audience fan-out: campaign.launched -> one send.jobs message per recipient.

The audience (lists and/or a segment, minus suppressed, unsubscribed,
bounced, complained and erased contacts, each address once) comes from the
contacts store's `stream_audience`, in batches, in the database's own order
(a sort makes FerretDB read the whole collection before the first contact
comes back; see the store). After each batch is produced AND flushed, its
contact ids are recorded (fanout_store.py): a restart, or a new query
after a lost cursor, skips every contact recorded, so nobody is produced
twice. A crash between a flush and its record re-produces at most that
batch, with the same job ids (shared.jobs), which the sender claims once.
When the stream ends, the fan-out is marked done, its batch records go,
and the audience size goes out as audience.ready on contacts.events.

Before each batch the fan-out reads the marks the worker's watcher sets
(`watch_handlers`: a consumer group of its own on campaigns.events, because
the fan-out holds the main loop for as long as it runs):
- cancelled: it stops for good; audience.ready counts the recipients
  produced (`cut_short`), and the senders skip those. Cancelling a
  million-recipient campaign no longer leaves most of a million jobs to be
  produced, claimed and skipped.
- paused: it stops without announcing anything, so the senders do not
  park the rest of the audience. The main loop's campaign.resumed goes on
  from the recorded batches; a campaign.cancelled instead (the campaign
  paused past its limit, or cancelled) ends it as cut short.
- the process stopping (`should_stop`): it raises Interrupted; the launch
  stays uncommitted and the partition's next reader resumes it.

A resume holds the recorded ids in memory (about 100 bytes each: 100 MB for
a million); a fan-out that runs through holds none.

One campaign's events all land on one partition (keyed by campaign id), so
one consumer at a time fans a campaign out, and the main loop sees its
launch, pauses, resumes and cancel in order.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

from pymongo.database import Database
from pymongo.errors import CursorNotFound

from services.contacts.fanout_store import INDEXES, MARK_KINDS, FanoutStore
from shared import topics
from shared.events import Event, new_event
from shared.jobs import job_id_for
from shared.kafka.consumer import Interrupted
from shared.kafka.producer import EventProducer

log = logging.getLogger(__name__)
SOURCE = "contacts"
BATCH_SIZE = 1000
WATCH_GROUP = "contacts-fanout-watch"
DONE, CANCELLED, PAUSED = "done", "cancelled", "paused"   # how a run of the fan-out ended

# stream(account_id, list_ids, segment_id, batch_size) -> batches of contacts
AudienceStream = Callable[..., Iterable[list[dict]]]
NeverStop = lambda: False  # noqa: E731


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


class Fanout:
    """The fan-out's handlers, over one store, stream and producer."""

    def __init__(self, store: FanoutStore, stream: AudienceStream, producer: EventProducer,
                 batch_size: int = BATCH_SIZE, should_stop: Callable[[], bool] = NeverStop):
        self.store = store
        self.stream = stream
        self.producer = producer
        self.batch_size = batch_size
        self.should_stop = should_stop

    def launched(self, event: Event) -> int | None:
        """campaign.launched; returns the audience size, or None when a pause
        stopped it. Idempotent: a redelivered launch goes on from the
        recorded batches, or only re-announces the size when done."""
        audience = event.data.get("audience") or {}
        state, new = self.store.start(event.data["campaign_id"], event.account_id, audience)
        if state.get("done"):
            return self._announce(state, int(state["produced"]), bool(state.get("cut_short")))
        return self._run(state, resuming=not new)

    def resumed(self, event: Event) -> int | None:
        """campaign.resumed: go on with a fan-out a pause stopped."""
        # This loop may be ahead of the watcher: the resume is recorded here too.
        self.store.mark(event)
        campaign_id = event.data["campaign_id"]
        state = self.store.unfinished(campaign_id)
        if state is None:
            return None
        if state.get("paused_after") is not None:
            self.store.paused_after(campaign_id, None)
        return self._run(state, resuming=True)

    def cancelled(self, event: Event) -> int | None:
        """campaign.cancelled: a fan-out a pause stopped ends here, cut short."""
        state = self.store.unfinished(event.data["campaign_id"])
        if state is None:
            return None
        produced = len(self.store.produced_ids(state["_id"]))
        self.store.finish(state["_id"], produced, cut_short=True)
        log.info("paused fan-out ended by a cancel",
                 extra={"campaign_id": state["_id"], "audience_size": produced})
        return self._announce(state, produced, True)

    def _run(self, state: dict, resuming: bool) -> int | None:
        campaign_id = state["_id"]
        produced, ended = self._produce(state, resuming)
        if ended == PAUSED:
            self.store.paused_after(campaign_id, produced)
            log.info("fan-out stopped by a pause", extra={"campaign_id": campaign_id,
                                                          "produced": produced})
            return None
        self.store.finish(campaign_id, produced, cut_short=ended == CANCELLED)
        log.info("fan-out cut short by a cancel" if ended == CANCELLED else "fan-out done",
                 extra={"campaign_id": campaign_id, "audience_size": produced})
        return self._announce(state, produced, ended == CANCELLED)

    def _announce(self, state: dict, produced: int, cut_short: bool) -> int:
        data: dict[str, Any] = {"campaign_id": state["_id"], "audience_size": produced}
        if cut_short:
            data["cut_short"] = True
        self.producer.publish(topics.CONTACTS_EVENTS, new_event(
            "audience.ready", source=SOURCE, subject=state["_id"],
            account_id=state["account_id"], data=data), key=state["_id"])
        self.producer.flush()
        return produced

    def _produce(self, state: dict, resuming: bool) -> tuple[int, str]:
        """One send.jobs message per recipient not recorded as produced yet,
        until the stream ends or a mark stops it; returns how many are
        recorded in all, and how it ended (DONE, CANCELLED, PAUSED)."""
        campaign_id, account_id = state["_id"], state["account_id"]
        audience = state.get("audience") or {}
        list_ids = list(audience.get("list_ids") or [])
        segment_id = audience.get("segment_id")
        single_list = list_ids[0] if len(list_ids) == 1 and not segment_id else None
        while True:
            skip = self.store.produced_ids(campaign_id) if resuming else set()
            if skip:
                log.info("fan-out resumes", extra={"campaign_id": campaign_id,
                                                   "produced": len(skip)})
            produced = len(skip)
            try:
                for batch in self.stream(account_id, list_ids, segment_id,
                                         batch_size=self.batch_size):
                    jobs = [send_job(campaign_id, contact, single_list) for contact in batch
                            if str(contact["_id"]) not in skip]
                    if not jobs:
                        continue
                    marks = self.store.marks(campaign_id)
                    if marks.cancel or marks.pause:
                        return produced, CANCELLED if marks.cancel else PAUSED
                    if self.should_stop():
                        raise Interrupted(f"{produced} recipients produced, the rest on resume")
                    self._publish(account_id, jobs)
                    self.store.record_batch(campaign_id, account_id,
                                            [job["contact_id"] for job in jobs])
                    produced += len(jobs)
                return produced, DONE
            except CursorNotFound:  # held too long (a slow broker): query again, skip what is out
                log.warning("audience cursor lost; the fan-out queries again",
                            extra={"campaign_id": campaign_id, "produced": produced})
                resuming = True

    def _publish(self, account_id: str, jobs: list[dict]) -> None:
        for job in jobs:
            self.producer.publish(topics.SEND_JOBS, new_event(
                "send.job", source=SOURCE, subject=job["job_id"], account_id=account_id,
                data=job), key=job["job_id"])
        self.producer.flush()  # the record may only follow what is durably out


def fan_out(event: Event, *, stream: AudienceStream, store: FanoutStore,
            producer: EventProducer, batch_size: int = BATCH_SIZE,
            should_stop: Callable[[], bool] = NeverStop) -> int | None:
    """Handle one campaign.launched (see Fanout.launched)."""
    return Fanout(store, stream, producer, batch_size, should_stop).launched(event)


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


def watch_handlers(db: Database) -> dict:
    """{event type: handler} for the worker's watcher (see the module
    docstring). Idempotent; a fan-out already done needs no mark."""
    store = FanoutStore(db)

    def mark(event: Event) -> None:
        fanout = store.get(event.data["campaign_id"])
        if fanout is None or not fanout.get("done"):
            store.mark(event)
    return {kind: mark for kind in MARK_KINDS}


def handlers(runtime, stream: AudienceStream | None = None, batch_size: int = BATCH_SIZE,
             should_stop: Callable[[], bool] = NeverStop) -> dict:
    """{event type: handler} for services/contacts/handlers.py."""
    from services.contacts.store import ContactsStore
    from shared import mongo
    mongo.ensure_indexes(runtime.db, INDEXES)
    fanout = Fanout(FanoutStore(runtime.db), stream or contacts_stream(ContactsStore(runtime.db)),
                    runtime.producer(), batch_size, should_stop)
    return {"campaign.launched": fanout.launched, "campaign.resumed": fanout.resumed,
            "campaign.cancelled": fanout.cancelled}
