"""Campaign stats counted from events against the real FerretDB: exact, and
the same after every event is delivered again (also by a restarted worker),
and after a crash between a marker and its increment."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from services.tracking import counting
from services.tracking.counting import STALE_BATCH, CountingRules, StatsCounter, build_stats
from services.tracking.store import INDEXES, TrackingStore
from shared import mongo
from shared.events import decode, new_event

T0 = datetime(2024, 3, 12, 9, 0, tzinfo=timezone.utc)
ACCOUNT = uuid.uuid4().hex
CHROME = "chrome"


def hexid() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def store(mongo_db):
    mongo.ensure_indexes(mongo_db, INDEXES)
    return TrackingStore(mongo_db)


def ev(type_, at, **data):
    event = new_event(type_, source="test", subject=data.get("campaign_id", "x"),
                      account_id=ACCOUNT, data=data)
    body = event.to_dict()
    body["time"] = at.isoformat()
    import json
    return decode(json.dumps(body).encode())  # validated like the worker sees it


def scenario(campaign):
    contacts = [hexid() for _ in range(10)]
    jobs = [hexid() for _ in range(10)]
    sent_at = T0 + timedelta(minutes=1)
    ids = lambda i: {"campaign_id": campaign, "contact_id": contacts[i], "job_id": jobs[i]}
    events = [ev("campaign.launched", T0, campaign_id=campaign, template={
        "version": 1, "subject": "s", "html": "h",
        "links": ["https://a.example/", "https://b.example/", "https://c.example/"]},
        sender={"from_email": "news@example.com"}, audience={}, limits={}, tracking=True)]
    for i in range(8):
        events.append(ev("delivery.sent", sent_at, attempt=0, contact_revision=i, **ids(i)))
    for i in (8, 9):
        events.append(ev("delivery.failed", sent_at, attempt=0, **ids(i)))
    # one hard bounce, seen on both streams; one soft
    events.append(ev("delivery.bounced", sent_at + timedelta(minutes=2), attempt=0,
                     bounce_type="hard", **ids(0)))
    events.append(ev("tracking.bounced", sent_at + timedelta(minutes=3), bounce_type="hard", **ids(0)))
    events.append(ev("tracking.bounced", sent_at + timedelta(minutes=3), bounce_type="soft", **ids(7)))
    hour1, hour2 = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    # opens: contact 1 twice, contact 2 once (people); 3 a scanner; 4 prefetched at delivery
    events.append(ev("tracking.opened", hour1, machine=False, user_agent_family=CHROME, **ids(1)))
    events.append(ev("tracking.opened", hour2, machine=False, user_agent_family=CHROME, **ids(1)))
    events.append(ev("tracking.opened", hour1, machine=False, user_agent_family=CHROME, **ids(2)))
    events.append(ev("tracking.opened", hour1, machine=True, machine_reason="scanner:mimecast",
                     **ids(3)))
    events.append(ev("tracking.opened", sent_at + timedelta(seconds=4), machine=False, **ids(4)))
    # clicks: contact 1 link 0; contact 2 link 1 then link 2 half a second later
    # (a scanner walking links); contact 5 clicks 3 s after delivery
    events.append(ev("tracking.clicked", hour1, machine=False, link_index=0, **ids(1)))
    events.append(ev("tracking.clicked", hour1, machine=False, link_index=1, **ids(2)))
    events.append(ev("tracking.clicked", hour1 + timedelta(milliseconds=500), machine=False,
                     link_index=2, **ids(2)))
    events.append(ev("tracking.clicked", sent_at + timedelta(seconds=3), machine=False,
                     link_index=0, **ids(5)))
    # contact 6 clicks with the pixel blocked: an open too
    events.append(ev("tracking.clicked", hour2, machine=False, link_index=0, **ids(6)))
    # contact 6 unsubscribes twice (page, then one-click), contact 7 complains
    events.append(ev("tracking.unsubscribed", hour2, list_id=None, method="page", **ids(6)))
    events.append(ev("tracking.unsubscribed", hour2, list_id=None, method="one-click", **ids(6)))
    events.append(ev("tracking.complained", hour2, feedback_type="abuse", **ids(7)))
    return events


EXPECTED = {
    "sent": 8, "delivered": 6, "failed": 2,
    "bounced": {"hard": 1, "soft": 1, "total": 2},
    "opens": {"unique_human": 3, "total_human": 4, "unique_machine": 2, "total_machine": 2},
    "clicks": {"unique_human": 3, "total_human": 3, "unique_machine": 2, "total_machine": 2},
    "unsubscribes": 1, "complaints": 1,
}


def handle_all(counter, events):
    handlers = {
        "campaign.launched": counter.campaign_launched, "delivery.sent": counter.delivery_sent,
        "delivery.failed": counter.delivery_failed, "delivery.bounced": counter.bounced,
        "tracking.bounced": counter.bounced, "tracking.opened": counter.opened,
        "tracking.clicked": counter.clicked, "tracking.unsubscribed": counter.unsubscribed,
        "tracking.complained": counter.complained}
    for event in events:
        handlers[event.type](event)


def check(stats):
    assert {k: stats[k] for k in EXPECTED} == EXPECTED
    links = {link["index"]: link for link in stats["links"]}
    assert [links[i]["url"] for i in range(3)] == ["https://a.example/", "https://b.example/",
                                                  "https://c.example/"]
    assert (links[0]["total_human"], links[0]["total_machine"]) == (2, 1)
    assert (links[1]["unique_human"], links[1]["total_machine"]) == (1, 0)
    assert (links[2]["total_human"], links[2]["total_machine"]) == (0, 1)
    assert stats["rates"]["open"] == round(3 / 6, 4)
    assert stats["rates"]["click_to_open"] == 1.0   # every clicker opened
    hours = {row["hour"].replace(tzinfo=timezone.utc): row for row in stats["hourly"]}
    assert hours[T0]["sent"] == 8 and hours[T0]["opens_total_machine"] == 1
    assert hours[T0 + timedelta(hours=1)]["opens_unique_human"] == 2
    assert hours[T0 + timedelta(hours=2)]["opens_total_human"] == 2   # contact 6's click too
    assert hours[T0 + timedelta(hours=2)]["opens_unique_human"] == 1
    assert sum(row["opens_total_human"] for row in stats["hourly"]) == 4


def test_stats_are_exact_and_survive_redelivery_and_restart(store):
    campaign = hexid()
    events = scenario(campaign)
    handle_all(StatsCounter(store, CountingRules()), events)
    check(build_stats(store, campaign))
    # the revision each message went with, for a bounce report about it
    sent = [e for e in events if e.type == "delivery.sent"]
    assert [store.delivery(e.data["job_id"])["contact_revision"] for e in sent] == list(range(8))
    # every event again, by the same worker and by a restarted one
    handle_all(StatsCounter(store, CountingRules()), events)
    handle_all(StatsCounter(store, CountingRules()), list(reversed(events)))
    check(build_stats(store, campaign))


def test_a_crash_between_marker_and_increment_is_repaired(store):
    campaign = hexid()
    events = scenario(campaign)
    first_open = next(e for e in events if e.type == "tracking.opened")
    # The worker inserted the marker of this open, then died before counting it.
    store.insert_marker(f"{campaign}|open|{first_open.id}", campaign, ["opens_total_human"],
                        T0 + timedelta(hours=1), {"machine": False})
    handle_all(StatsCounter(store, CountingRules()), events)  # redelivered after the restart
    check(build_stats(store, campaign))


def test_unknown_campaign_has_no_stats(store):
    assert counting.build_stats(store, hexid()) is None


# -- the worker counts a whole poll at a time (StatsCounter.handle_batch) --

def in_chunks(events, size):
    return [events[i:i + size] for i in range(0, len(events), size)]


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_batches_count_exactly_and_survive_redelivery_and_restart(store, size):
    campaign = hexid()
    events = scenario(campaign)
    counter = StatsCounter(store, CountingRules())
    for chunk in in_chunks(events, size):
        counter.handle_batch(chunk)
    check(build_stats(store, campaign))
    # every event again, in other batches, by the same worker and by a restarted one
    for chunk in in_chunks(events, 5):
        counter.handle_batch(chunk)
    StatsCounter(store, CountingRules()).handle_batch(list(reversed(events)))
    check(build_stats(store, campaign))


def test_the_same_event_twice_in_one_batch_counts_once(store):
    campaign = hexid()
    events = scenario(campaign)
    StatsCounter(store, CountingRules()).handle_batch(events + events[1:])
    check(build_stats(store, campaign))


class CrashingStore(TrackingStore):
    """Dies once at the named step of a batch, like a killed worker."""

    def __init__(self, db, step):
        super().__init__(db)
        self.step = step

    def _maybe_crash(self, step):
        if self.step == step:
            self.step = None
            raise ConnectionError(f"worker killed before {step}")

    def add_batch_counts(self, *args):
        self._maybe_crash("increment")
        super().add_batch_counts(*args)

    def end_batch(self, *args):
        self._maybe_crash("end batch")
        super().end_batch(*args)


@pytest.mark.parametrize("step", ["increment", "end batch"])
def test_a_crash_in_the_middle_of_a_batch_is_repaired_when_it_is_redelivered(mongo_db, step):
    mongo.ensure_indexes(mongo_db, INDEXES)
    campaign = hexid()
    events = scenario(campaign)
    half = len(events) // 2
    StatsCounter(TrackingStore(mongo_db), CountingRules()).handle_batch(events[:half])
    with pytest.raises(ConnectionError):
        StatsCounter(CrashingStore(mongo_db, step), CountingRules()).handle_batch(events[half:])
    # the restarted worker gets the uncommitted batch again; the dead worker's
    # intent is repaired once stale (its worker might still be writing it)
    StatsCounter(TrackingStore(mongo_db), CountingRules()).handle_batch(events[half:])
    later = datetime.now(timezone.utc) + STALE_BATCH
    assert StatsCounter(TrackingStore(mongo_db), CountingRules(),
                        clock=lambda: later).repair_stale_batches() == 1
    check(build_stats(TrackingStore(mongo_db), campaign))
    assert mongo_db.batches.count_documents({}) == 0  # nothing left to repair


class _RepairedMeanwhile(TrackingStore):
    """Worker B's store: between B's markers and B's counts, worker C
    repairs a dead worker's batch of the same campaign."""

    def __init__(self, db, repair):
        super().__init__(db)
        self.repair = repair

    def add_batch_counts(self, *args):
        if self.repair:
            self.repair, repair = None, self.repair
            repair()
        super().add_batch_counts(*args)


