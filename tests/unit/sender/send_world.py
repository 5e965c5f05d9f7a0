"""A world around the real SendLoop and Engine, for the send loop's fuzz test.

Real: SendLoop, Engine, ContactView, RateLimiter (over a MemoryCounter), the
in-memory broker's send.jobs and send.retry, where a test may put any
record on any partition, and store.py's DeliveryStore, ParkedJobs and
HeldJobs over an in-memory MongoDB (memory_db.py). Imitated: the reads the
engine makes of CampaignStore (through a cache per sender, as it has) and
ContactStateStore. Around them: campaigns that become known, resume or are
cancelled at set times; contacts that answer each delivery.held (echoing
its hold) after a delay, once or more, on send.jobs or astray on
send.retry; the contact-state loop's progress over the lifts it applies,
for the ContactView; a relay whose replies are set per (job id, attempt);
a clock that moves only by step().

Senders (`build(senders=n)`): each a real SendLoop, Engine and stores of
its own (its owner, producer, rate limiter, view, campaign cache), sharing
the database and the broker, members of one group. A partition is read by
one member at a time: a rebalance (eager) revokes every member's
partitions, then deals them out again, each read from its last commit.
Each MongoDB operation is a point (before it, and after it, its answer not
back: memory_db.py), and so are the imitated reads, the relay's submit (and
its sends done) and the producer's publish and flush: there `when()` or
`chaos` may fail the operation (ConnectionFailure; a flush: DeliveryFailed,
part of its messages out; not the relay's or a publish), kill the sender
(Died: kill -9, its unflushed events lost, its claims live until the
lease) or let the other senders run a whole batch meanwhile (they run at
once). A dead sender's partitions move after a
session timeout; a new sender (another owner) joins a while later.
`ferretdb`: updates and deletes read, then write by _id, as FerretDB does.

Checked as it runs (`violations`):
- a commit never moves back, nor past a record whose job is not settled:
  final, deferred with its retry out, parked at that attempt, held for
  contacts' answer, carried on by a later copy on send.retry (or put back
  on send.jobs from the parking, by another sender meanwhile); or dropped
  by design (a late answer, a dead letter, a job of an erased account);
  and a member commits only its own partitions (Kafka's coordinator would
  take another's);
- a sender never meets a live claim of its own (one it did not give
  back), unless a batch of it failed: its claims wait out the lease;
- a sender sends a job only while it holds the job's claim at that
  attempt, and never one recorded final.
Checked at the end: `sent_twice()`, each (job id, attempt) sent at most once,
always with the same Message-ID, but for those a sender had out when it
died, or when its batch failed before recording them (a deferral: before
marking it), and those whose deferred mark failed (they go again after the
lease, by design: Engine._mark_deferred); `unfinished(job ids)`, every job
ends final; `stuck()`, no partition is left with records it never committed.
"""
from __future__ import annotations

import random
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Callable

from pymongo.errors import ConnectionFailure

from services.sender import smtp
from services.sender import store as store_module
from services.sender.compose import Outgoing
from services.sender.contact_view import ContactView
from services.sender.domain import (CONTACT_CHANGED, DEFERRED, SENDING,
                                    Campaign, Job, Limits, RetryPolicy, message_id, parked_job_id)
from services.sender.engine import Engine, EngineSettings
from services.sender.loop import SendLoop
from services.sender.store import DeliveryStore, HeldJobs, ParkedJobs
from services.sender.throttle import MemoryCounter, RateLimiter
from shared.events import InvalidEvent, decode, encode, new_event
from shared.kafka.interface import Record
from shared.kafka.memory import InMemoryBroker, InMemorySource
from shared.kafka.producer import EventProducer
from shared.kafka.rdkafka_impl import DeliveryFailed
from tests.unit.sender.memory_db import Collections, Database

