"""The send loop over the in-memory broker: commit after the work, dead
letters, a held job holds its partition, a failing batch is retried, a
hold does not outlive a rebalance. (Whether a job not due yet is held or
parked is the engine's call: test_engine.py.)"""
from __future__ import annotations

from services.sender.engine import DONE, Dispositions, Hold
from services.sender.loop import SendLoop
from shared.events import encode, new_event
from shared.kafka.memory import InMemoryBroker
from shared.kafka.producer import EventProducer


class FakeEngine:
    class settings:
        unpark_every_seconds = 3600

    def __init__(self, fail_times=0):
        self.seen, self.fail_times = [], fail_times

    def handle(self, sequences):
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("database down")
        jobs = [j for seq in sequences for j in seq]
        self.seen.extend(j.job_id for j in jobs)
        return {j.job_id: DONE for j in jobs}

    def unpark(self, flush):
        return 0

    def ask_contacts_again(self, flush):
        return 0


def job_event(n):
    data = {"job_id": f"j{n}", "campaign_id": "c", "contact_id": f"p{n}", "attempt": 0,
            "recipient": {"email": f"r{n}@example.com"}}
    return encode(new_event("send.job", source="t", subject=f"j{n}", account_id="a", data=data))


def make(engine, clock):
    broker = InMemoryBroker(partitions=1)
    source = broker.source(["send.jobs"], "g")
    loop = SendLoop(source, engine, EventProducer(broker.sink()), service="sender", group="g",
                    dead_letters=broker.sink(), clock=clock)
    return broker, loop


def test_commits_after_the_work_and_dead_letters_what_is_not_a_job():
    now = [1000.0]
    engine = FakeEngine()
    broker, loop = make(engine, lambda: now[0])
    broker.append("send.jobs", b"j1", job_event(1))
    broker.append("send.jobs", b"x", b"not json")
    broker.append("send.jobs", b"j2", job_event(2))
    loop.run_once()
    assert engine.seen == ["j1", "j2"]
    assert broker.committed["g"][("send.jobs", 0)] == 3
    assert len(broker.messages("dead.letters")) == 1


def test_a_failing_batch_is_not_committed_and_comes_again():
    clock = [1000.0]
    engine = FakeEngine(fail_times=1)
    broker, loop = make(engine, lambda: clock[0])
    broker.append("send.jobs", b"j1", job_event(1))
    loop.run_once()
    assert engine.seen == [] and ("send.jobs", 0) not in broker.committed["g"]
    clock[0] += 1
    loop.run_once()
    assert engine.seen == ["j1"] and broker.committed["g"][("send.jobs", 0)] == 1


def test_a_held_job_holds_the_rest_of_its_partition():
    clock = [1000.0]

    class HoldingEngine(FakeEngine):
        def handle(self, sequences):
            self.seen.extend(j.job_id for seq in sequences for j in seq)
            return {"j1": DONE, "j2": Hold(1005.0, "paused")}  # j3: behind j2

    engine = HoldingEngine()
    broker, loop = make(engine, lambda: clock[0])
    for n in (1, 2, 3):
        broker.append("send.jobs", f"j{n}".encode(), job_event(n))
    loop.run_once()
    assert broker.committed["g"][("send.jobs", 0)] == 1
    clock[0] = 1006
    loop.run_once()
    assert engine.seen[-2:] == ["j2", "j3"]


def test_a_job_left_without_a_disposition_ahead_of_any_hold_is_read_again_not_committed_past():
    clock = [1000.0]

    class ForgetfulEngine(FakeEngine):
        def handle(self, sequences):
            jobs = [j for seq in sequences for j in seq]
            self.seen.extend(j.job_id for j in jobs)
            if len(self.seen) == len(jobs):  # the first batch: j2 and j3 left undecided
                return {"j1": DONE}
            return {j.job_id: DONE for j in jobs}

    engine = ForgetfulEngine()
    broker, loop = make(engine, lambda: clock[0])
    for n in (1, 2, 3):
        broker.append("send.jobs", f"j{n}".encode(), job_event(n))
    loop.run_once()
    assert broker.committed["g"][("send.jobs", 0)] == 1
    loop.run_once()
    assert engine.seen == ["j1", "j2", "j3", "j2", "j3"]
    assert broker.committed["g"][("send.jobs", 0)] == 3


def test_a_copy_the_engine_set_aside_is_committed_past_whatever_its_id_became():
    clock = [1000.0]

    class SettingAside(FakeEngine):
        def handle(self, sequences):
            [[copy, other]] = sequences
            self.seen.extend([copy.job_id, other.job_id])
            result = Dispositions()
            result["j2"] = DONE  # j1's kept copy waits elsewhere: no disposition
            result.set_aside = {id(copy)}
            return result

    engine = SettingAside()
    broker, loop = make(engine, lambda: clock[0])
    broker.append("send.jobs", b"j1", job_event(1))
    broker.append("send.jobs", b"j2", job_event(2))
    loop.run_once()
    assert broker.committed["g"][("send.jobs", 0)] == 2


