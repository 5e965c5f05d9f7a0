"""The engine's flow with fakes (no Kafka, MongoDB or SMTP)."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

from services.sender import smtp
from services.sender.compose import Outgoing
from services.sender.domain import Campaign, Job, Limits
from services.sender.engine import DONE, Engine, EngineSettings, Hold
from services.sender.throttle import MemoryCounter, RateLimiter

ACCOUNT = "a" * 32


def campaign(cid="c1", status="sending", limits=None) -> Campaign:
    return Campaign(cid, ACCOUNT, {"version": 1, "subject": "s", "html": "h"},
                    {"from_email": "n@sandesh.test"}, limits or Limits(), status=status)


def job(n: int, cid="c1", attempt=0) -> Job:
    return Job(f"j{n}", cid, f"p{n}", ACCOUNT, None, f"r{n}@example.com", None, {}, attempt,
               None, False, None, data={"job_id": f"j{n}"})


class Fakes:
    def __init__(self, campaigns, replies=None, blocked=None, finished=None, erased=()):
        self.campaigns_by_id = {c.campaign_id: c for c in campaigns}
        self.erased = set(erased)
        self.replies = replies or {}          # job id -> SMTP code (default 250)
        self.blocked_ids = blocked or {}
        self.finished = finished or {}
        self.records, self.parked_jobs, self.published, self.claimed = [], [], [], []
        self.held_jobs, self.answered_ids, self.order = {}, [], []

    # stores
    def get_many(self, ids):
        return {i: self.campaigns_by_id.get(i) for i in ids}

    def erased_accounts(self, account_ids):
        return set(account_ids) & self.erased

    def blocked(self, jobs):
        return {j.job_id: self.blocked_ids[j.job_id] for j in jobs if j.job_id in self.blocked_ids}

    erased_later: set = set()  # job ids whose contact is erased once screened

    def erased_jobs(self, jobs):
        return {j.job_id for j in jobs if j.job_id in self.erased_later
                or self.blocked_ids.get(j.job_id) == "erased"}

    def forget_contacts(self, job_ids):
        self.forgotten = getattr(self, "forgotten", []) + sorted(job_ids)

    def forget_recipient(self, account_id, contact_id):
        self.recipients_forgotten = getattr(self, "recipients_forgotten", []) + [contact_id]

    def claim(self, jobs):
        self.claimed.extend(j.job_id for j in jobs)
        elsewhere = getattr(self, "claimed_elsewhere", set())
        return ([j for j in jobs if j.job_id not in self.finished and j.job_id not in elsewhere],
                {j.job_id: self.finished[j.job_id] for j in jobs if j.job_id in self.finished},
                [j for j in jobs if j.job_id in elsewhere])

    def record(self, outcomes, patience=0.0):
        self.records.extend(outcomes)

    def deferred(self, jobs):
        self.order.append(("deferred", [j.job_id for j in jobs]))

    def hold(self, jobs, ask_again_at):
        for j in jobs:  # a new hold replaces an open one, as HeldJobs does
            self.holds_made = getattr(self, "holds_made", 0) + 1
            self.held_jobs[j.job_id] = {"_id": j.job_id, "account_id": j.account_id,
                                        "campaign_id": j.campaign_id, "contact_id": j.contact_id,
                                        "list_id": j.list_id, "attempt": j.attempt,
                                        "hold": f"{self.holds_made:032x}",
                                        "asks": 1, "ask_again_at": ask_again_at}
        return [self.held_jobs[j.job_id] for j in jobs]

    def open_holds(self, job_ids):
        return {i: self.held_jobs[i].get("hold") for i in job_ids if i in self.held_jobs}

    def close(self, tokens):
        self.order.append(("close", dict(tokens)))
        for job_id, token in tokens.items():
            if self.held_jobs.get(job_id, {}).get("hold") == token:
                del self.held_jobs[job_id]

    def answered(self, job_ids):
        self.answered_ids.extend(job_ids)
        for job_id in job_ids:
            self.held_jobs.pop(job_id, None)

    def due(self, now, limit=500):
        return [d for d in self.held_jobs.values() if d["ask_again_at"] <= now][:limit]

    def asked_again(self, job_id, ask_again_at):
        self.held_jobs[job_id].update(ask_again_at=ask_again_at,
                                      asks=self.held_jobs[job_id]["asks"] + 1)

    # domain slots (domain_slots.DomainSlots): free unless listed as taken elsewhere
    held: dict = {}

    def take(self, wants):
        self.slot_calls = getattr(self, "slot_calls", []) + [("take", dict(wants))]
        elsewhere = getattr(self, "slots_taken_elsewhere", set())
        self.held = dict(self.held)
        for key, (limit, want) in wants.items():
            if key not in elsewhere:
                self.held[key] = [f"{key}#{n}" for n in range(max(want, len(self.held.get(key, ()))))]
        return {key: len(self.held.get(key, ())) for key in wants}

    def give_back(self, keys=None):
        keys = list(self.held) if keys is None else [k for k in keys if k in self.held]
        if not keys:
            return  # as DomainSlots: nothing held, nothing done
        self.slot_calls = getattr(self, "slot_calls", []) + [("give_back", sorted(keys))]
        self.sent_before_give_back = len(getattr(self, "tasks_sent", []))
        self.held = {k: v for k, v in self.held.items() if k not in keys}

    def abandon(self):
        self.slot_calls = getattr(self, "slot_calls", []) + [("abandon",)]
        self.held = {}

    def keep(self, key, count):
        if count <= 0:
            self.give_back([key])
        else:
            self.held = {**self.held, key: self.held[key][:count]}

    def park(self, jobs, erased=frozenset(), due_at=None):
        self.parked_jobs.extend(jobs)
        self.parked_erased = set(erased)
        self.parked_due = {**getattr(self, "parked_due", {}),
                           **{j: at.timestamp() for j, at in (due_at or {}).items()}}

    # messenger
    def submit(self, tasks, deadline):
        for task in tasks:
            task.outgoing = task.compose()
            task.code = self.replies.get(task.job.job_id, 250)
            task.outcome = smtp.classify(task.code)
            task.reply = f"{task.code} for <{task.job.email}>"
        self.tasks = list(tasks)
        self.tasks_sent = getattr(self, "tasks_sent", []) + list(tasks)

    def collect(self, at_least, timeout=0.5):
        done, self.tasks = getattr(self, "tasks", []), []
        return done

    def publish(self, topic, event, key=None):
        self.published.append((topic, event.type, event.data))

    def flush(self):
        self.order.append(("flush", len(self.published)))

    def engine(self, counter=None, clock=lambda: 1000.25, share=1.0, **settings):
        """counter: the rate windows, shared with another engine (sender)."""
        composer = type("C", (), {"compose": lambda self, j: Outgoing(j, b"msg", "b+x@d", f"<{j.job_id}@d>", False)})()
        limiter = RateLimiter(counter or MemoryCounter(), clock=clock)
        limiter.share = share
        return Engine(campaigns=self, contacts=self, deliveries=self, parked=self, held=self,
                      limiter=limiter, slots=self, messenger=self, composer_for=lambda c: composer,
                      publisher=self, settings=EngineSettings(**settings), clock=clock)

    def types(self, topic="delivery.events"):
        return [(t, d["job_id"]) for top, t, d in self.published if top == topic]


def test_sent_failed_deferred_and_dead():
    fakes = Fakes([campaign()], replies={"j2": 550, "j3": 451, "j4": 421})
    result = fakes.engine(max_attempts=2).handle([[job(1), job(2), job(3), job(4, attempt=1)]])
    assert result == {"j1": DONE, "j2": DONE, "j3": DONE, "j4": DONE}
    assert fakes.types() == [("delivery.sent", "j1"), ("delivery.failed", "j2"),
                             ("delivery.deferred", "j3"), ("delivery.failed", "j4")]
    retry = [d for top, _, d in fakes.published if top == "send.retry"]
    assert [(d["job_id"], d["attempt"]) for d in retry] == [("j3", 1)] and retry[0]["not_before"]
    assert [d["job"]["job_id"] for top, _, d in fakes.published if top == "send.dlq"] == ["j4"]
    assert {j: s for j, s, _ in fakes.records} == {"j1": "sent", "j2": "failed", "j3": "deferred",
                                                  "j4": "failed"}
    failed = [d for top, t, d in fakes.published if t == "delivery.failed"][0]
    assert failed["smtp_code"] == 550 and "r2@" not in str(failed)
    assert "smtp_reply" not in failed  # the reply's text stays in the record
    record = {j: fields for j, _, fields in fakes.records}["j2"]
    assert record["smtp_reply"] == "550 for <<email>>"


def test_deferred_jobs_are_marked_so_once_their_retries_are_out():
    """The mark lets a copy of the job read again be dropped: written before
    the retry was out, a crash in between would lose the job."""
    fakes = Fakes([campaign()], replies={"j2": 451, "j3": 421})
    fakes.engine().handle([[job(1), job(2), job(3, attempt=1)]])
    retries = len([top for top, _, _ in fakes.published if top == "send.retry"])
    assert retries == 2
    flushed = fakes.order.index(("deferred", ["j2", "j3"])) - 1
    assert fakes.order[flushed][0] == "flush" and fakes.order[flushed][1] >= retries


def test_a_campaigns_domain_concurrency_is_split_between_its_senders():
    """Each sender reads its share of send.jobs, so of every campaign."""
    limits = {"per_domain_concurrency": 4}
    for share, expected in ((1.0, 4), (0.5, 2), (2 / 6, 1), (1 / 6, 1)):
        fakes = Fakes([campaign(limits=Limits(**limits))])
        fakes.engine(share=share).handle([[job(1)]])
        assert [t.domain_limit for t in fakes.tasks_sent] == [expected], share
    fakes = Fakes([campaign(limits=Limits(per_domain_concurrency=6))])
    fakes.engine(share=2 / 6).handle([[job(1)]])   # 6 x (2/6) is 2, not 1.999...
    assert [t.domain_limit for t in fakes.tasks_sent] == [2]
    fakes = Fakes([campaign()])
    fakes.engine(share=0.5, default_domain_concurrency=8).handle([[job(1)]])
    assert [t.domain_limit for t in fakes.tasks_sent] == [8]   # the operator's, per process


def job_to(n: int, domain: str, cid="c1") -> Job:
    return Job(f"j{n}", cid, f"p{n}", ACCOUNT, None, f"r{n}@{domain}", None, {}, 0,
               None, False, None, data={"job_id": f"j{n}"})


def slotted(fakes, share=0.5, partitions=4, **settings):
    engine = fakes.engine(share=share, **settings)
    engine.limiter.partitions = partitions
    return engine


def test_a_limit_below_the_partitions_is_counted_in_slots_by_every_sender():
    """A limit of 1 between two senders was one transaction each: twice the
    limit. A sender now holds one of the limit's slots for each domain of
    the batch, and gives it back once the batch's transactions are over."""
    fakes = Fakes([campaign(limits=Limits(per_domain_concurrency=1))])
    result = slotted(fakes).handle([[job_to(1, "a.test"), job_to(2, "a.test"),
                                     job_to(3, "b.test")]])
    assert result == {"j1": DONE, "j2": DONE, "j3": DONE}
    assert [t.domain_limit for t in fakes.tasks_sent] == [1, 1, 1]
    assert fakes.slot_calls == [("take", {("c1", "a.test"): (1, 1), ("c1", "b.test"): (1, 1)}),
                                ("give_back", [("c1", "a.test"), ("c1", "b.test")])]
    assert fakes.sent_before_give_back == 3