ACCOUNT = "a" * 32
JOBS, RETRY = "send.jobs", "send.retry"
GROUP = "sender"
SENDER = "me"  # the owner of the first sender's claims
OWNERS = ["me", "you", "s3", "s4", "s5", "s6", "s7", "s8"]
UNTRIED = "untried"  # a reply: the relay never got to the job (the batch's deadline)
START = 1_800_000_000.0
STORE_POINT = "store"  # a point of a MongoDB operation (where a failure may be injected)
_OPS = {"claims": ["insert_many", "find", "update_one", "update_many", "delete_many"],
        "takeovers": ["insert_one", "find_one"], "deliveries": ["insert_many", "find"],
        "parked_jobs": ["insert_many", "update_one", "count_documents", "distinct", "find",
                        "delete_many"],
        "held_jobs": ["bulk_write", "find", "delete_one", "delete_many", "update_one"]}
FERRETDB_POINTS = tuple(f"{name}.{op}~" for name, ops in _OPS.items() for op in ops
                        if op.startswith(("update", "delete")))
POINTS = tuple([f"{name}.{op}{after}" for name, ops in _OPS.items() for op in ops
                for after in ("", ">")]
               + ["campaigns.get", "campaigns.erased", "contacts.blocked", "smtp.submit",
                  "smtp.sent", "kafka.publish", "kafka.flush"])


class Died(BaseException):
    """The sender is killed here (kill -9): nothing of it runs on. Not an
    Exception: no handler of the loop or engine may catch it."""


