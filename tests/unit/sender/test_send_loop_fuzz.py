"""The real send loop and engine over random adversarial batches, and the
batches such runs found (send_world.World: what it imitates and checks).

Each seed is a world of its own: a few jobs with copies scattered over the
partitions of send.jobs and send.retry; campaigns paused before or while
they send, unknown, limited or cancelled for a while; contacts blocked,
lifted or changed (answered several times, on any partition); jobs claimed
or finished elsewhere, deferred or not tried; a database that fails a
batch; rebalances. With two senders (play(seed, 2)), the same worlds with
more copies and deferrals, read by two senders that run at once (one's
batch within the other's), die and are replaced, while any operation of
the database may fail. A failing seed replays the same: play(seed) or
play(seed, 2); play(seed, 2, where) searches one place (send_world.POINTS).
"""
from __future__ import annotations

import logging
import random
from datetime import datetime, timezone

import pytest

from services.sender.domain import CANCELLED, PAUSED, SENDING, Job, parked_job_id
from tests.unit.sender.send_world import (ACCOUNT, JOBS, POINTS, RETRY, UNTRIED, World,
                                          job_data)

SEEDS, BLOCK = {1: 800, 2: 600}, 200  # seeds per number of senders
ERASED_ACCOUNT = "e" * 32
# What becomes of a job, and how often (weights).
KINDS = {"plain": 6, "blocked": 1, "lifted": 2, "complained": 1, "changed": 2,
         "claimed elsewhere": 1, "finished elsewhere": 1, "erased account": 1, "deferred": 1,
         "withdrawn": 0.3, "untried": 1}
CAMPAIGNS = ["c1", "c1", "c1", "paused", "unknown", "cancelled", "rated", "rated",
             "cancelling", "pausing", "pausing"]
RUN_SECONDS = 120  # every seed is done within 30 s: a partition not committed by then is stuck


