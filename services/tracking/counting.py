"""Campaign statistics, counted incrementally from the event streams.

Every event becomes one or more markers (see store.py); the same event
delivered twice, or a bounce seen both as delivery.bounced and
tracking.bounced, finds its markers already there and counts once.
"""
from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

from services.tracking import domain
from services.tracking.store import TrackingStore
from shared.erased_accounts import ErasedAccounts
from shared.events import Event
from shared.mongo import as_utc
from shared.worker import every

log = logging.getLogger(__name__)


# A batch's worker is gone once its intent is this old: past Kafka's
# max.poll.interval (5 min), a worker still busy with it has lost its
# partitions, and its late writes meet the repair's under the same ids.
STALE_BATCH = timedelta(minutes=6)


def _stale(intent: dict, now: datetime) -> bool:
    at = intent.get("at")
    if at is None:
        return True  # written before intents had a time
    return now - as_utc(at) >= STALE_BATCH


def _token_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return domain.parse_time(text)
    except ValueError:
        return None


def start_repairs_in_background(counter: "StatsCounter", seconds: float = 60.0):
    """The sweep, every minute in a thread of the worker."""
    def repair_once():
        repaired = counter.repair_stale_batches()
        if repaired:
            log.info("stale counting batches repaired", extra={"batches": repaired})
    return every("tracking-batch-repair", lambda: seconds, repair_once, first_wait=seconds)


@dataclass(frozen=True)
class CountingRules:
    machine_hit_seconds: float = 10.0
    machine_burst_seconds: float = 1.0
    hourly_days: int = 3


@dataclass
class _Fact:
    """One thing to count once: its marker id and the counters it adds."""

    event: Event
    key: str                    # the marker id without the campaign ("sent|<job>")
    fields: list[str]
    machine: bool | None = None  # opens and clicks keep their first verdict
    then: Callable[[str], list["_Fact"]] | None = None  # facts that follow, given the class

    @property
    def campaign_id(self) -> str:
        return self.event.data["campaign_id"]

    @property
    def marker_id(self) -> str:
        return f"{self.campaign_id}|{self.key}"


