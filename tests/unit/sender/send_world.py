"""A world around the real SendLoop and Engine, for the send loop's fuzz test.

Real: SendLoop, Engine, ContactView, RateLimiter (over a MemoryCounter) and
the in-memory broker's send.jobs and send.retry, where a test may put any
record on any partition. Imitated in memory, with the semantics of
services/sender/store.py: DeliveryStore (claim, _take_over, deferred,
record), ParkedJobs and HeldJobs, and the reads the engine makes of
CampaignStore and ContactStateStore. Around them: campaigns that become
known, resume or are cancelled at set times; contacts that answer each
delivery.held (echoing its hold) after a delay, once or more, on send.jobs
or astray on send.retry; the contact-state loop's progress over the lifts
it applies, for the ContactView; a relay whose replies are set per (job id,
attempt); a clock that moves only by step(). One sender: a take-over of an
expired or deferred claim always succeeds.

Checked as it runs (`violations`):
- a commit never moves back, nor past a record whose job is not settled:
  final, deferred with its retry out, parked at that attempt, held for
  contacts' answer, carried on by a later copy on send.retry; or dropped
  by design (a late answer, a dead letter, a job of an erased account);
- the sender never meets a live claim of its own (one it did not give
  back), unless a batch failed: its claims wait out the lease by design.
Checked at the end: `sent_twice()`, each (job id, attempt) sent at most once
(but for the sends a failed batch did not record: they go again after the
lease, by design); `unfinished(job ids)`, every job ends final; `stuck()`,
no partition is left with records it never committed.
"""
from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Callable

from services.sender import smtp
from services.sender.compose import Outgoing
from services.sender.contact_view import ContactView
from services.sender.domain import (CONTACT_CHANGED, DEFERRED, FINAL, RELEASED, SENDING,
                                    Campaign, Job, Limits, RetryPolicy)
from services.sender.engine import Engine, EngineSettings
from services.sender.loop import SendLoop
from services.sender.throttle import MemoryCounter, RateLimiter
from shared.events import InvalidEvent, decode, encode, new_event
from shared.kafka.interface import Record
from shared.kafka.memory import InMemoryBroker, InMemorySource
from shared.kafka.producer import EventProducer

ACCOUNT = "a" * 32
JOBS, RETRY = "send.jobs", "send.retry"
GROUP = "sender"
SENDER = "me"  # the owner of this sender's claims
UNTRIED = "untried"  # a reply: the relay never got to the job (the batch's deadline)
START = 1_800_000_000.0