def play(seed: int, senders: int = 1, where: dict | None = None) -> tuple[World, list[str]]:
    """A world run until all is done (or for RUN_SECONDS), and the jobs that
    must end final (all but the erased account's). With several senders,
    the same world, where the database fails now and then (any operation of
    the send path), senders die and others join, and senders run at once."""
    rnd = random.Random(seed)
    world = World(partitions=rnd.choice([1, 2, 3]), view_lag=rnd.choice([0.0, 0.5, 2.0]),
                  seed=seed)
    world.answer_copies = rnd.choice([1, 1, 2, 3])
    world.answers_astray = rnd.choice([0.0, 0.4])
    world.answer_delay = rnd.choice([0.2, 1.0, 3.0])
    start = world.now
    world.campaign("c1")
    world.campaign("paused", status=PAUSED, changes=[(start + rnd.uniform(1, 8), SENDING)])
    world.campaign("unknown", known_from=start + rnd.uniform(0.3, 5))
    world.campaign("cancelled", status=CANCELLED)
    world.campaign("rated", per_second=rnd.choice([1, 2, 3]))
    world.campaign("cancelling", changes=[(start + rnd.uniform(0, 6), CANCELLED)])
    paused_at = start + rnd.uniform(0, 4)
    world.campaign("pausing", changes=[(paused_at, PAUSED),
                                       (paused_at + rnd.uniform(0.5, 6), SENDING)])
    world.erased.add(ERASED_ACCOUNT)

    copies, must_finish = [], []
    for n in range(rnd.randint(3, 14)):
        campaign_id = rnd.choice(CAMPAIGNS)
        kind = rnd.choices(list(KINDS), list(KINDS.values()))[0]
        job_id = f"j{n}"
        world.contact(f"p{n}")
        if kind == "blocked":
            world.contact(f"p{n}", block="unsubscribed")
        elif kind == "lifted":
            world.contact(f"p{n}", block="suppressed", lifted_at=start + rnd.uniform(0, 4))
        elif kind == "complained":
            world.contact(f"p{n}", block="complained")
        elif kind == "changed":
            world.contact(f"p{n}", revision=rnd.randint(1, 2))
        elif kind == "claimed elsewhere":
            world.claimed_by(job_id, "other", start - rnd.uniform(0, 9))
        elif kind == "finished elsewhere":
            world.finished_by(job_id, "other", start - 100)
        elif kind == "untried":
            world.replies[(job_id, 0)] = UNTRIED
        elif kind == "deferred":
            world.replies[(job_id, 0)] = rnd.choice([451, 421])
        account = ERASED_ACCOUNT if kind == "erased account" else ACCOUNT
        if kind != "erased account":
            must_finish.append(job_id)
        for copy in range(rnd.choices([1, 2, 3], [6, 3, 1])[0]):
            not_before = rnd.choices([None, start + rnd.uniform(0.1, 6), start - 5],
                                     [0.82, 0.12, 0.06])[0]
            late_answer = copy > 0 and rnd.random() < 0.15  # to a hold not open
            data = job_data(n, campaign_id, not_before=not_before,
                                  answers_held="f" * 32 if late_answer else None,
                                  withdrawn=kind == "withdrawn")
            topic = rnd.choice([JOBS, JOBS, RETRY]) if copy else JOBS
            copies.append((topic, rnd.randrange(world.broker.partitions), data, account))
    if rnd.random() < 0.3:
        copies.append((JOBS, rnd.randrange(world.broker.partitions), None, None))
    chaos = random.Random(f"chaos {seed}")
    if senders > 1 and chaos.random() < 0.5:
        # more of what senders meet at once: copies of a job on other
        # partitions (another sender's), and deferrals
        for topic, partition, data, account in list(copies):
            if data is not None and chaos.random() < 0.3:
                copies.append((chaos.choice([JOBS, RETRY]),
                               chaos.randrange(world.broker.partitions), data, account))
            if data is not None and chaos.random() < 0.2:
                world.replies.setdefault((data["job_id"], 0), chaos.choice([421, 451]))
    rnd.shuffle(copies)
    for topic, partition, data, account in copies:
        if data is None:
            world.put_not_a_job(topic, partition)
        else:
            world.put(topic, partition, data, account)

    world.ferretdb = bool(where and where.get("ferretdb"))
    world.build(max_records=rnd.choice([3, 5, 500]), senders=senders,
                unknown_campaign_recheck_seconds=0.1,
                retry_base_seconds=1.0, retry_max_seconds=2.0, held_recheck_seconds=0.5,
                unpark_every_seconds=0.5, contact_answer_seconds=5.0,
                contact_answer_max_seconds=10.0)
    if rnd.random() < 0.3:
        world.fail_record_calls = {rnd.randint(1, 6)}
    if senders > 1:
        world.chaos = {"fail": chaos.choice([0.0, 0.02, 0.1]),
                       "die": chaos.choice([0.0, 0.005, 0.02]),
                       "interleave": chaos.choice([0.0, 0.05, 0.2]),
                       "midway": chaos.choice([0.0, 0.3, 0.8])}
        world.failures_left = chaos.randint(0, 4)
        world.deaths_left = chaos.randint(0, 2)
        world.campaign_cache_seconds = chaos.choice([0.0, 0.5, 1.0])
        if chaos.random() < 0.7:  # a few places only, each more often
            world.chaos_points = set(chaos.sample(POINTS, chaos.randint(1, 5)))
            world.chaos = {what: 5 * odds if what != "midway" else odds
                           for what, odds in world.chaos.items()}
        if where:  # a search of one place: {"points": {...}, "fail": odds, ...}
            world.chaos_points = set(where["points"])
            world.chaos = {what: where.get(what, 0.0)
                           for what in ("fail", "die", "interleave", "midway")}
            world.failures_left = where.get("failures", 3)
            world.deaths_left = where.get("deaths", 1)
    rebalances = rnd.choice([0.0, 0.03, 0.15])
    while world.now < start + RUN_SECONDS and not world.done():
        world.step(rnd.choice([0.0, 0.05, 0.1, 0.3, 0.7]), rebalance=rnd.random() < rebalances)
    return world, must_finish


def problems(world: World, must_finish: list[str]) -> list[str]:
    found = list(world.violations)
    if world.sent_twice():
        found.append(f"sent twice: {world.sent_twice()}")
    if world.unfinished(must_finish):
        found.append(f"never final: {world.unfinished(must_finish)}")
    if world.stuck():
        found.append(f"stuck (committed/end): {world.stuck()}")
    return found


@pytest.mark.parametrize("senders,first", [(senders, first) for senders, seeds in SEEDS.items()
                                           for first in range(0, seeds, BLOCK)])
def test_random_batches_keep_the_send_loops_promises(first, senders, caplog):
    caplog.set_level(logging.CRITICAL, logger="services.sender")  # the failed batches, on purpose
    failed = {seed: found for seed in range(first, first + BLOCK)
              if (found := problems(*play(seed, senders)))}
    assert not failed, "\n".join(f"seed {seed} (replay: play({seed}, {senders})): {found[:3]}"
                                 for seed, found in failed.items())


def test_a_due_retry_read_with_an_older_copy_of_its_job_is_sent():
    """j1 deferred at attempt 0; later one batch has a redelivered copy of
    attempt 0 (send.jobs) and the due retry (send.retry, attempt 1). The old
    copy found the deferred mark: its DONE, keyed by id, committed the retry
    past unsent, and the job never went again."""
    world = World()
    world.campaign("c1")
    world.contact("p1")
    world.replies[("j1", 0)] = 451
    world.put(JOBS, 0, job_data(1))
    world.build(retry_base_seconds=1.0, retry_max_seconds=1.0)
    world.step(0.0)
    assert world.sends == [("j1", 0)] and len(world.broker.messages(RETRY)) == 1
    world.now += 5  # the retry is due, and a copy of attempt 0 comes again
    world.put(JOBS, 0, job_data(1))
    for _ in range(10):
        world.step(0.5)
    assert world.sends == [("j1", 0), ("j1", 1)]
    assert world.deliveries["j1"]["state"] == "sent" and world.deliveries["j1"]["attempt"] == 1
    assert world.stuck() == {} and world.violations == []