def test_a_sender_takes_its_share_of_the_slots_at_most_and_no_more_than_it_has_jobs():
    # shares of 1/2, 1/4 and 1/4 over 4 partitions, a limit of 2: the half
    # needed no slot and sent one, the quarters took both: 3 of 2
    # share rounded up: two senders at half of a limit of 3 took one each,
    # 2 of 3; the slots' unique ids keep the total within the limit
    fakes = Fakes([campaign(limits=Limits(per_domain_concurrency=3))])
    slotted(fakes, share=0.5).handle([[job_to(n, "a.test") for n in range(5)] + [job_to(9, "b.test")]])
    assert fakes.slot_calls[0] == ("take", {("c1", "a.test"): (3, 2), ("c1", "b.test"): (3, 1)})
    assert sorted(t.domain_limit for t in fakes.tasks_sent) == [1] + [2] * 5


def test_slots_beyond_a_domains_sends_go_back_and_the_sends_keep_what_is_left():
    fakes = Fakes([campaign(limits=Limits(per_domain_concurrency=3))],
                  blocked={"j1": "unsubscribed", "j2": "unsubscribed"})
    slotted(fakes, share=0.75).handle([[job_to(n, "a.test") for n in range(4)]])
    assert fakes.slot_calls[0] == ("take", {("c1", "a.test"): (3, 3)})
    assert [t.domain_limit for t in fakes.tasks_sent] == [2, 2]   # two sends: one slot back


def test_a_domain_slot_held_elsewhere_holds_the_partition_before_any_claim():
    fakes = Fakes([campaign(limits=Limits(per_domain_concurrency=1))])
    fakes.slots_taken_elsewhere = {("c1", "a.test")}
    result = slotted(fakes, domain_slot_recheck_seconds=0.25).handle(
        [[job_to(1, "b.test"), job_to(2, "a.test"), job_to(3, "b.test")],
         [job_to(4, "a.test")]])
    assert result["j1"] is DONE and "j3" not in result  # j3 waits behind j2
    for held in ("j2", "j4"):
        assert result[held] == Hold(1000.25 + 0.25, "domain concurrency")
    assert fakes.claimed == ["j1"]  # never claimed only to be given back