class World:
    """The stores, messenger and publisher the engine is given, all in one
    (as test_engine.Fakes), and the broker, clock and contacts around them."""

    def __init__(self, partitions=1, lease_seconds=10.0, view_lag=0.0, seed=0):
        self.now = START
        self.rnd = random.Random(seed)  # the world's own chances: answers astray, retry jitter
        self.broker = InMemoryBroker(partitions)
        self.lease_seconds = lease_seconds
        self.violations: list[str] = []
        # campaigns and contacts as the sender's database has them
        self.campaign_plans: dict[str, tuple[Campaign, float, list]] = {}
        self.erased: set[str] = set()
        self.contacts: dict[str, dict] = {}
        # DeliveryStore, ParkedJobs, HeldJobs
        self.claims: dict[str, dict] = {}
        self.deliveries: dict[str, dict] = {}
        self.parked: dict[str, dict] = {}
        self.held_jobs: dict[str, dict] = {}
        self.holds_made = 0
        # contacts: answers to delivery.held, and the lifts of blocks
        self.answer_delay = 0.5
        self.answer_copies = 1
        self.answers_astray = 0.0  # the odds that an answer comes on a send.retry partition
        self.answers_due: list[tuple[float, str, dict]] = []
        self.lifts: list[float] = []
        self.view_lag = view_lag
        # the relay, and what went wrong on purpose
        self.replies: dict[tuple[str, int], int | str] = {}
        self.sends: list[tuple[str, int]] = []
        self.in_flight: list[smtp.SendTask] = []
        self.fail_record_calls: set[int] = set()
        self.record_calls = 0
        self.failed_batches = 0
        self.unrecorded: set[str] = set()
        # job id -> (event id, attempt) of each of its copies put on send.retry
        self.retries: dict[str, list[tuple[str, int]]] = {}

    def clock(self) -> float:
        return self.now

    # ------------------------------------------------------------- setting up
    def campaign(self, campaign_id, status=SENDING, known_from=float("-inf"), changes=(),
                 per_second=None):
        """changes: (time, status) the campaign takes from then on."""
        campaign = Campaign(campaign_id, ACCOUNT, {"version": 1, "subject": "s", "html": "h"},
                            {"from_email": "n@sandesh.test"}, Limits(per_second=per_second),
                            status=status)
        self.campaign_plans[campaign_id] = (campaign, known_from, sorted(changes))

    def contact(self, contact_id, revision=0, block=None, lifted_at=None):
        """block: why its jobs are skipped; lifted_at: when contacts lifts it."""
        self.contacts[contact_id] = {"revision": revision, "block": block,
                                     "lifted_at": lifted_at}
        if lifted_at is not None:
            self.lifts.append(lifted_at)

    def put(self, topic, partition, data, account=ACCOUNT):
        event = new_event("send.job", source="test", subject=data["job_id"], account_id=account,
                          data=data)
        self._append(topic, partition, data["job_id"].encode(), encode(event))

    def put_not_a_job(self, topic, partition):
        self._append(topic, partition, b"x", b"not an event")

    def _append(self, topic, partition, key, value):
        records = self.broker._topic(topic)[partition]
        records.append(Record(topic, partition, len(records), key, value, []))

    def build(self, max_records=500, **settings) -> None:
        self.producer = EventProducer(self.broker.sink())
        self.source = CheckedSource(self)
        self.engine = Engine(campaigns=self, contacts=self, deliveries=self, parked=self,
                             held=self, limiter=RateLimiter(MemoryCounter(), clock=self.clock),
                             slots=NoDomainSlots(), messenger=self,
                             composer_for=lambda campaign: PlainComposer(), publisher=self,
                             settings=EngineSettings(**settings),
                             contact_view=ContactView(StateLoopProgress(self), clock=self.clock),
                             clock=self.clock)
        policy = self.engine.retry
        self.engine.retry = RetryOnClock(policy.max_attempts, policy.base_seconds,
                                         policy.max_seconds, clock=self.clock,
                                         rng=self.rnd.random)
        self.loop = SendLoop(self.source, self.engine, self.producer, service="sender",
                             group=GROUP, dead_letters=self.producer.sink, clock=self.clock,
                             max_records=max_records)

    # ---------------------------------------------------------------- running
    def step(self, seconds, rebalance=False) -> None:
        """Move the clock on, let contacts' answers due arrive, poll once."""
        self.now += seconds
        due = [answer for answer in self.answers_due if answer[0] <= self.now]
        self.answers_due = [answer for answer in self.answers_due if answer[0] > self.now]
        for _, account, data in due:
            for _ in range(self.answer_copies):
                self._answer(account, data)
        if rebalance:
            self.source.rebalance()
        self.loop.run_once()

    def _answer(self, account, held):
        """Contacts' answer to delivery.held: the job as the contact is now."""
        revision = self.contacts[held["contact_id"]]["revision"]
        data = {"job_id": held["job_id"], "campaign_id": held["campaign_id"],
                "contact_id": held["contact_id"], "attempt": held["attempt"],
                "contact_revision": revision,
                "recipient": {"email": f"{held['contact_id']}.{revision}@example.com"},
                "answers_held": held.get("hold") or True}
        event = new_event("send.job", source="contacts", subject=data["job_id"],
                          account_id=account, data=data)
        if self.rnd.random() < self.answers_astray:
            self._append(RETRY, self.rnd.randrange(self.broker.partitions),
                         data["job_id"].encode(), encode(event))
        else:
            self.broker.append(JOBS, data["job_id"].encode(), encode(event))

    def done(self) -> bool:
        """All committed, no answer on its way, nothing parked or held."""
        return not (self.stuck() or self.answers_due or self.parked or self.held_jobs)

    def stuck(self) -> dict[tuple[str, int], str]:
        """The partitions with records not committed: committed / end."""
        committed = self.broker.committed[GROUP]
        return {(topic, p): f"{committed.get((topic, p), 0)}/{len(records)}"
                for topic in (JOBS, RETRY)
                for p, records in enumerate(self.broker.topics[topic])
                if committed.get((topic, p), 0) < len(records)}

    def unfinished(self, job_ids) -> list[str]:
        return [job_id for job_id in job_ids if job_id not in self.deliveries]

    def sent_twice(self) -> dict[tuple[str, int], int]:
        return {sent: times for sent, times in Counter(self.sends).items()
                if times > 1 and sent[0] not in self.unrecorded}

    def check_commit(self, offsets) -> None:
        for (topic, partition), offset in offsets.items():
            before = self.broker.committed[GROUP].get((topic, partition), 0)
            if offset < before:
                self.violations.append(f"t+{self.now - START:.2f} {topic}[{partition}] "
                                       f"committed back from {before} to {offset}")
            for record in self.broker.topics[topic][partition][before:offset]:
                if not self._settled(record):
                    job = decode(record.value).data
                    self.violations.append(f"t+{self.now - START:.2f} committed past "
                                           f"{topic}[{partition}]@{record.offset}, not settled: "
                                           f"{job['job_id']} attempt {job['attempt']}")

    def _settled(self, record) -> bool:
        """Whether a commit may pass the record."""
        try:
            event = decode(record.value)
        except InvalidEvent:
            return True  # dead-lettered
        job = Job.from_event(event.account_id, event.data)
        if event.account_id in self.erased or job.job_id in self.deliveries:
            return True
        if job.hold_token and self.held_jobs.get(job.job_id, {}).get("hold") != job.hold_token:
            return True  # a late answer: the job went on with the one taken before it
        claim = self.claims.get(job.job_id, {})
        if claim.get("deferred") and claim["attempt"] >= job.attempt:
            return True  # its retry is out
        parked = self.parked.get(job.job_id)
        if parked and parked["data"]["attempt"] >= job.attempt:
            return True
        if job.job_id in self.held_jobs:
            return True  # contacts will answer with the job
        return any(event_id != event.id and attempt >= job.attempt
                   for event_id, attempt in self.retries.get(job.job_id, ()))

    # ------------------------------------------------ CampaignStore (reads)
    def get_many(self, campaign_ids):
        return {campaign_id: self._campaign(campaign_id) for campaign_id in campaign_ids}

    def _campaign(self, campaign_id):
        campaign, known_from, changes = self.campaign_plans[campaign_id]
        if self.now < known_from:
            return None
        status = campaign.status
        for at, changed_to in changes:
            if at <= self.now:
                status = changed_to
        return replace(campaign, status=status)

    def erased_accounts(self, account_ids):
        return set(account_ids) & self.erased

    # ------------------------------------- ContactStateStore.blocked (reads)
    def blocked(self, jobs):
        reasons = {}
        for job in jobs:
            state = self.contacts.get(job.contact_id)
            if job.withdrawn:
                reasons[job.job_id] = "erased"
            elif state is None:
                continue
            elif state["block"] and (state["lifted_at"] is None
                                     or self.now < state["lifted_at"]):
                reasons[job.job_id] = state["block"]
            elif state["revision"] > job.contact_revision:
                reasons[job.job_id] = CONTACT_CHANGED
        return reasons

    # ---------------------------------------------------------- DeliveryStore
    def claim(self, jobs):
        claimed, finished, held = [], {}, []
        for job in jobs:
            doc = self.claims.get(job.job_id)
            if doc is None:
                self.claims[job.job_id] = self._claim_of(job)
                claimed.append(job)
            elif job.job_id in self.deliveries:
                finished[job.job_id] = self.deliveries[job.job_id]
            elif doc.get("deferred") and job.attempt <= doc["attempt"]:
                finished[job.job_id] = {"state": DEFERRED, "attempt": doc["attempt"]}
            elif job.attempt <= doc.get("deferred_attempt", -1):
                finished[job.job_id] = {"state": DEFERRED, "attempt": doc["deferred_attempt"]}
            elif doc.get("deferred") or doc["claimed_at"] < self.now - self.lease_seconds:
                taken = {**self._claim_of(job), "previous_owner": doc["owner"]}
                if doc.get("deferred"):
                    taken["deferred_attempt"] = doc["attempt"]
                elif "deferred_attempt" in doc:
                    taken["deferred_attempt"] = doc["deferred_attempt"]
                self.claims[job.job_id] = taken
                claimed.append(job)
            else:
                if doc["owner"] == SENDER and not self.failed_batches:
                    self.violations.append(f"t+{self.now - START:.2f} {job.job_id} held by "
                                           f"a live claim of this sender's own")
                held.append(job)
        return claimed, finished, held

    def _claim_of(self, job, **marks):
        return {"owner": SENDER, "claimed_at": self.now, "attempt": job.attempt, **marks}

    def deferred(self, jobs):
        for job in jobs:
            self.claims.setdefault(job.job_id, self._claim_of(job, deferred=True))

    def record(self, outcomes, patience=0.0):
        self.record_calls += 1
        if self.record_calls in self.fail_record_calls:
            self.failed_batches += 1
            self.unrecorded.update(job_id for job_id, _, _ in outcomes)
            raise ConnectionError("the database is away (on purpose)")
        for job_id, state, fields in outcomes:
            if state in FINAL:
                self.deliveries.setdefault(job_id, {"state": state, **fields})
            elif self.claims.get(job_id, {}).get("owner") == SENDER:
                doc = self.claims[job_id]
                if state == RELEASED and "deferred_attempt" in doc:  # the deferral stands again
                    restored = {key: value for key, value in doc.items()
                                if key != "deferred_attempt"}
                    self.claims[job_id] = {**restored, "deferred": True,
                                           "attempt": doc["deferred_attempt"]}
                elif not doc.get("deferred"):
                    del self.claims[job_id]

    # ------------------------------------------------------------- ParkedJobs
    def park(self, jobs, erased=frozenset()):
        for job in jobs:
            data = job.copy_data()
            if job.job_id in erased:
                data["recipient"] = {"email": "erased@invalid"}
            parked = self.parked.get(job.job_id)
            if parked is None:
                self.parked[job.job_id] = {"_id": job.job_id, "campaign_id": job.campaign_id,
                                           "account_id": job.account_id,
                                           "data": {**data, "attempt": job.attempt}}
            elif parked["data"]["attempt"] < job.attempt:  # a retry takes the older one's place
                parked["data"] = {**parked["data"], "attempt": job.attempt,
                                  "not_before": data.get("not_before")}

    def campaigns(self):
        return sorted({doc["campaign_id"] for doc in self.parked.values()})

    def take(self, campaign_id, limit=1000, exclude=()):
        return [doc for doc in self.parked.values()
                if doc["campaign_id"] == campaign_id and doc["_id"] not in exclude][:limit]

    def remove(self, docs):
        for doc in docs:
            if self.parked.get(doc["_id"], {}).get("data", {}).get("attempt") == \
                    doc["data"]["attempt"]:
                del self.parked[doc["_id"]]

    # --------------------------------------------------------------- HeldJobs
    def hold(self, jobs, ask_again_at):
        for job in jobs:
            self.holds_made += 1
            self.held_jobs[job.job_id] = {
                "_id": job.job_id, "account_id": job.account_id,
                "campaign_id": job.campaign_id, "contact_id": job.contact_id,
                "list_id": job.list_id, "attempt": job.attempt,
                "hold": f"{self.holds_made:032x}", "asks": 1, "ask_again_at": ask_again_at}
        return [self.held_jobs[job.job_id] for job in jobs]

    def open_holds(self, job_ids):
        return {job_id: self.held_jobs[job_id]["hold"] for job_id in job_ids
                if job_id in self.held_jobs}

    def close(self, tokens):
        for job_id, token in tokens.items():
            if self.held_jobs.get(job_id, {}).get("hold") == token:
                del self.held_jobs[job_id]

    def answered(self, job_ids):
        for job_id in job_ids:
            self.held_jobs.pop(job_id, None)

    def due(self, now, limit=500):
        return [doc for doc in self.held_jobs.values() if doc["ask_again_at"] <= now][:limit]

    def asked_again(self, job_id, ask_again_at):
        doc = self.held_jobs[job_id]
        doc.update(ask_again_at=ask_again_at, asks=doc["asks"] + 1)

    # --------------------------------------------------- Messenger (the relay)
    def submit(self, tasks, deadline):
        for task in tasks:
            task.outgoing = task.compose()
            reply = self.replies.pop((task.job.job_id, task.job.attempt), 250)
            if reply == UNTRIED:
                task.outcome = smtp.RELEASED
                continue
            task.code, task.outcome, task.reply = reply, smtp.classify(reply), f"{reply} ok"
            self.sends.append((task.job.job_id, task.job.attempt))
        self.in_flight = list(tasks)

    def collect(self, at_least, timeout=0.5):
        done, self.in_flight = self.in_flight, []
        return done

    # -------------------------------------------------------------- Publisher
    def publish(self, topic, event, key=None):
        if topic == RETRY:
            self.retries.setdefault(event.data["job_id"], []).append(
                (event.id, event.data["attempt"]))
        if event.type == "delivery.held":
            self.answers_due.append((self.now + self.answer_delay, event.account_id,
                                     event.data))
        self.producer.publish(topic, event, key)

    def flush(self):
        self.producer.flush()