class World:
    """The stores, messenger and publisher every sender's engine is given
    (through its Port), and the broker, clock and contacts around them."""

    def __init__(self, partitions=1, lease_seconds=10.0, view_lag=0.0, seed=0):
        self.now = START
        self.rnd = random.Random(seed)  # the world's own chances: answers astray, retry jitter
        self.chaos_rnd = random.Random(f"chaos {seed}")  # assignments, failures, deaths
        self.broker = InMemoryBroker(partitions)
        self.lease_seconds = lease_seconds
        self.session_seconds = 5.0  # a dead member's partitions move within this
        self.violations: list[str] = []
        # campaigns and contacts as the sender's database has them
        self.campaign_plans: dict[str, tuple[Campaign, float, list]] = {}
        self.erased: set[str] = set()
        self.contacts: dict[str, dict] = {}
        # DeliveryStore, ParkedJobs, HeldJobs: their collections
        self.db = Collections()
        self.claims, self.takeovers = self.db["claims"], self.db["takeovers"]
        self.deliveries, self.parked = self.db["deliveries"], self.db["parked_jobs"]
        self.held_jobs = self.db["held_jobs"]
        self.ticks = 0  # store.utcnow() on the world's clock, a microsecond a call on
        # contacts: answers to delivery.held, and the lifts of blocks
        self.answer_delay = 0.5
        self.answer_copies = 1
        self.answers_astray = 0.0  # the odds that an answer comes on a send.retry partition
        self.answers_due: list[tuple[float, str, dict]] = []
        self.lifts: list[float] = []
        self.view_lag = view_lag
        self.campaign_cache_seconds = 0.0  # CampaignStore's cache (1 s in the sender)
        # the relay, and what went wrong on purpose
        self.replies: dict[tuple[str, int], int | str] = {}
        self.sends: list[tuple[str, int]] = []
        self.message_ids: dict[tuple[str, int], set[str]] = {}
        self.fail_record_calls: set[int] = set()
        self.record_calls = 0
        self.failed_batches = 0
        self.may_go_twice: set[tuple[str, int]] = set()  # sends allowed again, by design
        # [owner or None, point, how many matches to let by first, action]
        self.script: list[list] = []
        # "fail", "die", "interleave": odds per point; "midway": per batch, that
        # the other senders run at one of its first 60 points, any alike
        self.chaos: dict[str, float] = {}
        self.chaos_points: set[str] | None = None  # where chaos strikes (None: everywhere)
        self.others_per_step = 3  # the other senders' batches run within one of a step
        self.others_left = 0
        self.ferretdb = False  # updates and deletes as FerretDB does them (memory_db.py)
        self.failures_left = 0
        self.deaths_left = 0
        self.deaths = 0
        self.later: list[tuple[float, str]] = []  # (when, "rebalance" or "join")
        self.senders: list[Sender] = []
        self.shuffle_senders = True  # each step, the live senders poll in a random order
        # job id -> (event id, attempt) of each of its copies a sender put on
        # send.retry, or back on send.jobs (parked jobs put back)
        self.retries: dict[str, list[tuple[str, int]]] = {}

    def clock(self) -> float:
        return self.now

    def utcnow(self) -> datetime:
        """The stores' time: the world's, each call a microsecond later (two
        writes never share one, as with the real clock)."""
        self.ticks += 1
        return datetime.fromtimestamp(self.now, timezone.utc) + timedelta(microseconds=self.ticks)

    @contextmanager
    def stores_on_world_time(self):
        if store_module.utcnow == self.utcnow:
            yield
            return
        before, store_module.utcnow = store_module.utcnow, self.utcnow
        try:
            yield
        finally:
            store_module.utcnow = before

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

    def claimed_by(self, job_id, owner, at, attempt=0, **marks):
        """A claim in the database, as another sender left it."""
        self.claims[job_id] = {"_id": job_id, "owner": owner, "attempt": attempt,
                               "claimed_at": datetime.fromtimestamp(at, timezone.utc),
                               "campaign_id": "c1", **marks}

    def finished_by(self, job_id, owner, at):
        self.claimed_by(job_id, owner, at)
        self.deliveries[job_id] = {"_id": job_id, "state": "sent", "owner": owner, "event": None}

    def hold(self, jobs, ask_again_at):
        """HeldJobs.hold, as some sender did it."""
        return HeldJobs(Database(self.db)).hold(jobs, ask_again_at)

    def _append(self, topic, partition, key, value):
        records = self.broker._topic(topic)[partition]
        records.append(Record(topic, partition, len(records), key, value, []))

    def build(self, max_records=500, senders=1, **settings) -> None:
        # record() waits that long on the wall clock: the failures here last
        self.max_records = max_records
        self.settings = {"record_patience_seconds": 0.0, **settings}
        for _ in range(senders):
            self._join()
        self.rebalance()
        first = self.senders[0]
        self.engine, self.loop, self.source, self.producer = \
            first.engine, first.loop, first.source, first.producer

    def _join(self) -> "Sender":
        sender = Sender(self, OWNERS[len(self.senders)])
        self.senders.append(sender)
        return sender

    def when(self, owner, point, action, skip=0) -> None:
        """At the (skip+1)th time `owner` (None: any) reaches `point`:
        "fail", "die", "others" (the other senders run a batch) or a callable."""
        self.script.append([owner, point, skip, action])

    # ---------------------------------------------------------------- running
    def step(self, seconds, rebalance=False) -> None:
        """Move the clock on, let contacts' answers due arrive, let every
        live sender poll once (in a random order when there are several)."""
        self.now += seconds
        due = [answer for answer in self.answers_due if answer[0] <= self.now]
        self.answers_due = [answer for answer in self.answers_due if answer[0] > self.now]
        for _, account, data in due:
            for _ in range(self.answer_copies):
                self._answer(account, data)
        for at, what in [event for event in self.later if event[0] <= self.now]:
            self.later.remove((at, what))
            if what == "join":
                self._join()
            rebalance = True
        if rebalance:
            self.rebalance()
        self.others_left = self.others_per_step  # no endless batches at one instant
        alive = [sender for sender in self.senders if sender.alive]
        if len(alive) > 1 and self.shuffle_senders:
            self.chaos_rnd.shuffle(alive)
        for sender in alive:
            if sender.alive:
                self.run(sender)

    def run(self, sender: "Sender") -> None:
        """One poll of the sender's loop; a death there buries it."""
        sender.running, sender.batch_sends = True, []
        failures = sender.loop._failures
        sender.countdown = None
        if self.chaos_rnd.random() < self.chaos.get("midway", 0):
            sender.countdown = self.chaos_rnd.randrange(60)
        try:
            with self.stores_on_world_time():
                sender.loop.run_once()
        except Died:
            self._bury(sender)
            return
        finally:
            sender.running = False
        if sender.loop._failures > failures:
            # the batch failed: what it sent and did not record (a deferral:
            # did not mark, its retry perhaps not out) goes again, by design
            self.failed_batches += 1
            sender.failed = True
            self.may_go_twice.update(sender.unrecorded.items())
            self.may_go_twice.update(sender.unmarked.items())
            sender.unrecorded.clear()
            sender.unmarked.clear()

    def _bury(self, sender: "Sender") -> None:
        """Its unflushed events are lost; its claims stay until the lease runs
        out; its partitions move once its session times out."""
        sender.alive = False
        self.deaths += 1
        sender.producer.sink._buffer.clear()
        sender.pending.clear()
        self.may_go_twice.update(sender.batch_sends)
        self.may_go_twice.update(sender.unrecorded.items())
        self.may_go_twice.update(sender.unmarked.items())
        self.later.append((self.now + self.chaos_rnd.uniform(0, self.session_seconds),
                           "rebalance"))
        if len(self.senders) < len(OWNERS):
            self.later.append((self.now + self.chaos_rnd.uniform(0, 3 * self.lease_seconds),
                               "join"))

    def assign(self, partitions: dict[str, list[tuple[str, int]]]) -> None:
        """A rebalance that gives each owner these partitions."""
        for sender in self.senders:
            if sender.alive:
                sender.source.revoke()
        for sender in self.senders:
            for tp in partitions.get(sender.owner, ()):
                sender.source.assign(tp)

    def rebalance(self) -> None:
        """Eager: every live member's partitions revoked, then dealt out
        again among them, each read from its last commit."""
        members = [sender for sender in self.senders if sender.alive]
        for member in members:
            member.source.revoke()
        if not members:
            return
        for topic in (JOBS, RETRY):
            for partition in range(self.broker.partitions):
                member = members[0] if len(members) == 1 else self.chaos_rnd.choice(members)
                member.source.assign((topic, partition))

    def point(self, sender: "Sender | None", name: str, kind: str = STORE_POINT) -> None:
        """Where `sender` is about to do (or has just done) one operation."""
        if sender is None:
            return
        if sender.countdown is not None:
            sender.countdown -= 1
            if sender.countdown < 0:
                sender.countdown = None
                self._act(sender, name, "others")
        for entry in self.script:
            owner, where, skip, action = entry
            if where == name and owner in (None, sender.owner):
                if skip:
                    entry[2] -= 1
                    continue
                self.script.remove(entry)
                return self._act(sender, name, action)
        if not self.chaos or (self.chaos_points is not None and name not in self.chaos_points):
            return
        roll = self.chaos_rnd.random()
        if self.deaths_left and roll < self.chaos.get("die", 0):
            self.deaths_left -= 1
            return self._act(sender, name, "die")
        roll = self.chaos_rnd.random()
        if kind in (STORE_POINT, "flush") and self.failures_left \
                and roll < self.chaos.get("fail", 0):
            self.failures_left -= 1
            return self._act(sender, name, "fail")
        if self.chaos_rnd.random() < self.chaos.get("interleave", 0):
            self._act(sender, name, "others")

    def _act(self, sender, name, action) -> None:
        if action == "die":
            raise Died(name)
        if action == "fail":
            sender.failed = True
            raise ConnectionFailure(f"{name}: the database is away (on purpose)")
        if action == "others":
            if not self.others_left:
                return
            self.others_left -= 1
            for other in self.senders:
                if other.alive and not other.running:
                    self.run(other)
            return
        action(sender)

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
        twice = {sent: times for sent, times in Counter(self.sends).items()
                 if times > 1 and sent not in self.may_go_twice}
        twice.update({sent: len(ids) for sent, ids in self.message_ids.items() if len(ids) > 1})
        return twice

    def published(self, events) -> None:
        """What a sender flushed is out: its retries and the parked jobs it put
        back, and its holds' asks."""
        for topic, event in events:
            if event.type == "send.job":
                self.retries.setdefault(event.data["job_id"], []).append(
                    (event.id, event.data["attempt"]))
            if event.type == "delivery.held":
                self.answers_due.append((self.now + self.answer_delay, event.account_id,
                                         event.data))

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
        if any(parked_job_id(doc) == job.job_id and doc["data"]["attempt"] >= job.attempt
               for doc in self.parked.values()):
            return True
        if job.job_id in self.held_jobs:
            return True  # contacts will answer with the job
        return any(event_id != event.id and attempt >= job.attempt  # carried on by a copy
                   for event_id, attempt in self.retries.get(job.job_id, ()))

    # ------------------------------------------------ CampaignStore (reads)
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

    # --------------------------------------------------- Messenger (the relay)
    def submit(self, tasks, deadline, sender):
        self.point(sender, "smtp.submit", kind="relay")
        for task in tasks:
            job = task.job
            task.outgoing = task.compose()
            reply = self.replies.pop((job.job_id, job.attempt), 250)
            if reply == UNTRIED:
                task.outcome = smtp.RELEASED
                continue
            claim = self.claims.get(job.job_id, {})
            if claim.get("owner") != sender.owner or claim.get("deferred") \
                    or claim.get("attempt") != job.attempt or job.job_id in self.deliveries:
                self.violations.append(f"t+{self.now - START:.2f} {sender.owner} sends "
                                       f"{job.job_id} attempt {job.attempt} on claim {claim}"
                                       f"{' (final)' if job.job_id in self.deliveries else ''}")
            task.code, task.outcome, task.reply = reply, smtp.classify(reply), f"{reply} ok"
            sent = (job.job_id, job.attempt)
            self.sends.append(sent)
            self.message_ids.setdefault(sent, set()).add(task.outgoing.message_id)
            sender.batch_sends.append(sent)
            sender.unrecorded[job.job_id] = job.attempt
        sender.in_flight = list(tasks)
        self.point(sender, "smtp.sent", kind="relay")

    def collect(self, at_least, timeout=0.5, sender=None):
        done, sender.in_flight = sender.in_flight, []
        return done