def test_slots_are_needed_only_where_a_share_could_come_to_less_than_one():
    for limit, share, partitions in ((4, 0.5, 4), (12, 0.25, 12), (1, 1.0, 4)):
        fakes = Fakes([campaign(limits=Limits(per_domain_concurrency=limit))])
        assert slotted(fakes, share=share, partitions=partitions).handle([[job(1)]]) == {"j1": DONE}
        assert not getattr(fakes, "slot_calls", [])
    fakes = Fakes([campaign()])  # no campaign limit: the operator's cap per process
    assert slotted(fakes, share=0.1).handle([[job(1)]]) == {"j1": DONE}
    assert not getattr(fakes, "slot_calls", [])


def test_the_slots_of_a_domain_with_nothing_to_send_go_back_before_the_sends():
    fakes = Fakes([campaign(limits=Limits(per_domain_concurrency=1))],
                  blocked={"j2": "unsubscribed"})
    slotted(fakes).handle([[job_to(1, "a.test"), job_to(2, "b.test")]])
    assert fakes.slot_calls[1] == ("give_back", [("c1", "b.test")])


def test_a_batch_that_fails_before_sending_gives_its_slots_back_and_one_that_fails_after_keeps_them():
    """Kept, until their lease runs out: its transactions may still be on
    the wire, and giving the slots back let another sender open more."""
    fakes = Fakes([campaign(limits=Limits(per_domain_concurrency=1))])
    engine = slotted(fakes)

    def down(outcomes, patience=0.0):
        if any(state == "sent" for _, state, _ in outcomes):
            raise ConnectionError("database away")
    fakes.record = down
    try:
        engine.handle([[job(1)]])
    except ConnectionError:
        pass
    assert [c[0] for c in fakes.slot_calls] == ["take", "abandon"]
    del fakes.record
    fakes.blocked = lambda jobs: (_ for _ in ()).throw(ConnectionError("database away"))
    try:
        engine.handle([[job(1)]])
    except ConnectionError:
        pass
    assert [c[0] for c in fakes.slot_calls] == ["take", "abandon", "take", "give_back"]
    assert not fakes.held


def test_a_database_blip_while_marking_deferrals_fails_nothing():
    """Failing the batch for the mark made it run again: the deferred jobs,
    unmarked and unclaimed, were sent again at once."""
    fakes = Fakes([campaign()], replies={"j2": 451})

    def down(jobs):
        raise ConnectionError("database away")
    fakes.deferred = down
    result = fakes.engine().handle([[job(1), job(2)]])
    assert result == {"j1": DONE, "j2": DONE}
    assert [top for top, _, _ in fakes.published if top == "send.retry"] == ["send.retry"]


def test_a_batch_without_deferrals_marks_nothing():
    fakes = Fakes([campaign()], replies={"j2": 550})
    fakes.engine().handle([[job(1), job(2)]])
    assert not [entry for entry in fakes.order if entry[0] == "deferred"]


def test_unknown_campaign_holds_the_rest_of_its_partition_and_paused_jobs_are_parked():
    fakes = Fakes([campaign("c1", status="paused"), campaign("c2")])
    result = fakes.engine().handle([[job(1, "c1"), job(2, "c2")], [job(3, "nope"), job(4, "c2")]])
    assert result["j1"] is DONE and [j.job_id for j in fakes.parked_jobs] == ["j1"]
    assert result["j2"] is DONE
    assert isinstance(result["j3"], Hold) and "j4" not in result  # waits behind j3


def test_an_unknown_campaign_is_looked_at_again_soon_then_as_any_other_hold():
    # Its jobs may come before its campaign.launched: the first message of
    # every campaign waited out the 2 s hold.
    now = [1000.0]
    fakes = Fakes([campaign("c2")])
    engine = fakes.engine(clock=lambda: now[0], unknown_campaign_recheck_seconds=0.1,
                          unknown_campaign_patience_seconds=10.0, held_recheck_seconds=2.0)

    def hold_for(job_number):
        hold = engine.handle([[job(job_number, "late")]])[f"j{job_number}"]
        assert isinstance(hold, Hold) and hold.reason == "campaign not known yet"
        return round(hold.until - now[0], 3)

    assert hold_for(1) == 0.1
    now[0] += 9.9
    assert hold_for(2) == 0.1
    now[0] += 0.2    # still unknown after its patience: no longer looked at every 0.1 s
    assert hold_for(3) == 2.0
    fakes.campaigns_by_id["late"] = campaign("late")
    assert engine.handle([[job(4, "late")]]) == {"j4": DONE}


def test_jobs_of_an_erased_account_are_dropped_and_hold_nobody_up():
    gone = "g" * 32
    fakes = Fakes([campaign("c2")], erased={gone})
    erased_job = Job("j1", "c-gone", "p1", gone, None, "r1@example.com", None, {}, 0, None,
                     False, None, data={"job_id": "j1"})
    result = fakes.engine().handle([[erased_job, job(2, "c2")]])
    assert result == {"j1": DONE, "j2": DONE}  # its campaign is unknown, yet nothing is held
    assert fakes.types() == [("delivery.sent", "j2")]
    assert [j for j, _, _ in fakes.records] == ["j2"]


def test_cancelled_and_blocked_are_skipped_and_finished_jobs_announced_again():
    finished = {"j3": {"event": {"type": "delivery.sent", "data": {"job_id": "j3"}}}}
    fakes = Fakes([campaign("c1", status="cancelled"), campaign("c2")],
                  blocked={"j2": "unsubscribed"}, finished=finished)
    fakes.engine().handle([[job(1, "c1"), job(2, "c2"), job(3, "c2")]])
    assert fakes.types() == [("delivery.sent", "j3"), ("delivery.skipped", "j1"),
                             ("delivery.skipped", "j2")]
    reasons = {d["job_id"]: d["reason"] for _, t, d in fakes.published if t == "delivery.skipped"}
    assert reasons == {"j1": "cancelled", "j2": "unsubscribed"}


def test_a_job_skipped_for_an_erased_contact_names_neither_the_contact_nor_its_domain():
    """The erasure replaced the contact id in the records that existed; a
    job still queued was skipped after it, and its record and event named
    the real id and the recipient's domain, which nothing would replace."""
    fakes = Fakes([campaign()], blocked={"j1": "erased", "j2": "unsubscribed"})
    fakes.engine().handle([[job(1), job(2)]])
    skipped = {d["job_id"]: d for _, t, d in fakes.published if t == "delivery.skipped"}
    assert skipped["j1"]["contact_id"].startswith("erased-") and "mailbox_provider" not in \
        skipped["j1"]
    assert skipped["j2"]["contact_id"] == "p2" and skipped["j2"]["mailbox_provider"] == "other"
    assert not any("recipient_domain" in d for d in skipped.values())
    record = {j: fields for j, _, fields in fakes.records}["j1"]
    assert record["event"]["data"]["contact_id"] == skipped["j1"]["contact_id"]