def test_repairing_a_dead_workers_batch_leaves_what_other_workers_counted_alone(mongo_db):
    """The repair rebuilt the whole campaign from its markers and deleted
    every worker's counters: another worker that had inserted its markers
    but not yet its counts was counted twice (or, the other way round,
    not at all): 200 or 100 sent of 150 in a review."""
    mongo.ensure_indexes(mongo_db, INDEXES)
    campaign = hexid()
    sent_at = T0 + timedelta(minutes=1)
    jobs = [ev("delivery.sent", sent_at, attempt=0, campaign_id=campaign, contact_id=hexid(),
               job_id=hexid()) for _ in range(150)]
    with pytest.raises(ConnectionError):  # worker A dies after its markers
        StatsCounter(CrashingStore(mongo_db, "increment"), CountingRules()).handle_batch(jobs[:100])
    later = datetime.now(timezone.utc) + STALE_BATCH

    def worker_c_gets_a_poll():  # A's poll, redelivered: it repairs A's batch
        StatsCounter(TrackingStore(mongo_db), CountingRules(),
                     clock=lambda: later).handle_batch(jobs[:100])

    worker_b = StatsCounter(_RepairedMeanwhile(mongo_db, worker_c_gets_a_poll), CountingRules())
    worker_b.handle_batch(jobs[100:])
    assert build_stats(TrackingStore(mongo_db), campaign)["sent"] == 150
    StatsCounter(TrackingStore(mongo_db), CountingRules()).handle_batch(jobs)  # all again
    assert build_stats(TrackingStore(mongo_db), campaign)["sent"] == 150
    assert mongo_db.batches.count_documents({}) == 0


