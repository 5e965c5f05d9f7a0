"""A campaign's domain slots (services/sender/domain_slots.py) on the real
FerretDB: several senders over the same `domain_slots` collection never hold
more slots of a domain than the campaign's limit."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from services.sender.domain_slots import DomainSlots

SLOW = ("c1", "slow.test")


class Clock:
    def __init__(self, now: float = 1_900_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def senders(db, count=2, lease=60.0, clock=None):
    clock = clock or Clock()
    return [DomainSlots(db, f"sender-{n}", lease, courtesy_seconds=1.0, clock=clock)
            for n in range(count)], clock


def one(slots: DomainSlots, key=SLOW, limit=1, want=1) -> int:
    return slots.take({key: (limit, want)})[key]


def test_a_slot_has_one_holder_until_it_is_given_back(mongo_db):
    (first, second), _ = senders(mongo_db)
    assert one(first) == 1
    assert one(second) == 0
    assert one(first) == 1  # its own, renewed (a batch run again), not a second
    assert one(second, ("c1", "other.test")) == 1  # another domain
    assert one(second, ("c2", "slow.test")) == 1  # another campaign
    first.give_back([SLOW])
    assert one(second) == 1
    assert one(first) == 0


def test_a_sender_takes_what_it_wants_of_a_limit_and_leaves_the_rest(mongo_db):
    (first, second, third), _ = senders(mongo_db, 3)
    assert first.take({SLOW: (3, 2), ("c1", "b.test"): (3, 1)}) == {SLOW: 2, ("c1", "b.test"): 1}
    assert one(second, limit=3, want=2) == 1   # what is left
    assert one(third, limit=3) == 0
    assert one(first, limit=3, want=2) == 2    # still its two, not more
    first.give_back()
    assert first.held == {}
    assert one(third, limit=3, want=2) == 2


def test_the_slot_of_a_dead_holder_is_free_once_its_lease_is_over(mongo_db):
    (dead, alive), clock = senders(mongo_db, lease=60.0)
    assert one(dead) == 1
    clock.now += 59
    assert one(alive) == 0
    clock.now += 2
    assert one(alive) == 1
    dead.held.clear()   # it was killed: what it knew went with it
    assert one(dead) == 0


def test_a_holder_steps_aside_for_a_sender_that_waits(mongo_db):
    """Back first after giving it back, the holder kept the slot batch after
    batch while the other sender sent nothing of the domain."""
    (first, second), clock = senders(mongo_db)
    assert one(first) == 1
    assert one(second) == 0  # it asks
    first.give_back()
    clock.now += 0.3
    assert one(first) == 0  # steps aside, and asks in turn
    assert one(second) == 1
    second.give_back()
    assert one(second) == 0
    assert one(first) == 1


def test_a_holder_nobody_waits_for_takes_its_slot_again(mongo_db):
    (first, second), clock = senders(mongo_db)
    assert one(first) == 1
    assert one(second) == 0
    clock.now += 5  # the ask is old: that sender stopped waiting
    first.give_back()
    assert one(first) == 1
    first.give_back()
    assert one(second) == 1   # and one that got a slot asks no more
    second.give_back()
    assert one(first) == 1


def test_concurrent_senders_never_hold_more_than_the_limit(mongo_db):
    clock = Clock()
    slots = [DomainSlots(mongo_db, f"sender-{n}", 60.0, clock=clock) for n in range(8)]
    for limit in (1, 3):
        key = (f"c-{limit}", "slow.test")
        with ThreadPoolExecutor(8) as pool:
            took = list(pool.map(lambda s: s.take({key: (limit, limit)})[key], slots))
        assert sum(took) == limit, took


def test_senders_taking_over_a_dead_holders_slot_at_once_make_one_holder(mongo_db):
    clock = Clock()
    dead = DomainSlots(mongo_db, "dead", 60.0, clock=clock)
    assert one(dead) == 1
    clock.now += 61
    slots = [DomainSlots(mongo_db, f"sender-{n}", 60.0, clock=clock) for n in range(8)]
    with ThreadPoolExecutor(8) as pool:
        took = list(pool.map(lambda s: one(s), slots))
    assert sum(took) == 1, took


def test_no_slot_names_the_recipients_domain(mongo_db):
    """A recipient's own domain names its owner (ann@annlee.me), and slots
    outlive their campaign by 30 days, erasures and all: they were named
    after the domain."""
    clock = Clock()
    first, second = (DomainSlots(mongo_db, f"sender-{n}", 60.0, clock=clock, salt="s")
                     for n in range(2))
    assert one(first, ("c1", "annlee.me")) == 1
    assert one(second, ("c1", "annlee.me")) == 0   # the one slot is taken: they agree
    docs = list(mongo_db.domain_slots.find())
    assert docs and not [d for d in docs if "annlee" in repr(d)]
    other_salt = DomainSlots(mongo_db, "sender-x", 60.0, clock=clock, salt="t")
    assert one(other_salt, ("c1", "annlee.me")) == 1   # keyed: not a plain hash of the name


def test_slots_named_after_the_domain_before_the_keyed_hash_go_a_day_after_they_ended(mongo_db):
    """Slots written by a sender older than the keyed hash named the
    recipient's domain, and went only with the 30-day sweep."""
    from datetime import datetime, timedelta, timezone

    clock = Clock()
    now = datetime.fromtimestamp(clock.now, timezone.utc)
    legacy = [("ended", "c0:annlee.me#0", now - timedelta(days=2)),
              ("recent", "c0:bobross.example#0", now - timedelta(hours=1))]
    mongo_db.domain_slots.insert_many([
        {"_id": f"{lease}@{0:012d}", "lease": lease, "era": 0, "holder": "old-sender",
         "until": until} for _, lease, until in legacy])
    slots = DomainSlots(mongo_db, "sender-0", 60.0, clock=clock, salt="s")
    assert one(slots, ("c1", "annlee.me")) == 1      # the sweep runs with a take
    leases = sorted(d["lease"] for d in mongo_db.domain_slots.find({"lease": {"$exists": True}}))
    assert "c0:annlee.me#0" not in leases
    assert "c0:bobross.example#0" in leases           # ended an hour ago: an old sender's still
    assert len(leases) == 2                            # and the hashed one just taken