def test_an_erased_contacts_job_of_a_paused_campaign_is_parked_without_its_address():
    fakes = Fakes([campaign("c1", status="paused")], blocked={"j1": "erased", "j2": "unsubscribed"})
    fakes.engine().handle([[job(1, "c1"), job(2, "c1")]])
    assert [j.job_id for j in fakes.parked_jobs] == ["j1", "j2"]
    assert fakes.parked_erased == {"j1"}   # only erasure strips the address now


def test_a_dead_job_found_finished_goes_to_the_dead_letters_again():
    """Its send.dead and delivery.failed went out together; when their flush
    failed, the redelivered job was found finished and only delivery.failed
    was published again: the dead letter, the one copy of the job, was lost."""
    dead = {"event": {"type": "delivery.failed",
                      "data": {"job_id": "j4", "reason": "retries exhausted"}},
            "smtp_reply": "421 try later"}
    sent = {"event": {"type": "delivery.sent", "data": {"job_id": "j5"}}}
    fakes = Fakes([campaign()], finished={"j4": dead, "j5": sent})
    fakes.engine(max_attempts=2).handle([[job(4, attempt=1), job(5)]])
    assert fakes.types() == [("delivery.failed", "j4"), ("delivery.sent", "j5")]
    letters = [d for top, _, d in fakes.published if top == "send.dlq"]
    assert [d["job"]["job_id"] for d in letters] == ["j4"]
    assert letters[0]["reason"] == "2 attempts: 421 try later"


def test_rate_limit_sends_what_the_window_allows_and_parks_the_rest_until_the_next():
    counter, limits = MemoryCounter(), Limits(per_second=8)
    other = Fakes([campaign(limits=limits)])
    other.engine(counter).handle([[job(n) for n in range(10, 16)]])  # another sender: 6 of 8
    fakes = Fakes([campaign(limits=limits), campaign("c2")])
    result = fakes.engine(counter).handle([[job(1), job(2), job(3), job(4, "c2")]])
    # j3 is settled by parking it: its partition goes on (j4, another campaign's)
    assert result == {"j1": DONE, "j2": DONE, "j3": DONE, "j4": DONE}
    assert fakes.types() == [("delivery.sent", "j1"), ("delivery.sent", "j2"),
                             ("delivery.sent", "j4")]
    assert [j.job_id for j in fakes.parked_jobs] == ["j3"] and fakes.parked_due == {"j3": 1001.0}
    assert [j for j, state, _ in fakes.records if state == "released"] == ["j3"]


def test_two_senders_split_a_campaigns_window_and_the_rest_goes_from_its_middle():
    """Until the middle of a window each takes its share (half): the first
    to ask does not get the whole second while the other gets nothing.
    From the middle, what one leaves the other may take."""
    counter, limits, now = MemoryCounter(), Limits(per_second=8), [1000.1]
    first, second = (Fakes([campaign(limits=limits)]) for _ in range(2))
    engines = [f.engine(counter, clock=lambda: now[0], share=0.5) for f in (first, second)]
    engines[0].handle([[job(n) for n in range(1, 9)]])
    assert first.parked_due == {f"j{n}": 1000.5 for n in range(5, 9)}
    engines[1].handle([[job(n) for n in range(11, 19)]])
    assert [len(f.types()) for f in (first, second)] == [4, 4]
    now[0] = 1000.6  # from the middle: the rest, but the other took its share
    engines[0].handle([[job(n) for n in range(5, 9)]])
    assert first.parked_due["j5"] == 1001.0
    assert sorted(first.claimed) == ["j1", "j2", "j3", "j4"]  # nothing claimed to give back
    now[0] = 1001.1                                           # the next window: the second
    engines[0].handle([[job(n) for n in range(5, 9)]])        # has nothing left to send
    now[0] = 1001.5
    engines[0].handle([[job(9), job(10)]])
    assert len(first.types()) == 4 + 6


def test_a_batch_claims_no_more_of_a_campaign_than_one_window_grants():
    limited = campaign("c1", limits=Limits(per_second=2))
    fakes = Fakes([limited, campaign("c2"), campaign("c3", status="cancelled",
                                                     limits=Limits(per_second=1))])
    result = fakes.engine().handle([[job(1), job(2), job(3), job(4, "c2")],
                                    [job(5, "c2"), job(6, "c1")],
                                    [job(7, "c3"), job(8, "c3")]])
    # j3 and j6 would only be claimed to be given back: parked, unclaimed,
    # and j4 goes on behind j3; a cancelled campaign is not paced
    assert sorted(fakes.claimed) == ["j1", "j2", "j4", "j5", "j7", "j8"]
    assert all(result[f"j{n}"] is DONE for n in range(1, 9))
    assert fakes.parked_due == {"j3": 1001.0, "j6": 1001.0}
    assert not [r for r in fakes.records if r[1] == "released"]
    assert [d for _, t, d in fakes.published if t == "delivery.skipped"][0]["reason"] == "cancelled"


def test_jobs_beyond_the_hourly_quota_are_parked_a_minute_at_a_time_not_put_on_send_retry():
    """On send.retry, not due for up to an hour, they held every account's
    retries behind them until the top of the hour. Parked until the next
    minute, they go back as the rolling hour has room (RateLimiter.pace)."""
    fakes = Fakes([campaign(limits=Limits(per_hour=2)), campaign("c2")])
    result = fakes.engine().handle([[job(1), job(2), job(3)], [job(4, "c2")]])
    assert all(result[f"j{n}"] is DONE for n in range(1, 5))
    assert [t.job.job_id for t in fakes.tasks_sent] == ["j1", "j2", "j4"]
    assert fakes.parked_due == {"j3": 1020.0}  # the clock is at 1000.25
    assert ("j3", "released", {"reason": "rate limit"}) in fakes.records  # claim given back
    assert not [d for top, _, d in fakes.published if top == "send.retry"]


def test_a_contact_erased_after_its_screening_is_parked_over_the_quota_without_its_address():
    """The erasure scrubbed the parked jobs there were: one parked after it
    with its address kept it until it went back, up to an hour later."""
    fakes = Fakes([campaign(limits=Limits(per_hour=2))])
    answers = iter([{}, {"j3": "erased"}])  # screened, then erased meanwhile
    fakes.blocked = lambda jobs: next(answers)
    fakes.engine().handle([[job(1), job(2), job(3)]])
    assert [j.job_id for j in fakes.parked_jobs] == ["j3"] and fakes.parked_erased == {"j3"}


def test_a_test_send_ahead_of_its_campaigns_jobs_lets_none_of_them_past_the_quota():
    """The group's first job decided for all: a test send (never limited)
    ahead of its launched campaign's jobs let them all past its quota, and
    composed them with the test's own copy of the campaign."""
    fakes = Fakes([campaign(limits=Limits(per_hour=1))])
    test_send = replace(job(0), test=True, inline_campaign={
        "campaign_id": "c1", "template": {"subject": "draft"}, "sender": {}})
    fakes.engine().handle([[test_send, job(1), job(2), job(3)]])
    assert sorted(t.job.job_id for t in fakes.tasks_sent) == ["j0", "j1"]
    assert sorted(j.job_id for j in fakes.parked_jobs) == ["j2", "j3"]