class Sender:
    """One sender process: its own SendLoop, Engine (through its Port),
    producer and member of the group."""

    def __init__(self, world: World, owner: str):
        self.world, self.owner = world, owner
        self.alive, self.running, self.failed = True, False, False
        self.countdown: int | None = None  # points to go before the others run
        self.batch_sends: list[tuple[str, int]] = []
        self.unrecorded: dict[str, int] = {}  # job id -> attempt: sent, not recorded
        self.unmarked: dict[str, int] = {}  # job id -> attempt: recorded deferred, not marked
        self.campaign_cache: dict[str, tuple[float, Campaign]] = {}
        self.in_flight: list[smtp.SendTask] = []
        self.pending: list = []  # (topic, event) published, not flushed
        self.producer = SenderProducer(self)
        self.source = MemberSource(self)
        db = Database(world.db, on_point=lambda name: world.point(self, name),
                      ferretdb=world.ferretdb)
        self.deliveries = DeliveryStore(db, owner, world.lease_seconds)
        self.parked, self.held = ParkedJobs(db), HeldJobs(db)
        port = Port(world, self)
        clock = world.clock
        self.engine = Engine(campaigns=port, contacts=port, deliveries=port, parked=port,
                             held=port, limiter=RateLimiter(MemoryCounter(), clock=clock),
                             slots=NoDomainSlots(), messenger=port,
                             composer_for=lambda campaign: PlainComposer(),
                             publisher=self.producer,
                             settings=EngineSettings(**world.settings),
                             contact_view=ContactView(StateLoopProgress(world), clock=clock),
                             clock=clock)
        policy = self.engine.retry
        self.engine.retry = RetryOnClock(policy.max_attempts, policy.base_seconds,
                                         policy.max_seconds, clock=clock, rng=world.rnd.random)
        self.loop = SendLoop(self.source, self.engine, self.producer, service="sender",
                             group=GROUP, dead_letters=self.producer.sink, clock=clock,
                             max_records=world.max_records)