def test_a_late_answer_ahead_of_the_taken_one_does_not_hold_its_partition():
    """j4 was held twice (its contact changed again): a late answer to the
    first hold, j2, then the answer to the open hold, all of a campaign sent
    at 1 a second. The late copy was set aside, but j4's rate-limit hold was
    placed at its offset and j2 released as behind it: every second the same,
    and nothing ever moved."""
    world = World()
    world.campaign("cr", per_second=1)
    world.contact("p2")
    world.contact("p4")
    j4 = Job.from_event(ACCOUNT, job_data(4, "cr"))
    in_an_hour = datetime.fromtimestamp(world.now + 3600, timezone.utc)
    first, = world.hold([j4], in_an_hour)
    second, = world.hold([j4], in_an_hour)
    world.put(JOBS, 0, job_data(4, "cr", answers_held=first["hold"]))
    world.put(JOBS, 0, job_data(2, "cr"))
    world.put(JOBS, 0, job_data(4, "cr", answers_held=second["hold"]))
    world.build()
    for _ in range(120):
        world.step(0.5)
    assert world.sends == [("j2", 0), ("j4", 0)]
    assert world.stuck() == {} and world.held_jobs == {}  # all committed, j4's hold closed
    assert world.violations == []


def test_a_retry_given_back_unsent_leaves_the_deferral_for_an_older_copy_to_find():
    """j1 deferred at attempt 0; its retry takes the deferred claim over and
    goes back unsent (behind j3, claimed elsewhere on send.retry). The claim
    went with the deferral, and a copy of attempt 0 (behind j2, whose
    campaign was not known yet) was claimed afresh and sent again."""
    world = World(partitions=1)
    start = world.now
    world.campaign("c1")
    world.campaign("cu", known_from=start + 4)
    for contact in ("p1", "p2", "p3"):
        world.contact(contact)
    world.replies[("j1", 0)] = 451
    world.claimed_by("j3", "other", start)
    world.put(JOBS, 0, job_data(1))
    world.put(JOBS, 0, job_data(2, "cu"))
    world.put(JOBS, 0, job_data(1))  # a redelivered copy of attempt 0, behind j2
    world.put(RETRY, 0, job_data(3))
    world.build(retry_base_seconds=1.0, retry_max_seconds=1.0, held_recheck_seconds=0.5)
    for _ in range(60):
        world.step(0.25)
    assert [send for send in world.sends if send[0] == "j1"] == [("j1", 0), ("j1", 1)]
    assert world.violations == []


def test_a_retry_parked_after_a_copy_of_the_attempt_it_retries_is_sent_at_the_resume():
    """j1 deferred, then its campaign paused: a redelivered copy of attempt
    0 was parked first, and the retry, parked after it, was dropped as
    parked before. Put back at the resume, the copy found the deferral and
    the job was never sent again."""
    world = World()
    start = world.now
    world.campaign("c1", changes=[(start + 0.2, PAUSED), (start + 5, SENDING)])
    world.contact("p1")
    world.replies[("j1", 0)] = 451
    world.put(JOBS, 0, job_data(1))
    world.build(retry_base_seconds=1.0, retry_max_seconds=1.0, unpark_every_seconds=0.5)
    world.step(0.0)
    world.step(0.3)
    world.put(JOBS, 0, job_data(1))  # a redelivered copy of attempt 0, while paused
    for _ in range(40):
        world.step(0.25)
    assert world.sends == [("j1", 0), ("j1", 1)] and world.deliveries["j1"]["state"] == "sent"
    assert world.done() and world.violations == []


def test_a_copy_read_by_another_sender_before_the_deferral_is_marked_is_not_sent_again():
    """Two senders, a copy of j1's attempt 0 on each one's partition. One
    sends it, deferred; its record gave the claim back, and the mark came
    only once the retry was flushed: the other sender, running meanwhile,
    claimed its copy afresh and sent attempt 0 again."""
    world = World(partitions=2)
    world.campaign("c1")
    world.contact("p1")
    world.replies[("j1", 0)] = 451
    world.put(JOBS, 0, job_data(1))
    world.put(JOBS, 1, job_data(1))  # the same attempt, on the other sender's partition
    world.build(senders=2, retry_base_seconds=1.0, retry_max_seconds=1.0,
                held_recheck_seconds=0.5)
    world.assign({"me": [(JOBS, 0), (RETRY, 0)], "you": [(JOBS, 1), (RETRY, 1)]})
    world.shuffle_senders = False  # me first
    world.when("me", "kafka.flush", "others")  # the retry's flush, before the mark
    for _ in range(20):
        world.step(0.5)
    assert world.sends == [("j1", 0), ("j1", 1)]
    assert world.deliveries["j1"]["state"] == "sent" and world.deliveries["j1"]["attempt"] == 1
    assert world.done() and world.violations == []