class _Parking:
    def __init__(self, docs):
        self.docs = {d["_id"]: d for d in docs}

    def campaigns(self):
        return sorted({d["campaign_id"] for d in self.docs.values()})

    def take(self, campaign_id, limit=1000, exclude=(), due_by=None):
        return [d for d in self.docs.values()
                if d["campaign_id"] == campaign_id and d["_id"] not in exclude
                and (due_by is None or d.get("due_at", due_by) <= due_by)][:limit]

    def remove(self, docs):
        for doc in docs:
            del self.docs[doc["_id"]]

    def forget_account(self, account_id):
        self.docs = {k: d for k, d in self.docs.items() if d["account_id"] != account_id}


def test_a_parked_job_the_schema_refuses_stays_parked_and_holds_back_no_other_campaign():
    """Raising out of the loop stopped every paused campaign after it from
    resuming, on every try."""
    from shared.events import InvalidEvent

    def parked(job_id, campaign_id, name="Ana"):
        return {"_id": job_id, "campaign_id": campaign_id, "account_id": ACCOUNT,
                "data": {"job_id": job_id, "recipient": {"email": "r@example.com", "name": name}}}

    fakes = Fakes([campaign("c1"), campaign("c2")])
    parking = _Parking([parked("j1", "c1"), parked("bad", "c1", name=42), parked("j3", "c2")])

    def publish(topic, event, key=None):
        if not isinstance(event.data["recipient"]["name"], str):
            raise InvalidEvent("recipient.name: not a string")
        fakes.published.append((topic, event.type, event.data))

    fakes.publish = publish
    engine = fakes.engine()
    engine.parked = parking
    assert engine.unpark(lambda: None) == 2
    assert [d["job_id"] for _, _, d in fakes.published] == ["j1", "j3"]
    assert list(parking.docs) == ["bad"]


def _parked_for(job_id, campaign_id, due_at=None):
    doc = {"_id": job_id, "campaign_id": campaign_id, "account_id": ACCOUNT,
           "data": {"job_id": job_id, "recipient": {"email": "r@example.com"}}}
    if due_at is not None:
        doc["due_at"] = datetime.fromtimestamp(due_at, timezone.utc)
    return doc


def test_a_limited_campaigns_parked_jobs_go_back_a_window_at_a_time_once_due():
    """Put back all at once, what the window cannot take is parked again:
    each job read, parked and put back for nothing, window after window."""
    now, counter = [1000.25], MemoryCounter()
    fakes = Fakes([campaign("c1", limits=Limits(per_second=3)), campaign("c2")])
    parking = _Parking([_parked_for(f"j{n}", "c1", due_at=1000.0) for n in range(1, 6)]
                       + [_parked_for("later", "c1", due_at=1001.0)]
                       + [_parked_for(f"u{n}", "c2") for n in range(1, 6)])
    engine, other = (fakes.engine(counter, clock=lambda: now[0]) for _ in range(2))
    engine.parked = other.parked = parking
    assert engine.unpark(lambda: None) == 3 + 5   # a window of c1's; all of unlimited c2's
    assert other.unpark(lambda: None) == 0        # another sender, the same window
    now[0] = 1001.0                               # the next window: the rest, due now
    assert other.unpark(lambda: None) == 3 and engine.unpark(lambda: None) == 0
    assert sorted(d["job_id"] for _, _, d in fakes.published) == sorted(
        [f"j{n}" for n in range(1, 6)] + ["later"] + [f"u{n}" for n in range(1, 6)])
    assert parking.docs == {}


def test_parked_jobs_wait_for_the_hourly_quota_and_a_cancelled_campaigns_go_back_at_once():
    now = [1000.25]
    fakes = Fakes([campaign("c1", limits=Limits(per_hour=2)),
                   campaign("c3", status="cancelled", limits=Limits(per_second=1))])
    parking = _Parking([_parked_for(f"j{n}", "c1", due_at=3600.0) for n in range(1, 4)]
                       + [_parked_for(f"x{n}", "c3", due_at=3600.0) for n in range(1, 4)])
    engine = fakes.engine(clock=lambda: now[0])
    engine.parked = parking
    assert engine.unpark(lambda: None) == 3       # the cancelled campaign's, to be skipped
    now[0] = 3600.5
    assert engine.unpark(lambda: None) == 2       # what the rolling hour takes
    assert sorted(parking.docs) == ["j3"]


def test_the_campaigns_with_parked_jobs_are_listed_every_few_seconds_not_at_every_unpark():
    """Listing them is a distinct over parked_jobs, a read of every parked
    job on FerretDB: 0.7 s for a paused campaign's 100,000, twice a second
    per sender. What this engine parks goes back at once all the same."""
    from services.sender.engine import PARKED_LIST_SECONDS

    now = [1000.25]
    fakes = Fakes([campaign("c1"), campaign("c2"), campaign("c3", status="paused")])
    listings = []

    class Counting(_Parking):
        def campaigns(self):
            listings.append(now[0])
            return super().campaigns()

        def park(self, jobs, erased=frozenset(), due_at=None):
            for j in jobs:
                self.docs[j.job_id] = _parked_for(j.job_id, j.campaign_id)

    parking = Counting([_parked_for("p1", "c3")])
    engine = fakes.engine(clock=lambda: now[0])
    engine.parked = parking
    for _ in range(4):
        assert engine.unpark(lambda: None) == 0
        now[0] += 0.5
    assert listings == [1000.25]
    parking.docs["other"] = _parked_for("other", "c2")  # parked by another sender
    engine._park([job(1, "c1")], {})                    # and by this one
    assert engine.unpark(lambda: None) == 1 and sorted(parking.docs) == ["other", "p1"]
    now[0] = 1000.25 + PARKED_LIST_SECONDS
    assert engine.unpark(lambda: None) == 1 and sorted(parking.docs) == ["p1"]
    assert listings == [1000.25, 1000.25 + PARKED_LIST_SECONDS]


def _not_before(n: int, due_at: float, cid="c1", attempt=1, **changes) -> Job:
    return replace(job(n, cid, attempt), not_before=datetime.fromtimestamp(due_at, timezone.utc),
                   **changes)


def test_a_retry_not_due_for_a_while_is_parked_and_the_retries_behind_it_go_on():
    """Held in its partition, a late attempt's long backoff held every
    retry behind it, of any account, until it was due."""
    fakes = Fakes([campaign(), campaign("c2")])
    result = fakes.engine().handle([[_not_before(1, 1240.0), job(2, "c2", attempt=1)]])
    assert result == {"j1": DONE, "j2": DONE}
    assert [j.job_id for j in fakes.parked_jobs] == ["j1"] and fakes.parked_due == {"j1": 1240.0}
    assert [t.job.job_id for t in fakes.tasks_sent] == ["j2"] and "j1" not in fakes.claimed


