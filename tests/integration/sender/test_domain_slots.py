"""A campaign's domain slots (services/sender/domain_slots.py) on the real
FerretDB: several senders over the same `domain_slots` collection never hold
more slots of a domain than the campaign's limit."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from services.sender.domain_slots import DomainSlots


class Clock:
    def __init__(self, now: float = 1_900_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def senders(db, count=2, lease=60.0, clock=None):
    clock = clock or Clock()
    return [DomainSlots(db, f"sender-{n}", lease, courtesy_seconds=1.0, clock=clock)
            for n in range(count)], clock


def test_a_slot_has_one_holder_until_it_is_given_back(mongo_db):
    (first, second), _ = senders(mongo_db)
    assert first.take("c1", "slow.test", 1)
    assert not second.take("c1", "slow.test", 1)
    assert first.take("c1", "slow.test", 1)  # its own, again (a batch run again)
    assert second.take("c1", "other.test", 1)  # another domain
    assert second.take("c2", "slow.test", 1)  # another campaign
    first.give_back("c1", "slow.test", 1)
    assert second.take("c1", "slow.test", 1)
    assert not first.take("c1", "slow.test", 1)


def test_a_limit_of_two_is_two_holders(mongo_db):
    (first, second, third), _ = senders(mongo_db, 3)
    assert first.take("c1", "slow.test", 2) and second.take("c1", "slow.test", 2)
    assert not third.take("c1", "slow.test", 2)
    second.give_back("c1", "slow.test", 2)
    assert third.take("c1", "slow.test", 2)


def test_the_slot_of_a_dead_holder_is_free_once_its_lease_is_over(mongo_db):
    (dead, alive), clock = senders(mongo_db, lease=60.0)
    assert dead.take("c1", "slow.test", 1)
    clock.now += 59
    assert not alive.take("c1", "slow.test", 1)
    clock.now += 2
    assert alive.take("c1", "slow.test", 1)
    assert not dead.take("c1", "slow.test", 1)  # it lost it


def test_a_holder_steps_aside_for_a_sender_that_waits(mongo_db):
    """Back first after giving it back, the holder kept the slot batch after
    batch while the other sender sent nothing of the domain."""
    (first, second), clock = senders(mongo_db)
    assert first.take("c1", "slow.test", 1)
    assert not second.take("c1", "slow.test", 1)  # it asks
    first.give_back("c1", "slow.test", 1)
    clock.now += 0.3
    assert not first.take("c1", "slow.test", 1)  # steps aside, and asks in turn
    assert second.take("c1", "slow.test", 1)
    second.give_back("c1", "slow.test", 1)
    assert not second.take("c1", "slow.test", 1)
    assert first.take("c1", "slow.test", 1)


def test_a_holder_nobody_waits_for_takes_its_slot_again(mongo_db):
    (first, second), clock = senders(mongo_db)
    assert first.take("c1", "slow.test", 1)
    assert not second.take("c1", "slow.test", 1)
    clock.now += 5  # the ask is old: that sender stopped waiting
    first.give_back("c1", "slow.test", 1)
    assert first.take("c1", "slow.test", 1)


def test_concurrent_senders_never_hold_more_than_the_limit(mongo_db):
    clock = Clock()
    slots = [DomainSlots(mongo_db, f"sender-{n}", 60.0, clock=clock) for n in range(8)]
    for limit in (1, 3):
        with ThreadPoolExecutor(8) as pool:
            took = list(pool.map(lambda s: s.take(f"c-{limit}", "slow.test", limit), slots))
        assert sum(took) == limit, took