def test_a_job_parked_again_while_another_sender_puts_it_back_stays_parked():
    """A campaign resumed: one sender puts its parked job back on send.jobs,
    and before it removes the parked document, the other sender, whose
    cache still has the campaign paused, reads the copy just put back and
    parks it: parked already, at that attempt, so nothing was written, and
    the first sender's remove deleted it. The copy was committed as parked,
    and the job was never sent."""
    world = World()
    start = world.now
    world.campaign("c1", status=PAUSED, changes=[(start + 0.2, SENDING)])
    world.contact("p1")
    world.put(JOBS, 0, job_data(1))
    world.campaign_cache_seconds = 1.0
    world.build(senders=2, unpark_every_seconds=0.5)
    world.assign({"me": [(JOBS, 0), (RETRY, 0)]})  # "you" reads nothing, and unparks
    world.senders.reverse()
    world.shuffle_senders = False  # "you" first
    world.step(0.0)  # parked by "me", which has the campaign paused until t+1
    assert [parked_job_id(doc) for doc in world.parked.values()] == ["j1"]
    world.when("you", "parked_jobs.delete_many", "others")  # "me" runs before the remove
    for _ in range(20):
        world.step(0.25)
    assert world.sends == [("j1", 0)] and world.deliveries["j1"]["state"] == "sent"
    assert world.done() and world.violations == []


@pytest.mark.parametrize("senders,partitions,seed", [(1, 12, 1), (2, 4, 2), (4, 12, 2)])
def test_a_limited_campaigns_parked_jobs_go_out_at_its_limit_with_several_senders(
        senders, partitions, seed):
    """600 jobs of a campaign limited to 10 a second, nearly all parked by
    the first batches, then put back by the pacer (on the world's clock).
    Put back once per window, the jobs beyond a sender's share of it were
    parked again until the next: four senders sent it at 4 a second."""
    from collections import Counter

    from services.sender.throttle import MemoryCounter
    from shared.events import encode, new_event
    from tests.unit.sender.send_world import START

    world = World(partitions=partitions, seed=seed)
    world.campaign("c1", per_second=10)
    for n in range(600):
        world.contact(f"p{n}")
        world.broker.append(JOBS, f"j{n}".encode(), encode(new_event(
            "send.job", source="t", subject=f"j{n}", account_id=ACCOUNT, data=job_data(n))))
    world.build(senders=senders)
    counter = MemoryCounter()  # one rate_windows for all the senders
    for sender in world.senders:
        sender.engine.limiter.counter = counter
        sender.loop.jobs_topic = JOBS  # each sender's share of every window, as in production
    sent_at: list[int] = []  # the second of each send
    while world.now - START < 40:
        world.step(0.05)
        sent_at += [int(world.now - START)] * (len(world.sends) - len(sent_at))
    per_second = Counter(sent_at)
    steady = [per_second.get(second, 0) for second in range(3, 39)]
    assert max(steady) <= 10                   # the limit holds
    assert sum(steady) / len(steady) >= 9, steady
    assert not world.sent_twice()


def test_jobs_parked_just_after_their_accounts_erasure_do_not_stay_parked():
    """The account is erased while its rate-limited campaign sends, just
    after a batch read the erased accounts (a sender's view is up to a
    second old): that batch parks jobs over the window after the erasure
    deleted the account's parked jobs and its campaigns. Unknown campaign,
    they stayed parked for good, addresses and all."""
    world = World(partitions=1)
    world.campaign("c1", per_second=2)
    for n in range(20):
        world.contact(f"p{n}")
        world.put(JOBS, 0, job_data(n))
    world.build()
    sender = world.senders[0]
    per_window = sender.engine.limiter.per_window

    def erased_meanwhile(campaign_id, limits):  # services/sender/privacy.erase_account, now
        world.erased.add(ACCOUNT)
        sender.parked.forget_account(ACCOUNT)
        campaign, _, changes = world.campaign_plans["c1"]
        world.campaign_plans["c1"] = (campaign, float("inf"), changes)  # gone
        sender.engine.limiter.per_window = per_window
        return per_window(campaign_id, limits)

    sender.engine.limiter.per_window = erased_meanwhile
    start = world.now
    while world.now - start < 30:
        world.step(0.5)
    assert world.parked == {} and not world.stuck()