def test_a_cancelled_campaigns_retry_not_due_is_skipped_now_not_parked():
    """A cancelled campaign's parked jobs all go back at once (to be
    skipped): parked for its due time, a retry went back and was parked
    again every half second until then."""
    fakes = Fakes([campaign(status="cancelled")])
    result = fakes.engine().handle([[_not_before(1, 1240.0)]])
    assert result == {"j1": DONE} and fakes.parked_jobs == []
    assert [(t, d["reason"]) for _, t, d in fakes.published] == [("delivery.skipped", "cancelled")]


def test_a_job_due_within_the_second_holds_its_partition():
    """Parking costs an insert, a delete and a trip through send.jobs: not
    worth it for a job due in a moment."""
    fakes = Fakes([campaign()])
    result = fakes.engine().handle([[_not_before(1, 1001.0), job(2)]])
    assert result["j1"] == Hold(1001.0, "not due") and "j2" not in result
    assert fakes.parked_jobs == [] and fakes.tasks_sent == []


def test_a_test_sends_retry_is_parked_and_goes_back_when_due_though_no_sender_knows_its_draft():
    """Held, a test send to a greylisting inbox held every account's
    retries behind it for its whole backoff."""
    now = [1000.25]
    fakes = Fakes([campaign()])
    test_send = _not_before(3, 1240.0, test=True, inline_campaign={
        "campaign_id": "draft", "template": {}, "sender": {}})
    engine = fakes.engine(clock=lambda: now[0])
    assert engine.handle([[test_send, job(4)]]) == {"j3": DONE, "j4": DONE}
    assert [j.job_id for j in fakes.parked_jobs] == ["j3"] and fakes.parked_due == {"j3": 1240.0}
    parking = _Parking([_parked_for("j3", "test-sends", due_at=1240.0)])
    engine.parked = parking
    assert engine.unpark(lambda: None) == 0
    now[0] = 1240.0
    assert engine.unpark(lambda: None) == 1 and parking.docs == {}


def test_jobs_parked_for_a_campaign_of_an_erased_account_are_deleted_not_kept_for_ever():
    """Parked after the erasure deleted the account's parked jobs (a
    sender's view of erased accounts is up to a second old), they waited
    for a campaign that no longer exists, addresses and all."""
    fakes = Fakes([campaign("c1")], erased={ACCOUNT})
    parking = _Parking([_parked_for("j1", "gone"), _parked_for("j2", "gone", due_at=1000.0)])
    engine = fakes.engine()
    engine.parked = parking
    assert engine.unpark(lambda: None) == 0 and parking.docs == {}
    fakes.erased = set()                      # an unknown campaign of a live account: kept
    parking.docs = {"j5": _parked_for("j5", "not-yet-known")}
    engine.unpark(lambda: None)
    assert list(parking.docs) == ["j5"]


def test_a_job_whose_contact_changed_is_given_back_and_asked_for_again():
    """Fanned out before its contact's address, name or fields changed: not
    sent, not counted; its claim goes back and delivery.held asks contacts
    for the job as the contact is now."""
    fakes = Fakes([campaign()], blocked={"j1": "contact_changed"})
    stale = job(1, attempt=1)
    stale = Job(stale.job_id, stale.campaign_id, stale.contact_id, ACCOUNT, "l1", stale.email,
                None, {}, 1, None, False, None, data=stale.data)
    result = fakes.engine().handle([[stale, job(2)]])
    assert result == {"j1": DONE, "j2": DONE}
    assert [t.job.job_id for t in fakes.tasks_sent] == ["j2"]
    assert fakes.types() == [("delivery.held", "j1"), ("delivery.sent", "j2")]
    held = [d for _, t, d in fakes.published if t == "delivery.held"][0]
    assert held == {"job_id": "j1", "campaign_id": "c1", "contact_id": "p1", "list_id": "l1",
                    "attempt": 1, "reason": "contact_changed",
                    "hold": fakes.held_jobs["j1"]["hold"]}  # the answer echoes it
    assert ("j1", "released", {}) in fakes.records  # the claim goes back
    assert "j1" not in {j for j, s, _ in fakes.records if s != "released"}
    # kept (ids only) until contacts answers: the held event is the job's only copy
    assert fakes.held_jobs["j1"]["list_id"] == "l1"
    assert not [d for top, _, d in fakes.published if top == "send.retry"]


def test_an_unanswered_held_job_is_asked_for_again_ever_less_often_until_answered():
    fakes = Fakes([campaign()], blocked={"j7": "contact_changed"})
    now = [1000.0]
    engine = fakes.engine(clock=lambda: now[0])
    engine.handle([[job(7, attempt=2)]])
    flushed = []

    def asks_at(seconds):
        now[0] = 1000.0 + seconds
        return engine.ask_contacts_again(lambda: flushed.append(True))

    assert asks_at(299) == 0
    assert asks_at(300) == 1 and flushed        # 5 minutes, then 10, 20, 40, 60, 60
    assert [asks_at(s) for s in (899, 900, 2099, 2100, 4500, 8100, 11700)] == [0, 1, 0, 1, 1, 1, 1]
    held = [d for _, t, d in fakes.published if t == "delivery.held"]
    token = fakes.held_jobs["j7"]["hold"]
    assert len(held) == 7 and held[-1] == {"job_id": "j7", "campaign_id": "c1", "contact_id": "p7",
                                           "list_id": None, "attempt": 2,
                                           "reason": "contact_changed", "hold": token}
    fakes.blocked_ids = {}
    engine.handle([[answer(7, token, attempt=2), job(8)]])
    assert "j7" not in fakes.held_jobs
    assert fakes.types()[-2:] == [("delivery.sent", "j7"), ("delivery.sent", "j8")]
    assert asks_at(20000) == 0


def answer(n: int, token, attempt=0, email="new@example.com") -> Job:
    """Contacts' answer to delivery.held: the job again, echoing the hold's token."""
    return Job.from_event(ACCOUNT, {"job_id": f"j{n}", "campaign_id": "c1", "contact_id": f"p{n}",
                                    "attempt": attempt, "answers_held": token,
                                    "recipient": {"email": email}})


def held_by(fakes, n: int, attempt=0) -> str:
    """Job n given back (its contact changed); the hold's token."""
    fakes.blocked_ids = {f"j{n}": "contact_changed"}
    fakes.engine().handle([[job(n, attempt=attempt)]])
    fakes.blocked_ids = {}
    return fakes.held_jobs[f"j{n}"]["hold"]


def test_an_answer_put_back_on_send_retry_is_not_an_answer_any_more():
    """Its copy, due later, would otherwise be dropped as a late answer."""
    fakes = Fakes([campaign()], replies={"j1": 451})
    token = held_by(fakes, 1)
    fakes.engine().handle([[answer(1, token)]])
    [retry] = [d for top, _, d in fakes.published if top == "send.retry"]
    assert retry["attempt"] == 1 and "answers_held" not in retry
    assert "j1" not in fakes.held_jobs