class Port:
    """The world's stores and relay, as one sender calls them (its owner)."""

    def __init__(self, world: World, sender: Sender):
        self.world, self.sender = world, sender

    def _point(self, name):
        self.world.point(self.sender, name)

    def get_many(self, campaign_ids):
        """CampaignStore.get_many: a known campaign as this sender read it
        within the cache's seconds; an unknown one is not cached."""
        self._point("campaigns.get")
        world, cache = self.world, self.sender.campaign_cache
        found = {}
        for campaign_id in set(campaign_ids):
            cached = cache.get(campaign_id)
            if cached and world.now - cached[0] < world.campaign_cache_seconds:
                found[campaign_id] = cached[1]
                continue
            found[campaign_id] = world._campaign(campaign_id)
            if found[campaign_id] is not None:
                cache[campaign_id] = (world.now, found[campaign_id])
        return found

    def erased_accounts(self, account_ids):
        self._point("campaigns.erased")
        return self.world.erased_accounts(account_ids)

    def blocked(self, jobs):
        self._point("contacts.blocked")
        return self.world.blocked(jobs)

    def claim(self, jobs):
        """DeliveryStore.claim; a job held by a live claim of this sender's
        own, which it never gave back, is a violation (but after a failure)."""
        world, sender = self.world, self.sender
        claimed, finished, held = sender.deliveries.claim(jobs)
        for job in held:
            doc = world.claims.get(job.job_id)
            if doc and doc["owner"] == sender.owner and not doc.get("deferred") \
                    and doc["claimed_at"].timestamp() > world.now - world.lease_seconds \
                    and not sender.failed:
                world.violations.append(f"t+{world.now - START:.2f} {job.job_id} held by "
                                        f"a live claim of {sender.owner}'s own")
        return claimed, finished, held

    def deferred(self, jobs):
        sender = self.sender
        try:
            sender.deliveries.deferred(jobs)
        except ConnectionFailure:  # the engine goes on: a copy read again is tried later
            self.world.may_go_twice.update((job.job_id, job.attempt) for job in jobs)
            raise
        for job in jobs:
            sender.unmarked.pop(job.job_id, None)

    def record(self, outcomes, patience=0.0):
        world, sender = self.world, self.sender
        world.record_calls += 1
        if world.record_calls in world.fail_record_calls:
            sender.failed = True
            raise ConnectionError("the database is away (on purpose)")
        try:
            sender.deliveries.record(outcomes, patience)
        except ConnectionFailure:
            sender.failed = True
            raise
        for job_id, state, fields in outcomes:
            sender.unrecorded.pop(job_id, None)
            if state == DEFERRED:
                sender.unmarked[job_id] = fields["attempt"]

    def park(self, jobs, erased=frozenset(), due_at=None):
        return self.sender.parked.park(jobs, erased, due_at)

    def campaigns(self):
        return self.sender.parked.campaigns()

    def take(self, campaign_id, limit=1000, exclude=(), due_by=None):
        return self.sender.parked.take(campaign_id, limit, exclude, due_by)

    def remove(self, docs):
        return self.sender.parked.remove(docs)

    def forget_account(self, account_id):
        return self.sender.parked.forget_account(account_id)

    def forget_recipient(self, account_id, contact_id):
        return self.sender.parked.forget_recipient(account_id, contact_id)

    def erased_jobs(self, jobs):
        self._point("contacts.blocked")
        return {job_id for job_id, why in self.world.blocked(jobs).items() if why == "erased"}

    def forget_contacts(self, job_ids):
        return self.sender.deliveries.forget_contacts(job_ids)

    def hold(self, jobs, ask_again_at):
        return self.sender.held.hold(jobs, ask_again_at)

    def open_holds(self, job_ids):
        return self.sender.held.open_holds(job_ids)

    def close(self, tokens):
        return self.sender.held.close(tokens)

    def answered(self, job_ids):
        return self.sender.held.answered(job_ids)

    def due(self, now, limit=500):
        return self.sender.held.due(now, limit)

    def asked_again(self, job_id, ask_again_at):
        return self.sender.held.asked_again(job_id, ask_again_at)

    def submit(self, tasks, deadline):
        return self.world.submit(tasks, deadline, self.sender)

    def collect(self, at_least, timeout=0.5):
        return self.world.collect(at_least, timeout, self.sender)