def job_data(n, campaign_id="c1", not_before=None, answers_held=None, withdrawn=False):
    """Job j<n> to contact p<n>, at attempt 0."""
    data = {"job_id": f"j{n}", "campaign_id": campaign_id, "contact_id": f"p{n}",
            "attempt": 0, "contact_revision": 0}
    if withdrawn:
        data["withdrawn"] = True
    else:
        data["recipient"] = {"email": f"r{n}@example.com"}
    if not_before is not None:
        data["not_before"] = datetime.fromtimestamp(not_before, timezone.utc).isoformat()
    if answers_held is not None:
        data["answers_held"] = answers_held
    return data


class CheckedSource(InMemorySource):
    """Reads send.jobs and send.retry; every commit is checked first."""

    def __init__(self, world: World):
        super().__init__(world.broker, [JOBS, RETRY], GROUP)
        self.world = world

    def commit(self, offsets):
        self.world.check_commit(offsets)
        super().commit(offsets)


class StateLoopProgress:
    """The contact-state loop's group over contacts.events, where each lift
    of a block is published when it happens and applied view_lag later."""

    def __init__(self, world: World):
        self.world = world

    def ends(self):
        published = sum(1 for at in self.world.lifts if at <= self.world.now)
        return {("contacts.events", 0): published} if published else {}

    def applied(self):
        cut = self.world.now - self.world.view_lag
        return {("contacts.events", 0): sum(1 for at in self.world.lifts if at <= cut)}


class NoDomainSlots:
    """No campaign here limits its per-domain concurrency: no slots taken."""

    def take(self, wants):
        return {key: want for key, (_, want) in wants.items()}

    def give_back(self, keys=None):
        pass

    def abandon(self):
        pass


class PlainComposer:
    def compose(self, job):
        return Outgoing(job, b"msg", "b+x@d", f"<{job.job_id}@d>", False)


@dataclass(frozen=True)
class RetryOnClock(RetryPolicy):
    """The engine's retry policy, dating a retry by the world's clock and
    jittering it with the world's seed: the engine dates it by the wall
    clock, which the world's runs far ahead of, and a seed would not replay."""

    clock: Callable[[], float] = time.time
    rng: Callable[[], float] = random.random

    def not_before(self, attempt, now, rng=None):
        return (datetime.fromtimestamp(self.clock(), timezone.utc)
                + timedelta(seconds=self.delay(attempt, self.rng)))