def test_one_answer_is_taken_per_hold_and_its_late_copies_are_dropped():
    """Asked twice, contacts answers twice. The first answer met a 4xx and
    waits on send.retry; the second, claimed then, would have been sent
    ahead of the retry's backoff (and a job out of attempts dead-lettered
    twice)."""
    fakes = Fakes([campaign()], replies={"j1": 451})
    token = held_by(fakes, 1)
    result = fakes.engine().handle([[answer(1, token), answer(1, token)]])  # a copy in the batch
    assert result == {"j1": DONE}
    fakes.replies = {}
    result = fakes.engine().handle([[answer(1, token), job(2)]])  # a copy in a later batch
    assert result == {"j1": DONE, "j2": DONE}
    assert [t.job.job_id for t in fakes.tasks_sent] == ["j1", "j2"]  # one try of j1, then j2
    assert fakes.types() == [("delivery.held", "j1"), ("delivery.deferred", "j1"),
                             ("delivery.sent", "j2")]
    assert fakes.claimed.count("j1") == 2  # held, then the first answer: no copy claimed it


def test_a_stale_answer_opens_a_new_hold_that_the_old_holds_answers_do_not_close():
    fakes = Fakes([campaign()])
    first = held_by(fakes, 1)
    fakes.blocked_ids = {"j1": "contact_changed"}  # changed again before the answer came
    fakes.engine().handle([[answer(1, first, email="second@example.com")]])
    second = fakes.held_jobs["j1"]["hold"]
    assert second != first
    assert [d.get("hold") for _, t, d in fakes.published if t == "delivery.held"] == [first, second]
    fakes.blocked_ids = {}
    fakes.engine().handle([[answer(1, first, email="second@example.com")]])  # a late copy
    assert fakes.held_jobs["j1"]["hold"] == second and not getattr(fakes, "tasks_sent", [])
    fakes.engine().handle([[answer(1, second, email="third@example.com")]])
    assert [t.job.email for t in fakes.tasks_sent] == ["third@example.com"]
    assert "j1" not in fakes.held_jobs


def test_a_hold_closes_once_what_its_answer_led_to_is_out_and_not_while_it_waits():
    fakes = Fakes([campaign("c1"), campaign("c2")], replies={"j1": 451})
    token = held_by(fakes, 1)
    waiting = answer(1, token)
    result = fakes.engine().handle([[job(3, "nope"), waiting]])  # behind a job not ready yet
    assert isinstance(result["j3"], Hold) and "j1" not in result
    assert fakes.held_jobs["j1"]["hold"] == token  # still open: the answer comes again
    fakes.order.clear()
    fakes.engine().handle([[waiting]])
    retry_published = len(fakes.published)
    assert fakes.order == [("flush", retry_published), ("deferred", ["j1"]),
                           ("flush", retry_published), ("close", {"j1": token})]


def test_an_answer_from_a_contacts_without_tokens_still_closes_its_hold():
    """Senders are rolled out before contacts: for a while, answers say True."""
    fakes = Fakes([campaign()])
    held_by(fakes, 1)
    fakes.engine().handle([[answer(1, True)]])
    assert fakes.answered_ids == ["j1"] and "j1" not in fakes.held_jobs
    assert fakes.types()[-1] == ("delivery.sent", "j1")


def test_a_test_send_is_composed_without_tracking():
    """Its opens and clicks counted in the campaign's stats, and a draft's
    links are known to no tracking service (a 404 for each click)."""
    fakes = Fakes([])
    composed = []
    engine = fakes.engine()
    engine.composer_for = lambda c: composed.append(c) or type(
        "C", (), {"compose": lambda self, j: Outgoing(j, b"m", "b+x@d", "<m@d>", False)})()
    launched = {"campaign_id": "c9", "template": {"version": 1, "subject": "s", "html": "h"},
                "sender": {"from_email": "n@sandesh.test"}, "tracking": True}
    test = Job("t1", "c9", "test-1", ACCOUNT, None, "me@example.com", None, {}, 0, None, True,
               launched, data={"job_id": "t1"})
    assert engine.handle([[test]]) == {"t1": DONE}
    assert [c.tracking for c in composed] == [False]