class StatsCounter:
    """Counts a batch of events (a whole poll) in a few bulk writes. On
    FerretDB's SQLite backend an insert costs ~0.02-0.1 ms a document in a
    batch while an update or upsert reads and rewrites one document at a
    time (~0.65 ms each), so the path is insert-only except for the counters:

    1. campaigns' link tables (rare upserts) and deliveries (one unordered
       insert), so the hits of the batch see their delivery time;
    2. the batch's intent (one small document: its id and campaigns);
    3. each event's facts become markers tagged with the batch (one
       unordered insert): a marker that already exists was counted before,
       unless its batch's intent is still there;
    4. facts that depend on the class of an earlier one (an open's "unique
       human" follows the open's verdict, kept in its marker) in a second round;
    5. the new markers' counts, one document per campaign (and hour) named
       after the batch, by insert; then the intent is deleted;
    6. an intent left open (its worker died between 2 and 5) is repaired
       once it is STALE_BATCH old, here when its markers are met again or
       by the sweep (repair_stale_batches): the batch's counts are worked
       out from the markers it inserted and written under the same ids,
       so what it wrote before it died is not written twice.

    A crash at any point leaves an intent or the offsets uncommitted; the
    redelivered batch then counts nothing twice, and nobody else's counts
    are touched (a repair used to rebuild the whole campaign from its
    markers and delete every worker's counters: another worker counting
    the same campaign then had its counts doubled or lost).
    """

    MEMORY = 200_000  # jobs remembered for rules 5 and 6

    def __init__(self, store: TrackingStore, rules: CountingRules,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.store = store
        self.rules = rules
        self.clock = clock
        self._first_at: dict = {}
        self._sent_at: dict[str, datetime] = {}
        self._last_click: dict[str, tuple[int, float]] = {}

    # ------------------------------------------------- one event at a time
    def campaign_launched(self, event: Event) -> None:
        self.handle_batch([event])

    delivery_sent = delivery_failed = bounced = unsubscribed = complained = campaign_launched
    opened = clicked = campaign_launched

    # ------------------------------------------------------------ a batch
    def handle_batch(self, events: list[Event]) -> None:
        events = [e for e in events if not e.data.get("test")]
        self._open_batches: dict[str, bool] = {}
        self._save_campaigns([e for e in events if e.type == "campaign.launched"])
        self._save_deliveries([e for e in events if e.type == "delivery.sent"])
        hits = [e for e in events if e.type in ("tracking.opened", "tracking.clicked")]
        verdicts = self._classify_hits(hits)
        self.store.forget_soft_bounces({(e.account_id, e.data["contact_id"]) for e in hits
                                        if not verdicts.get(e.id, True)})
        facts = [fact for event in events for fact in self._facts(event, verdicts)]
        if not facts:
            return
        self._note_first_times(facts)
        batch_id = uuid.uuid4().hex
        self.store.begin_batch(batch_id, sorted({(f.campaign_id, f.event.account_id)
                                                 for f in facts}))
        new, unfinished = [], set()
        while facts:
            classes = self._insert_markers(batch_id, facts, new, unfinished)
            facts = [follow for fact in facts if fact.then
                     for follow in fact.then(classes[fact.marker_id])]
        self._increment(batch_id, new)
        self.store.end_batch(batch_id)
        self._repair(unfinished)

    def _repair(self, unfinished: set) -> None:
        for key in sorted(unfinished):
            if key[0] == "legacy":  # a marker of the one-event-at-a-time counter
                self.store.recount(key[1], key[2])
                continue
            intent = self.store.open_batch(key[1])
            if intent is not None and _stale(intent, self.clock()):
                self.repair_batch(intent)
            # A younger one may still be written by its worker: left to it,
            # or to the sweep once stale.

    def repair_batch(self, intent: dict) -> None:
        # Not for an account deleted since: its counters went with it.
        erased = ErasedAccounts(self.store.db).among(c["a"] for c in intent["campaigns"])
        accounts = {campaign["c"]: campaign["a"] for campaign in intent["campaigns"]
                    if campaign["a"] not in erased}
        totals, hourly = self.store.batch_counts(intent["_id"], accounts)
        totals = {c: counts for c, counts in totals.items() if c in accounts}
        hourly = {key: counts for key, counts in hourly.items() if key[0] in accounts}
        self.store.add_batch_counts(intent["_id"], totals, hourly)
        self.store.end_batch(intent["_id"])

    def repair_stale_batches(self) -> int:
        """The sweep: intents whose worker died, and whose events no batch
        has met again (their offsets were committed by then)."""
        intents = self.store.stale_batches(self.clock() - STALE_BATCH)
        for intent in intents:
            self.repair_batch(intent)
        return len(intents)

    def _facts(self, event: Event, verdicts: dict[str, bool]) -> list[_Fact]:
        data, kind = event.data, event.type
        if kind == "delivery.sent":
            return [_Fact(event, f"sent|{data['job_id']}", ["sent"])]
        if kind == "delivery.failed":
            return [_Fact(event, f"failed|{data['job_id']}", ["failed"])]
        if kind in ("delivery.bounced", "tracking.bounced"):
            # One bounce per message, whichever stream tells it first.
            if data.get("bounce_type") not in ("hard", "soft"):
                return []
            return [_Fact(event, f"bounce|{data['job_id']}", [f"bounced_{data['bounce_type']}"])]
        if kind == "tracking.unsubscribed":
            return [_Fact(event, f"unsubscribe|{data['contact_id']}", ["unsubscribes"])]
        if kind == "tracking.complained":
            return [_Fact(event, f"complaint|{data['contact_id']}", ["complaints"])]
        contact = data.get("contact_id")
        machine = verdicts.get(event.id, False)
        if kind == "tracking.opened":
            return [_Fact(event, f"open|{event.id}", [f"opens_total_{_cls(machine)}"], machine,
                          lambda cls: [_Fact(event, f"open_unique|{cls}|{contact}",
                                             [f"opens_unique_{cls}"])])]
        if kind == "tracking.clicked":
            index = int(data.get("link_index", 0))
            # On redelivery the first verdict stands (it is kept in the marker).
            return [_Fact(event, f"click|{event.id}",
                          [f"clicks_total_{_cls(machine)}", f"link_{index}_total_{_cls(machine)}"],
                          machine,
                          lambda cls: [
                              _Fact(event, f"click_unique|{cls}|{contact}",
                                    [f"clicks_unique_{cls}"]),
                              _Fact(event, f"link_unique|{index}|{cls}|{contact}",
                                    [f"link_{index}_unique_{cls}"]),
                              *self._click_opens(event, cls, contact)])]
        return []

    @staticmethod
    def _click_opens(event: Event, cls: str, contact: str) -> list[_Fact]:
        """A person's click is an open: their client may block the pixel
        (its stats read 4 clickers of 1 opener, click-to-open 4.0). The
        open's own marker, so the two count once together; an implied open
        counts in the total too, once, so that unique never exceeds total.
        A machine's click (a scanner) opens nothing."""
        if cls != "human":
            return []
        return [_Fact(event, f"open_unique|{cls}|{contact}",
                      [f"opens_unique_{cls}", f"opens_total_{cls}"])]

    def _save_campaigns(self, launched: list[Event]) -> None:
        self.store.save_campaigns([
            (e.data["campaign_id"], e.account_id,
             list((e.data.get("template") or {}).get("links") or []), domain.parse_time(e.time))
            for e in launched])

    def _save_deliveries(self, sent: list[Event]) -> None:
        rows = [(e.data["job_id"], e.account_id, e.data["campaign_id"], e.data["contact_id"],
                 domain.parse_time(e.time), e.data.get("contact_revision")) for e in sent]
        self.store.save_deliveries(rows)
        self._remember(self._sent_at, {job: at for job, _, _, _, at, _ in rows})

    def _remember(self, memory: dict, items: dict) -> None:
        if len(memory) + len(items) > self.MEMORY:
            memory.clear()
        memory.update(items)

    # ------------------------------------------------------------ rules
    def _classify_hits(self, hits: list[Event]) -> dict[str, bool]:
        """Rules 5 and 6 on top of what the web process saw (rules 1-4):
        {event id: machine}. Delivery times come from memory (this worker
        saved them) or the database; the last click of each message is kept
        in memory only (a burst spans a second: persisting it would cost an
        update per click), so a burst that straddles a restart is caught by
        the other rules only. Clicks of one message are taken in stream order."""
        if not hits:
            return {}
        missing = {e.data["job_id"] for e in hits} - self._sent_at.keys()
        found = self.store.deliveries(missing) if missing else {}
        self._remember(self._sent_at, {job: doc["sent_at"] for job, doc in found.items()
                                       if doc.get("sent_at")})
        verdicts, clicks = {}, {}
        for event in hits:
            if event.id in verdicts:
                continue  # the same hit twice in one batch
            data = event.data
            verdict = domain.Verdict(bool(data.get("machine")), data.get("machine_reason", ""))
            at = domain.parse_time(event.time)
            # The delivery's time, else the one the message's token carries
            # (delivery.sent may not be read yet while a big send goes out).
            sent_at = self._sent_at.get(data["job_id"]) or _token_time(data.get("sent_at"))
            if sent_at is not None:
                since = (at - sent_at).total_seconds()
                verdict = domain.classify_timing(verdict, since, self.rules.machine_hit_seconds)
            if event.type == "tracking.clicked" and not verdict.machine:
                job, index = data["job_id"], int(data.get("link_index", 0))
                previous = clicks.get(job) or self._last_click.get(job)
                verdict = domain.classify_burst(verdict, index, previous, at.timestamp(),
                                                self.rules.machine_burst_seconds)
                clicks[job] = (index, at.timestamp())
            verdicts[event.id] = verdict.machine
        self._remember(self._last_click, clicks)
        return verdicts

    # --------------------------------------------------------- counting
    def _note_first_times(self, facts: list[_Fact]) -> None:
        """The start of each campaign's hourly series (its first event)."""
        earliest: dict[str, tuple] = {}
        for fact in facts:
            at = domain.parse_time(fact.event.time)
            if fact.campaign_id not in earliest or at < earliest[fact.campaign_id][0]:
                earliest[fact.campaign_id] = (at, fact.event.account_id)
        if len(self._first_at) > 10_000:
            self._first_at.clear()
        for campaign_id, (at, account_id) in earliest.items():
            known = self._first_at.get(campaign_id)
            if known is None or at < known:
                self._first_at[campaign_id] = self.store.note_campaign_activity(
                    campaign_id, account_id, at)

    def _hour(self, fact: _Fact) -> datetime | None:
        at = domain.parse_time(fact.event.time)
        first_at = self._first_at[fact.campaign_id]
        return domain.hour_of(fact.event.time) \
            if at < first_at + timedelta(days=self.rules.hourly_days) else None

    def _insert_markers(self, batch_id: str, facts: list[_Fact], new: list[_Fact],
                        unfinished: set) -> dict[str, str]:
        """Insert the facts' markers; appends the ones this call inserted to
        `new`, notes the unfinished batches whose markers it met in
        `unfinished`, and returns {marker id: class it was first counted with}."""
        classes: dict[str, str] = {}
        docs = {}
        for fact in facts:
            if fact.marker_id in classes:
                continue  # the same fact twice in one batch: counted once
            classes[fact.marker_id] = _cls(bool(fact.machine))
            docs[fact.marker_id] = (fact, {
                "_id": fact.marker_id, "c": fact.campaign_id, "f": fact.fields,
                "h": self._hour(fact), "done": True, "b": batch_id,
                **({"machine": fact.machine} if fact.machine is not None else {})})
        existing = self.store.insert_markers([doc for _, doc in docs.values()])
        for marker_id, (fact, _) in docs.items():
            found = existing.get(marker_id)
            if found is None:
                new.append(fact)
                continue
            if not found.get("done"):
                unfinished.add(("legacy", fact.campaign_id, fact.event.account_id))
            elif found.get("b") and self._unfinished(found["b"]):
                unfinished.add(("batch", found["b"]))
            if "machine" in found:
                classes[marker_id] = _cls(bool(found["machine"]))
        return classes

    def _unfinished(self, batch_id: str) -> bool:
        if batch_id not in self._open_batches:
            self._open_batches[batch_id] = self.store.open_batch(batch_id) is not None
        return self._open_batches[batch_id]

    def _increment(self, batch_id: str, new: list[_Fact]) -> None:
        totals: dict[str, tuple[str, Counter]] = {}
        hourly: dict[tuple[str, datetime], Counter] = {}
        for fact in new:
            account_id = fact.event.account_id
            totals.setdefault(fact.campaign_id, (account_id, Counter()))[1].update(fact.fields)
            hour = self._hour(fact)
            series = [f for f in fact.fields if not f.startswith("link_")]
            if hour is not None and series:
                hourly.setdefault((fact.campaign_id, hour), Counter()).update(series)
        self.store.add_batch_counts(batch_id, totals, hourly)


def _cls(machine: bool) -> str:
    return "machine" if machine else "human"


def build_stats(store: TrackingStore, campaign_id: str) -> dict | None:
    campaign = store.campaign(campaign_id) or {}
    counts = store.counters(campaign_id)
    if counts is None and not campaign:
        return None
    counts = counts or {}
    body = {"campaign_id": campaign_id, **domain.summarise(counts)}
    links = campaign.get("links") or []
    indexes = sorted(set(range(len(links))) | {
        int(name.split("_")[1]) for name in counts if name.startswith("link_")})
    body["links"] = [{
        "index": i, "url": links[i] if i < len(links) else None,
        "unique_human": counts.get(f"link_{i}_unique_human", 0),
        "total_human": counts.get(f"link_{i}_total_human", 0),
        "unique_machine": counts.get(f"link_{i}_unique_machine", 0),
        "total_machine": counts.get(f"link_{i}_total_machine", 0),
    } for i in indexes]
    body["hourly"] = [{
        "hour": row["hour"],
        **{name: int(row.get(name, 0)) for name in domain.COUNTERS},
    } for row in store.hourly(campaign_id)]
    body["account_id"] = (counts.get("account_id") or campaign.get("account_id"))
    return body