class SenderProducer(EventProducer):
    """The sender's producer (the engine's publisher and the loop's): what
    it publishes is out at its flush, and lost if it dies before."""

    def __init__(self, sender: Sender):
        super().__init__(sender.world.broker.sink())
        self.sender = sender

    def publish(self, topic, event, key=None):
        self.sender.world.point(self.sender, "kafka.publish", kind="kafka")
        super().publish(topic, event, key)
        self.sender.pending.append((topic, event))

    def flush(self, timeout=None):
        """A failure (the broker away) acknowledges some of what was sent,
        in order, and loses the rest (RdKafkaSink raises DeliveryFailed)."""
        sender, world = self.sender, self.sender.world
        try:
            world.point(sender, "kafka.flush", kind="flush")
        except ConnectionFailure:
            buffer = self.sink._buffer
            out = world.chaos_rnd.randrange(len(buffer) + 1)
            delivered = {value for _, _, _, headers in buffer[:out]
                         for name, value in headers or () if name == "ce_id"}
            del buffer[out:]
            self.sink.flush()  # the part acknowledged (dead letters too, in this sink)
            pending, sender.pending = sender.pending, []
            world.published([(topic, event) for topic, event in pending
                             if event.id.encode() in delivered])
            raise DeliveryFailed(f"{out} of the messages out (on purpose)") from None
        super().flush(timeout)
        pending, sender.pending = sender.pending, []
        world.published(pending)


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


