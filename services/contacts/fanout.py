"""Audience fan-out: campaign.launched -> one send.jobs message per recipient.

The contacts worker's main loop only records the work: a launch inserts the
campaign's fan-out document (fanout_store.py), and a pause, resume or
cancel inserts a mark. Fan-out threads (`FanoutRunner`, a few per worker)
claim fan-outs with a lease, as imports are claimed, and produce them. So
the loop never waits for an audience of a million: unsubscribes,
complaints, privacy requests and other accounts' launches are applied at
once, and the loop stays well inside Kafka's poll interval. Any worker's
thread may take any fan-out; a dead worker's lease expires and another
thread goes on from the recorded batches.

The audience (lists and/or a segment, minus suppressed, unsubscribed,
bounced, complained and erased contacts, each address once) comes from the
contacts store's `stream_audience`, in batches, in the database's own order
(one unsorted query, which FerretDB answers in one read of the collection;
see the store). After each batch is produced AND flushed, its
contact ids are recorded: a resumed fan-out, or a new query after a lost
cursor, skips every contact recorded, so nobody is produced twice. A crash
between a flush and its record re-produces at most that batch, with the
same job ids (shared.jobs), which the sender claims once. When the stream
ends, the audience size goes out as audience.ready on contacts.events, and
only then is the fan-out marked done and its records deleted: a crash in
between announces the same size again, which the campaigns service takes
as often as it comes.

Before each batch the thread renews its lease and reads the marks:
- cancelled: it stops for good; audience.ready counts the recipients
  produced (`cut_short`), and the senders skip those.
- paused: it stops without announcing anything (the senders would only
  park the rest of the audience) and lets go. No thread claims it while
  its latest mark is a pause; after a resume one goes on from the recorded
  batches, and after a cancel one ends it as cut short.
- the process stopping: it lets go at once, for another worker to go on.
The renewal also stops a fan-out whose account was erased meanwhile (its
document is gone), and the thread deletes what it recorded after that.

A resumed fan-out holds the recorded ids in memory (about 100 bytes each:
100 MB for a million); a fan-out that runs through holds none.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from pymongo.errors import CursorNotFound

from services.contacts import domain, metrics
from services.contacts.fanout_store import INDEXES, MARK_KINDS, FanoutStore, LeaseLost, utcnow
from services.contacts.segments import SegmentError
from shared import topics
from shared.events import Event, new_event
from shared.ids import worker_owner
from shared.jobs import job_id_for
from shared.kafka.producer import EventProducer

log = logging.getLogger(__name__)
SOURCE = "contacts"
BATCH_SIZE = 1000
LEASE_SECONDS = 30
RETRY_SECONDS = 5
DONE, CANCELLED, PAUSED, STOPPED = "done", "cancelled", "paused", "stopped"  # how a run ended

# stream(account_id, list_ids, segment_id, batch_size) -> batches of contacts
AudienceStream = Callable[..., Iterable[list[dict]]]
# missing(account_id, list_ids, segment_id) -> what of them the account does not have
AudienceCheck = Callable[[str, list, str | None], dict]
NeverStop = lambda: False  # noqa: E731


# More lists than an event should carry: the job then has none, and only
# list_id is checked at send time (a contact on 1,000 lists is no reader).
MAX_VIA_LISTS = 1000


def send_job(campaign_id: str, contact: dict, list_id: str | None,
             job_id_key: str | None, audience_lists: list[str] | None = None,
             by_segment: bool = False) -> dict:
    contact_id = str(contact["_id"])
    recipient = _recipient(contact)
    job = {"job_id": job_id_for(campaign_id, contact_id, job_id_key), "campaign_id": campaign_id,
           "contact_id": contact_id, "list_id": list_id, "recipient": recipient, "attempt": 0}
    via = via_lists(contact, audience_lists or [], by_segment)
    if via:
        job["via_list_ids"] = via
    return _with_revision(job, contact)


def via_lists(contact: dict, audience_lists: list[str], by_segment: bool) -> list[str]:
    """The lists through which the contact is in the audience: those of the
    campaign's, and of its segment's "member of" conditions
    (segments.lists_reaching), it is subscribed to; else (a segment reached
    it otherwise) every list it is subscribed to. Unsubscribed from all of
    them during the send, it is not mailed (the sender's check): only a
    single-list campaign's jobs carried their list, and a contact who left
    the one list of a two-list campaign, or of a segment's, was mailed
    anyway."""
    subscribed = list(contact.get("subscribed_list_ids") or [])
    via = [list_id for list_id in subscribed if list_id in audience_lists]
    if not via and by_segment:
        via = subscribed
    return via if len(via) <= MAX_VIA_LISTS else []


def _recipient(contact: dict) -> dict[str, Any]:
    recipient: dict[str, Any] = {"email": contact["email"]}
    if contact.get("name"):
        recipient["name"] = contact["name"]
    if contact.get("fields"):
        # A date field is a datetime in the store: as it was, the job failed
        # to encode and the fan-out retried it for ever.
        recipient["fields"] = domain.plain_fields(contact["fields"])
    return recipient


def _with_revision(job: dict, contact: dict) -> dict:
    """Every change of the contact's address, name or fields counts one more
    revision (usecases.update_contact, imports): a sender that has heard of a
    later revision than its job carries holds the job back (delivery.held)."""
    if contact.get("revision"):
        job["contact_revision"] = contact["revision"]
    return job


def job_again(held: dict, contact: dict | None) -> dict:
    """The answer to delivery.held: the same job (id, campaign, list,
    attempt) with the contact as it is now; `withdrawn`, without a
    recipient, when the contact is gone (erased or deleted meanwhile). It
    echoes the hold's token: the sender takes one answer per hold."""
    job = {key: held[key] for key in ("job_id", "campaign_id", "contact_id", "attempt")}
    job.update(list_id=held.get("list_id"), answers_held=held.get("hold") or True)
    if held.get("via_list_ids"):
        job["via_list_ids"] = held["via_list_ids"]
    if contact is None:
        return {**job, "withdrawn": True}
    return _with_revision({**job, "recipient": _recipient(contact)}, contact)


def publish_job(producer: EventProducer, account_id: str, job: dict) -> None:
    producer.publish(topics.SEND_JOBS, new_event(
        "send.job", source=SOURCE, subject=job["job_id"], account_id=account_id, data=job),
        key=job["job_id"])


def owner_name(thread: int) -> str:
    return worker_owner(f"-fanout-{thread}")


class FanoutRequests:
    """The main loop's handlers: record the work, wake the fan-out threads."""

    def __init__(self, store: FanoutStore, wake: Callable[[], None] = lambda: None):
        self.store = store
        self.wake = wake

    def launched(self, event: Event) -> None:
        """campaign.launched; a redelivery changes nothing."""
        self.store.start(event.data["campaign_id"], event.account_id,
                         event.data.get("audience") or {})
        self.wake()

    def marked(self, event: Event) -> None:
        """campaign.cancelled, paused or resumed: a mark for a fan-out that
        is not done. One that has not started is marked too: the event comes
        only for a launched campaign, and its campaign.launched, published
        again by the campaigns sweep after a failed flush, may come after it
        (a cancel dropped here let the whole audience be fanned out)."""
        found = self.store.get(event.data["campaign_id"])
        if found is not None and found.get("done"):
            return
        self.store.mark(event)
        if found is None:
            return
        self.store.adopt(found)   # a fan-out an older version paused
        if event.type != "campaign.paused":
            self.wake()


class FanoutRunner:
    """One fan-out thread's work: claim a fan-out, produce it, let go."""

    def __init__(self, store: FanoutStore, stream: AudienceStream, producer: EventProducer,
                 owner: str, batch_size: int = BATCH_SIZE,
                 should_stop: Callable[[], bool] = NeverStop,
                 lease_seconds: float = LEASE_SECONDS, retry_seconds: float = RETRY_SECONDS,
                 clock: Callable[[], datetime] = utcnow, missing: AudienceCheck | None = None,
                 segment_lists: Callable[[str, str], list[str]] = lambda account, segment: []):
        self.store = store
        self.stream = stream
        self.missing = missing
        self.segment_lists = segment_lists  # (account id, segment id) -> the lists it reaches by
        self.producer = producer
        self.owner = owner
        self.batch_size = batch_size
        self.should_stop = should_stop
        self.lease_seconds = lease_seconds
        self.retry_seconds = retry_seconds
        self.clock = clock

    def run_pending(self) -> bool:
        """Claim one fan-out and run it until it ends, a pause or the stop;
        False when there was none to claim. An error (an outage) lets go of
        it for `retry_seconds` and is raised."""
        state = self.store.claim(self.owner, self.lease_seconds, self.clock())
        if state is None:
            return False
        campaign_id = state["_id"]
        log.info("fan-out claimed", extra={"campaign_id": campaign_id,
                                           "attempt": state["attempts"]})
        metrics.FANOUTS_RUNNING.inc()
        try:
            ended = self._run(state)
        except LeaseLost:
            ended = "lease_lost"
            if self.store.forget_if_erased(campaign_id):
                log.info("fan-out stopped: its account was erased",
                         extra={"campaign_id": campaign_id})
            else:
                log.warning("fan-out lease lost", extra={"campaign_id": campaign_id})
        except Exception:
            metrics.FANOUT_RUNS.labels("error").inc()
            try:
                self.store.release(campaign_id, self.owner,
                                   self.clock() + timedelta(seconds=self.retry_seconds))
            except Exception:  # the database is down too: the lease expires instead
                pass
            raise
        finally:
            metrics.FANOUTS_RUNNING.dec()
        metrics.FANOUT_RUNS.labels(ended).inc()
        return True

    def _run(self, state: dict) -> str:
        """Returns how the run ended (DONE, CANCELLED, PAUSED, STOPPED)."""
        campaign_id = state["_id"]
        missing = self._missing(state)   # before reading: what is deleted later was sent to
        produced, ended = self._produce(state)
        if ended == STOPPED:
            self.store.release(campaign_id, self.owner)
            log.info("fan-out left for another worker", extra={"campaign_id": campaign_id,
                                                               "produced": produced})
        elif ended == PAUSED:
            self.store.release(campaign_id, self.owner, paused_after=produced)
            log.info("fan-out stopped by a pause", extra={"campaign_id": campaign_id,
                                                          "produced": produced})
        else:
            self._announce(state, produced, ended == CANCELLED, missing)
            self.store.finish(campaign_id, self.owner, produced, cut_short=ended == CANCELLED)
            log.info("fan-out cut short by a cancel" if ended == CANCELLED else "fan-out done",
                     extra={"campaign_id": campaign_id, "audience_size": produced})
        return ended

    def _missing(self, state: dict) -> dict:
        if self.missing is None:
            return {}
        audience = state.get("audience") or {}
        return self.missing(state["account_id"], list(audience.get("list_ids") or []),
                            audience.get("segment_id"))

    def _announce(self, state: dict, produced: int, cut_short: bool, missing: dict) -> None:
        data: dict[str, Any] = {"campaign_id": state["_id"], "audience_size": produced}
        if cut_short:
            data["cut_short"] = True
        if missing:
            data["missing"] = missing   # else "sent, 0 recipients" said nothing of why
        self.producer.publish(topics.CONTACTS_EVENTS, new_event(
            "audience.ready", source=SOURCE, subject=state["_id"],
            account_id=state["account_id"], data=data), key=state["_id"])
        self.producer.flush()

    def _stop_reason(self, campaign_id: str) -> str | None:
        """Read before each batch: why the fan-out should stop, if it should."""
        marks = self.store.marks(campaign_id)
        if marks.cancel:
            return CANCELLED
        if marks.pause:
            return PAUSED
        return STOPPED if self.should_stop() else None

    def _renew(self, campaign_id: str) -> None:
        """Before each batch, also one a resumed fan-out skips: a holder that
        overran its lease finds out here, having produced at most a batch
        beside the next one."""
        self.store.renew(campaign_id, self.owner,
                         self.clock() + timedelta(seconds=self.lease_seconds))

    def _produce(self, state: dict) -> tuple[int, str]:
        """One send.jobs message per recipient not recorded as produced yet,
        until the stream ends or something stops it; returns how many are
        recorded in all, and how it ended."""
        campaign_id, account_id = state["_id"], state["account_id"]
        audience = state.get("audience") or {}
        list_ids = list(audience.get("list_ids") or [])
        segment_id = audience.get("segment_id")
        single_list = list_ids[0] if len(list_ids) == 1 and not segment_id else None
        reach_lists = list(list_ids)  # what the jobs' via_list_ids are cut from
        if segment_id:
            reach_lists += [list_id for list_id in self.segment_lists(account_id, segment_id)
                            if list_id not in list_ids]
        job_id_key = state.get("job_id_key")
        if state.get("paused_after") is not None:
            self.store.paused_after(campaign_id, self.owner, None)
        while True:
            skip, skip_addresses = self.store.produced(campaign_id)
            if skip:
                log.info("fan-out resumes", extra={"campaign_id": campaign_id,
                                                   "produced": len(skip)})
            produced = len(skip)
            stop = self._stop_reason(campaign_id)   # also when nothing is left to produce
            if stop:
                return produced, stop
            try:
                for batch in self.stream(account_id, list_ids, segment_id,
                                         batch_size=self.batch_size):
                    self._renew(campaign_id)
                    # An address once: its contact may have a new id since a
                    # job went to it (deleted and imported again while the
                    # fan-out was paused, or read twice by one cursor).
                    fresh = [c for c in batch if str(c["_id"]) not in skip
                             and not (c.get("email_hash") and c["email_hash"] in skip_addresses)]
                    fresh = list({c.get("email_hash") or c["_id"]: c for c in fresh}.values())
                    jobs = [send_job(campaign_id, contact, single_list, job_id_key,
                                     reach_lists, bool(segment_id)) for contact in fresh]
                    if not jobs:
                        continue
                    stop = self._stop_reason(campaign_id)
                    if stop:
                        return produced, stop
                    self._publish(account_id, jobs)
                    hashes = [c["email_hash"] for c in fresh if c.get("email_hash")]
                    self.store.record_batch(campaign_id, account_id,
                                            [job["contact_id"] for job in jobs], hashes)
                    skip.update(job["contact_id"] for job in jobs)
                    skip_addresses.update(hashes)
                    metrics.FANOUT_RECIPIENTS.inc(len(jobs))
                    produced += len(jobs)
                return produced, DONE
            except CursorNotFound:  # held too long (a slow broker): query again, skip what is out
                log.warning("audience cursor lost; the fan-out queries again",
                            extra={"campaign_id": campaign_id, "produced": produced})

    def _publish(self, account_id: str, jobs: list[dict]) -> None:
        for job in jobs:
            publish_job(self.producer, account_id, job)
        self.producer.flush()  # the record may only follow what is durably out


def run_fanouts(runner: FanoutRunner, wake: threading.Event, stop: threading.Event,
                poll_seconds: float) -> None:
    """A fan-out thread's loop: run what it can claim; otherwise wait for the
    main loop's wake-up, or the poll that finds a dead worker's fan-out."""
    while not stop.is_set():
        try:
            worked = runner.run_pending()
        except Exception:  # an outage: it lets go, and it is claimed again later
            log.exception("fan-out failed; it goes on from its recorded batches")
            worked = False
        if not worked:
            wake.wait(poll_seconds)
            wake.clear()


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
            except (LookupError, SegmentError) as exc:  # gone; an outage is raised, not sent around
                log.warning("campaign segment unusable; left out of the audience",
                            extra={"segment_id": segment_id, "reason": str(exc)[:200]})
        if not list_ids and not segment_filter:
            return iter(())
        return contacts_store.stream_audience(account_id, list_ids, segment_filter,
                                              batch_size=batch_size)
    return stream


def audience_check(contacts_store) -> AudienceCheck:
    """The lists the audience names that the account does not have, and its
    segment if it is gone or no longer compiles (contacts_stream leaves both
    out), as the fan-out begins."""
    def missing(account_id: str, list_ids: list, segment_id: str | None) -> dict:
        found = {doc["_id"] for doc in contacts_store.lists.find(
            {"_id": {"$in": list_ids}, "account_id": account_id}, {"_id": 1})}
        gone: dict[str, Any] = {}
        if set(list_ids) - found:
            gone["list_ids"] = sorted(set(list_ids) - found)
        if segment_id:
            try:
                contacts_store.compile_segment(account_id, segment_id)
            except (LookupError, SegmentError):  # an outage is raised: the fan-out goes again
                gone["segment_id"] = segment_id
        return gone
    return missing


def handlers(runtime, wake: Callable[[], None] = lambda: None) -> dict:
    """{event type: handler} for services/contacts/handlers.py."""
    from shared import mongo
    mongo.ensure_indexes(runtime.db, INDEXES)
    requests = FanoutRequests(FanoutStore(runtime.db), wake)
    return {"campaign.launched": requests.launched,
            **{kind: requests.marked for kind in MARK_KINDS}}