def test_a_dead_workers_batch_of_an_account_deleted_since_is_not_counted_back(mongo_db):
    """Its counters went with the account; the repair must not bring them back."""
    from services.tracking import privacy as tracking_privacy
    mongo.ensure_indexes(mongo_db, INDEXES)
    campaign = hexid()
    events = scenario(campaign)
    with pytest.raises(ConnectionError):
        StatsCounter(CrashingStore(mongo_db, "increment"), CountingRules()).handle_batch(events)
    tracking_privacy.erase_account(mongo_db, ACCOUNT)
    later = datetime.now(timezone.utc) + STALE_BATCH
    StatsCounter(TrackingStore(mongo_db), CountingRules(), clock=lambda: later).repair_stale_batches()
    assert build_stats(TrackingStore(mongo_db), campaign) is None
    assert mongo_db.batches.count_documents({}) == 0


def test_a_hit_on_arrival_is_a_machine_even_before_its_delivery_is_read(store):
    """Rule 5 took the delivery time from delivery.sent only: while a big
    send made that stream lag behind the hits, a scanner's fetch on arrival
    counted as a person. The message's token carries when it was sent."""
    campaign = hexid()
    counter = StatsCounter(store, CountingRules(machine_hit_seconds=10))
    launched = ev("campaign.launched", T0, campaign_id=campaign, template={
        "version": 1, "subject": "s", "html": "h", "links": []},
        sender={"from_email": "news@example.com"}, audience={}, limits={}, tracking=True)
    counter.handle_batch([launched])
    sent_at = T0 + timedelta(minutes=1)

    def opened(seconds_after_sending: float):
        return ev("tracking.opened", sent_at + timedelta(seconds=seconds_after_sending),
                  machine=False, user_agent_family=CHROME, campaign_id=campaign,
                  contact_id=hexid(), job_id=hexid(), sent_at=sent_at.isoformat())

    scanner, person = opened(3), opened(60)   # no delivery.sent read for either
    counter.handle_batch([scanner, person])
    stats = build_stats(store, campaign)
    assert (stats["opens"]["total_machine"], stats["opens"]["total_human"]) == (1, 1)