class MemberSource(InMemorySource):
    """A member of the group reading send.jobs and send.retry: the
    partitions the world's rebalances give it, every commit checked first."""

    def __init__(self, sender: Sender):
        super().__init__(sender.world.broker, [JOBS, RETRY], GROUP)
        self.world, self.owner = sender.world, sender.owner
        self.position = {}  # nothing assigned until a rebalance

    def _mine(self, tp):
        if tp not in self.position:
            raise RuntimeError(f"{tp} is not assigned to this member")

    def commit(self, offsets, wait=True):
        """The group's coordinator takes a member's commit of any partition
        (it checks the generation, not the assignment): one not this
        member's is a violation, committed all the same."""
        for tp in offsets:
            if tp not in self.position:
                self.world.violations.append(f"t+{self.world.now - START:.2f} {self.owner} "
                                             f"commits {tp}, not its own")
        self.world.check_commit(offsets)
        super().commit(offsets)

    def seek(self, tp, offset):
        self._mine(tp)
        super().seek(tp, offset)

    def pause(self, tp):
        self._mine(tp)
        super().pause(tp)

    def resume(self, tp):
        self._mine(tp)
        super().resume(tp)

    def revoke(self):
        if self.on_revoke:
            self.on_revoke(list(self.position))
        self.position, self.paused = {}, set()

    def assign(self, tp):
        """Read from its last commit, unpaused (RdKafkaSource._assigned)."""
        self.position[tp] = self.broker.committed[self.group_id].get(tp, 0)


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
        return Outgoing(job, b"msg", "b+x@d", message_id(job.job_id, "d"), False)


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