def test_held_records_wait_in_memory_and_come_first_when_the_hold_ends():
    """A hold ending now (a rate-limit share) is not read again from the
    broker, which would wait out its fetch wait; a longer one pauses the
    partition, and what arrives meanwhile comes after the held records."""
    clock = [1000.0]

    class TurnTakingEngine(FakeEngine):
        def handle(self, sequences):
            jobs = [j for seq in sequences for j in seq]
            self.seen.append([j.job_id for j in jobs])
            first, *rest = jobs
            hold = Hold(clock[0] if len(self.seen) == 1 else 1005.0, "rate limit")
            return {first.job_id: DONE, **({rest[0].job_id: hold} if rest else {})}

    engine = TurnTakingEngine()
    broker, loop = make(engine, lambda: clock[0])
    for n in (1, 2, 3):
        broker.append("send.jobs", f"j{n}".encode(), job_event(n))
    loop.run_once()                       # j1 sent; j2 looked at again at once
    assert loop.source.position[("send.jobs", 0)] == 3  # not rewound: nothing read twice
    loop.run_once()                       # j2 sent; j3 held until 1005
    broker.append("send.jobs", b"j4", job_event(4))
    loop.run_once()
    assert engine.seen == [["j1", "j2", "j3"], ["j2", "j3"]]  # paused meanwhile
    clock[0] = 1005.0
    loop.run_once()
    assert engine.seen[-1] == ["j3", "j4"]
    assert broker.committed["g"][("send.jobs", 0)] == 3
    loop.run_once()
    assert engine.seen[-1] == ["j4"] and broker.committed["g"][("send.jobs", 0)] == 4


def test_a_partition_held_when_a_rebalance_revokes_it_is_read_again_when_handed_back():
    """An eager rebalance revokes every partition, then hands most back as
    they were: kafka-python keeps their paused flag, as the in-memory source
    does. The loop forgets its holds at the revoke; it must lift them too,
    or nobody ever resumes the partition (a campaign stopped at 1,007 of
    1,500 jobs)."""
    clock = [1000.0]

    class RateLimitedEngine(FakeEngine):
        def handle(self, sequences):
            jobs = [j for seq in sequences for j in seq]
            first_batch = not self.seen
            self.seen.extend(j.job_id for j in jobs)
            if first_batch:  # j2 waits for the next second; j3 behind it
                return {"j1": DONE, "j2": Hold(1001.0, "rate limit")}
            return {j.job_id: DONE for j in jobs}

    engine = RateLimitedEngine()
    broker, loop = make(engine, lambda: clock[0])
    for n in (1, 2, 3):
        broker.append("send.jobs", f"j{n}".encode(), job_event(n))
    loop.run_once()
    assert broker.committed["g"][("send.jobs", 0)] == 1
    loop.source.rebalance()  # the partition is revoked and comes back
    clock[0] = 1002.0
    loop.run_once()
    assert engine.seen == ["j1", "j2", "j3", "j2", "j3"]
    assert broker.committed["g"][("send.jobs", 0)] == 3


def test_a_poll_waits_no_longer_than_until_the_first_hold_ends():
    """So senders sharing a rate-limited campaign start its next window together."""
    clock = [1000.0]

    class HoldingEngine(FakeEngine):
        def handle(self, sequences):
            return {j.job_id: Hold(1000.05, "rate limit") for seq in sequences for j in seq}

    broker, loop = make(HoldingEngine(), lambda: clock[0])
    timeouts = []
    poll = loop.source.poll
    loop.source.poll = lambda timeout_ms, max_records: timeouts.append(timeout_ms) or \
        poll(timeout_ms, max_records)
    broker.append("send.jobs", b"j1", job_event(1))
    loop.run_once()
    loop.run_once()
    assert timeouts == [200, 50]


def test_the_loop_tells_the_rate_limiter_its_part_of_the_jobs():
    """Its share of send.jobs is its share of every rate-limited window (throttle)."""

    class Limiter:
        share = 1.0

    class LimitedEngine(FakeEngine):
        limiter = Limiter()

    broker = InMemoryBroker(partitions=3)
    source = broker.source(["send.jobs"], "g")
    source.assignment = lambda: {("send.jobs", 1)}  # one of three, as one of three senders
    engine = LimitedEngine()
    loop = SendLoop(source, engine, EventProducer(broker.sink()), service="sender", group="g",
                    dead_letters=broker.sink(), jobs_topic="send.jobs")
    loop.run_once()
    assert engine.limiter.share == 1 / 3