def test_a_person_opening_mail_clears_the_soft_bounces_of_their_mailbox(store):
    """The tally of distinct messages that soft-bounced never went down:
    three full-mailbox days over months made a reader who opens every mail
    a hard bounce. A person's open or click shows the mailbox works; a
    scanner's fetch on arrival shows nothing."""
    from services.tracking.store import soft_bounce_key
    counter = StatsCounter(store, CountingRules(machine_hit_seconds=10))
    campaign, reader, scanned = hexid(), hexid(), hexid()
    for contact in (reader, scanned):
        store.add_soft_bounce(ACCOUNT, contact, hexid())
        store.add_soft_bounce(ACCOUNT, contact, hexid())
    sent_at = T0 + timedelta(minutes=1)

    def opened(contact, seconds_after_sending):
        return ev("tracking.opened", sent_at + timedelta(seconds=seconds_after_sending),
                  machine=False, user_agent_family=CHROME, campaign_id=campaign,
                  contact_id=contact, job_id=hexid(), sent_at=sent_at.isoformat())

    counter.handle_batch([opened(reader, 600), opened(scanned, 2)])
    tallies = {d["_id"] for d in store.db.soft_bounces.find()}
    assert tallies == {soft_bounce_key(ACCOUNT, scanned)}
    assert store.add_soft_bounce(ACCOUNT, reader, hexid()) == 1   # counted afresh