class _HeldClaims(Fakes):
    """Claims of some jobs still held by a sender that died (live leases)."""

    def __init__(self, *args, held=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.held_ids = set(held)

    def claim(self, jobs):
        self.claimed.extend(j.job_id for j in jobs)
        return ([j for j in jobs if j.job_id not in self.held_ids], {},
                [j for j in jobs if j.job_id in self.held_ids])


def test_jobs_behind_a_claim_held_elsewhere_wait_with_it_unsent():
    """Its partition is read again from the held job: a job after it, sent
    and deferred now, was claimed and sent again at every re-read (every
    2 s), each try another send.retry copy."""
    fakes = _HeldClaims([campaign()], held={"j1"}, replies={"j2": 451})
    result = fakes.engine().handle([[job(1), job(2)], [job(3)]])
    assert isinstance(result["j1"], Hold) and "j2" not in result and result["j3"] is DONE
    assert [t.job.job_id for t in fakes.tasks_sent] == ["j3"]
    assert ("j2", "released", {}) in fakes.records   # its claim given back
    assert not [d for top, _, d in fakes.published if top == "send.retry"]


def test_a_job_twice_in_a_batch_is_claimed_and_sent_once():
    """The second copy met the first's claim, and both were held as claimed
    elsewhere until the lease ran out, with the partition behind them."""
    fakes = Fakes([campaign()])
    result = fakes.engine().handle([[job(1), job(1), job(3)]])
    assert result == {"j1": DONE, "j3": DONE}
    assert fakes.claimed == ["j1", "j3"]
    assert [t.job.job_id for t in fakes.tasks_sent] == ["j1", "j3"]


def test_delivery_sent_says_which_revision_of_the_contact_it_went_to():
    """A complaint or bounce about it is about the address the contact had then."""
    fakes = Fakes([campaign()])
    sent = Job.from_event(ACCOUNT, {"job_id": "j1", "campaign_id": "c1", "contact_id": "p1",
                                    "attempt": 0, "contact_revision": 3,
                                    "recipient": {"email": "r@example.com"}})
    fakes.engine().handle([[sent, job(2)]])
    revisions = {d["job_id"]: d.get("contact_revision") for _, t, d in fakes.published
                 if t == "delivery.sent"}
    assert revisions == {"j1": 3, "j2": 0}


class View:
    """A contact view that is behind for the listed jobs."""

    def __init__(self, behind=()):
        self.waiting, self.asked, self.forgotten = set(behind), [], []

    def behind(self, job_ids):
        self.asked.append(sorted(job_ids))
        return self.waiting & set(job_ids)

    def forget(self, job_ids):
        self.forgotten.extend(job_ids)


def test_a_job_blocked_while_the_contact_view_is_behind_waits_unclaimed_and_is_skipped_once_current():
    fakes = Fakes([campaign(limits=Limits(per_hour=2))],
                  blocked={"j1": "suppressed", "j2": "erased"})
    view = View(behind={"j1"})
    engine = fakes.engine()
    engine.contact_view = view
    for _ in range(3):  # looked at again while the view catches up
        result = engine.handle([[job(1), job(2), job(3)]])
        assert isinstance(result["j1"], Hold) and result["j1"].reason == "contact view behind"
        # behind the held job, the rest waits with it: nothing settled, nothing sent
        assert "j2" not in result and "j3" not in result
    assert view.asked == [["j1"]] * 3  # an erasure is never lifted: not waited for
    # held before any claim: nothing claimed, recorded, published or sent
    assert fakes.claimed == [] and fakes.records == [] and fakes.published == []
    assert not getattr(fakes, "tasks_sent", [])

    view.waiting.clear()  # the loop caught up and the block stands
    result = engine.handle([[job(1), job(2), job(3)]])
    assert result == {"j1": DONE, "j2": DONE, "j3": DONE}
    # the hourly quota of 2 was not spent while j3 waited
    assert fakes.types() == [("delivery.skipped", "j1"), ("delivery.skipped", "j2"),
                             ("delivery.sent", "j3")]


def test_a_cancelled_or_complained_job_is_skipped_without_asking_the_contact_view():
    fakes = Fakes([campaign(status="cancelled"), campaign("c2")],
                  blocked={"j1": "unsubscribed", "j2": "complained"})
    view = View(behind={"j1", "j2"})
    engine = fakes.engine()
    engine.contact_view = view
    engine.handle([[job(1)], [job(2, "c2")], [job(3, "c2")]])
    assert fakes.types() == [("delivery.skipped", "j1"), ("delivery.skipped", "j2"),
                             ("delivery.sent", "j3")]
    assert view.asked == [] and sorted(view.forgotten) == ["j1", "j2", "j3"]


def test_a_job_twice_in_a_batch_keeps_the_disposition_of_its_copy_ahead_of_a_hold():
    """[j1, j2 held, j1 again]: the second j1 waits with j2, but the first
    one goes on. Keyed by id, both lost their disposition, and the loop
    committed past a partition left with neither a disposition nor a hold."""
    fakes = Fakes([campaign()], blocked={"j2": "suppressed"})
    engine = fakes.engine()
    engine.contact_view = View(behind={"j2"})
    result = engine.handle([[job(1), job(2), job(1)]])
    assert result["j1"] is DONE and isinstance(result["j2"], Hold)
    assert fakes.types() == [("delivery.sent", "j1")]


def test_a_job_twice_in_a_batch_around_a_job_claimed_elsewhere_is_sent_once():
    fakes = Fakes([campaign()])
    fakes.claimed_elsewhere = {"j2"}
    result = fakes.engine().handle([[job(1), job(2), job(1)], [job(3), job(1)]])
    assert result["j1"] is DONE and result["j2"].reason == "claimed elsewhere"
    assert result["j3"] is DONE
    assert sorted(fakes.types()) == [("delivery.sent", "j1"), ("delivery.sent", "j3")]


def test_a_copy_of_an_answer_set_aside_is_settled_by_its_place_and_the_kept_copy_waits():
    """send.jobs [j2 held by the view, j1's answer] and send.retry [a copy of
    the answer, j5]: the copy carries no work, so send.retry settles in
    full, and the answer waits behind j2 where it came."""
    fakes = Fakes([campaign()])
    token = held_by(fakes, 1)
    fakes.blocked_ids = {"j2": "suppressed"}
    engine = fakes.engine()
    engine.contact_view = View(behind={"j2"})
    copy = answer(1, token)
    result = engine.handle([[job(2), answer(1, token)], [copy, job(5)]])
    assert isinstance(result["j2"], Hold) and "j1" not in result and result["j5"] is DONE
    assert result.set_aside == {id(copy)}
    assert [t.job.job_id for t in fakes.tasks_sent] == ["j5"]


def test_an_attempt_older_than_a_retry_in_the_same_batch_is_settled_by_its_place():
    """A redelivered attempt 0 and the due retry (attempt 1): the claim of
    the first copy found the deferred mark, and its DONE, keyed by id,
    committed the retry past unsent."""
    fakes = Fakes([campaign()])
    old, retry = job(1), job(1, attempt=1)
    result = fakes.engine().handle([[old, job(2)], [retry]])
    assert result.set_aside == {id(old)} and result["j1"] is DONE
    assert sorted((t.job.job_id, t.job.attempt) for t in fakes.tasks_sent) == [("j1", 1), ("j2", 0)]


def test_a_second_copy_of_an_admitted_job_is_not_weighed_against_the_rate_again():
    """[j1, j1, j2] at one a second: the second j1 was held by the full
    window, that hold overwritten by the first copy's DONE, and j2 left with
    neither a disposition nor a hold ahead of it."""
    fakes = Fakes([campaign(limits=Limits(per_second=1))])
    result = fakes.engine().handle([[job(1), job(1), job(2)]])
    assert result["j1"] is DONE and result["j2"] is DONE
    assert [t.job.job_id for t in fakes.tasks_sent] == ["j1"]
    assert [j.job_id for j in fakes.parked_jobs] == ["j2"]


def test_the_record_of_a_contact_erased_while_its_message_was_on_the_wire_is_rewritten():
    """The erasure rewrote the records there were; this one, written after
    it, kept the contact's id and the SMTP reply (which may quote the name)
    for the 30 days records are kept."""
    fakes = Fakes([campaign()])
    fakes.erased_later = {"j2"}
    assert fakes.engine().handle([[job(1), job(2)]]) == {"j1": DONE, "j2": DONE}
    assert sorted(t.job.job_id for t in fakes.tasks_sent) == ["j1", "j2"]  # screened before
    assert fakes.forgotten == ["j2"]


def test_the_skip_record_of_a_contact_erased_as_its_batch_went_out_is_rewritten():
    """A skip is recorded ahead of the batch's sends, under the contact's
    id: an erasure that rewrote the records there were just before it
    left this one naming the contact for the 30 days records are kept."""
    fakes = Fakes([campaign()], blocked={"j2": "unsubscribed"})
    fakes.erased_later = {"j2"}
    assert fakes.engine().handle([[job(1), job(2)]]) == {"j1": DONE, "j2": DONE}
    assert [t.job.job_id for t in fakes.tasks_sent] == ["j1"]
    assert [(job_id, state) for job_id, state, _ in fakes.records if job_id == "j2"] == [
        ("j2", "skipped")]
    assert fakes.forgotten == ["j2"]


def test_a_job_parked_just_after_its_contacts_erasure_loses_its_address():
    """The erasure rewrote the parked jobs there were; this one, parked
    after it, kept the address until its campaign went on (up to a week)."""
    fakes = Fakes([campaign(status="paused")])
    fakes.erased_later = {"j2"}
    fakes.engine().handle([[job(1), job(2)]])
    assert [j.job_id for j in fakes.parked_jobs] == ["j1", "j2"] and fakes.parked_erased == set()
    assert fakes.recipients_forgotten == ["p2"]
