"""The sending engine: a batch of send jobs in, a disposition per job out.

It depends only on small interfaces (the stores, a rate limiter, a
Messenger, a composer factory and a publisher), so the whole flow reads in
one screen:

    account erased?                 -> DROPPED (no record, no event)
    campaign known?                 -> else HOLD (try again shortly)
    due (not_before)?               -> else PARKED until due (HOLD if due within a second)
    campaign not paused?            -> else PARKED until it is resumed or cancelled
    a domain slot, where needed?    -> else HOLD (another sender has it; domain_slots.py)
    a window's worth of it already? -> PARKED until the next window (not claimed)
    claim (deliveries, _id = job id) -> finished before: re-announce; held by a live sender: HOLD
    contact blocked, view behind?   -> RELEASE + HOLD until it caught up (contact_view.py)
    cancelled / contact blocked      -> SKIPPED
    contact changed since fan-out    -> RELEASE; delivery.held asks contacts for the job again
    within the campaign's rate       -> else RELEASE + PARKED until the next window or hour
    compose + send (the Messenger)   -> SENT / FAILED (5xx) / DEFERRED -> send.retry / DLQ
    record, publish delivery events  -> the loop flushes, then commits

A HOLD means "not done: do not commit past it"; the loop seeks back and
pauses that partition until the given time. Nothing is dropped but the
jobs of a deleted account.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Protocol

from services.sender import metrics, smtp
from services.sender.compose import Composer
from services.sender.contact_view import ContactView
from services.sender.domain import (ACCEPTED, CANCELLED, CONTACT_CHANGED, DEFERRED, FAILED, FINAL,
                                    PAUSED, PERMANENT, RELEASED, SENT, SKIPPED, TEST_SENDS, Campaign, Job,
                                    RetryPolicy, enhanced_status, parked_job_id)
from services.sender.throttle import RateLimiter
from shared import topics
from shared.events import InvalidEvent, new_event
from shared.logs import mask_emails
from shared.mailbox_providers import provider_of
from shared.privacy_answers import pseudonym

log = logging.getLogger(__name__)
SOURCE = "sender"
EXHAUSTED = "retries exhausted"  # delivery.failed's reason when the job went to send.dlq
# Reasons to skip a job that nothing undoes: no point waiting for the
# contact-state loop to catch up on them (contact_view.py).
UNLIFTABLE = ("cancelled", "erased", "complained", CONTACT_CHANGED)
PARKED_LIST_SECONDS = 5.0        # how often the campaigns with parked jobs are listed
PARKED_LIST_MOST_SECONDS = 60.0  # ... however long listing them takes


@dataclass(frozen=True)
class Hold:
    until: float  # time.time() when to look at this job again
    reason: str


DONE = None  # a settled job's disposition


class Dispositions(dict):
    """Disposition per job id (DONE or a Hold; no entry: waits behind a
    held job), and `set_aside`: the copies (Job objects, by identity) that
    are settled by their own place in their partition, whatever becomes of
    their id. A job id can come more than once in a batch; a late answer, a
    second copy of an answer and an attempt older than a retry in the same
    batch carry no work of their own. Keyed by id alone, such a copy took
    the disposition of the copy doing the work: DONE after a deferred mark
    found by an old attempt committed a due retry past unsent, and a hold
    placed at a set-aside copy held its partition there for ever."""

    def __init__(self):
        super().__init__()
        self.set_aside: set[int] = set()


class Publisher(Protocol):
    def publish(self, topic: str, event, key: str | None = None) -> None: ...

    def flush(self) -> None: ...


class Messenger(Protocol):
    def submit(self, tasks: list[smtp.SendTask], deadline: float) -> None: ...

    def collect(self, at_least: int, timeout: float = 0.5) -> list[smtp.SendTask]: ...


@dataclass(frozen=True)
class Routes:
    """Where jobs come from and outcomes go (a benchmark prefixes them)."""
    jobs: str = topics.SEND_JOBS
    retry: str = topics.SEND_RETRY
    dlq: str = topics.SEND_DLQ
    delivery: str = topics.DELIVERY_EVENTS

    @classmethod
    def with_prefix(cls, prefix: str) -> "Routes":
        return cls(*(prefix + name for name in (topics.SEND_JOBS, topics.SEND_RETRY,
                                                topics.SEND_DLQ, topics.DELIVERY_EVENTS)))


@dataclass
class EngineSettings:
    max_attempts: int = 5
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    default_domain_concurrency: int = 8
    batch_deadline_seconds: float = 20.0  # stop starting new sends after this (lease/2 at most)
    # Parked jobs are put back this often: no longer than the shortest rate
    # window (a second), or a limited campaign would miss windows while its
    # jobs wait parked (RateLimiter.pace puts back one window's worth).
    unpark_every_seconds: float = 0.5
    # A job due within this long holds its partition; one due later is
    # parked (an insert, a delete and a trip through send.jobs) so that the
    # jobs behind it go on.
    not_due_hold_seconds: float = 1.0
    held_recheck_seconds: float = 2.0
    # A campaign's jobs can arrive before its campaign.launched (Kafka keeps
    # no order across topics, and the fan-out starts on the same event), so
    # for its first seconds an unknown campaign is looked at again soon: at
    # held_recheck_seconds a campaign's first message went out 2.6 s after
    # `send`. One still unknown after that waits as any other hold.
    unknown_campaign_recheck_seconds: float = 0.1
    unknown_campaign_patience_seconds: float = 10.0
    # A job whose domain slot another sender holds (domain_slots.py) looks
    # again this soon: the holder gives it back at the end of its batch.
    domain_slot_recheck_seconds: float = 0.25
    # A job blocked by a contact state that may have been lifted meanwhile
    # (contact_view.py) looks again this soon, while the state loop catches up.
    contact_view_recheck_seconds: float = 0.25
    # A job given back for contacts to send again (delivery.held) is asked
    # for again if no answer has come after this long, then after twice as
    # long each time, up to the maximum (HeldJobs). An answer only delayed
    # (behind a backlog on send.jobs) comes once more for each ask, and
    # every copy after the first is dropped.
    contact_answer_seconds: float = 300.0
    contact_answer_max_seconds: float = 3600.0
    record_every: int = 32  # sends between two writes of their outcomes
    # How long to keep trying to record outcomes of messages already sent
    # while the database is away (see DeliveryStore.record); a SIGTERM then
    # waits as long at most, within its 30 s.
    record_patience_seconds: float = 10.0
    routes: Routes = Routes()


class Engine:
    def __init__(self, *, campaigns, contacts, deliveries, parked, held, limiter: RateLimiter,
                 slots, messenger: Messenger, composer_for: Callable[[Campaign], Composer],
                 publisher: Publisher, settings: EngineSettings | None = None,
                 contact_view: ContactView | None = None,
                 clock: Callable[[], float] = time.time):
        self.campaigns = campaigns
        self.contacts = contacts
        self.deliveries = deliveries
        self.parked = parked
        self.held = held
        self.limiter = limiter
        self.slots = slots
        self.messenger = messenger
        self.composer_for = composer_for
        self.publisher = publisher
        self.settings = settings or EngineSettings()
        self.contact_view = contact_view  # None: blocks are taken as they stand
        self.retry = RetryPolicy(self.settings.max_attempts, self.settings.retry_base_seconds,
                                 self.settings.retry_max_seconds)
        self.clock = clock
        self._unknown_since: dict[str, float] = {}  # campaign id -> first met unknown
        # The campaigns with parked jobs as last listed, and when to list
        # them again; those this engine parked since are added (unpark).
        self._listed_parked: set[str] = set()
        self._list_parked_at = float("-inf")
        self._parked_here: set[str] = set()

    # -----------------------------------------------------------------------
    def handle(self, sequences: list[list[Job]]) -> Dispositions:
        """Disposition per job id: DONE, or a Hold. Each sequence (a
        partition) is taken in order: once a job of it is held, the rest of
        it is left alone (no disposition) to be seen again after it."""
        started = time.perf_counter()
        result = Dispositions()
        untokened = [job.job_id for sequence in sequences for job in sequence
                     if job.answers_held is True]
        if untokened:  # before the screening, which holds an answer already stale again
            self.held.answered(untokened)
        arrived = sequences
        sequences, answers = self._take_answers(sequences, result)
        sequences = _latest_attempts(sequences)
        kept = {id(job) for sequence in sequences for job in sequence}
        result.set_aside = {id(job) for sequence in arrived for job in sequence} - kept
        jobs = [job for sequence in sequences for job in sequence]
        erased = self.campaigns.erased_accounts({job.account_id for job in jobs})
        campaigns = self._campaigns_of(jobs)
        try:
            slots = self._take_slots(jobs, campaigns, erased)
            ready = self._admit(sequences, campaigns, erased, result, slots)
            reasons = self._reasons(ready, campaigns)
            ready = self._wait_for_contact_view(sequences, ready, reasons, result)
            outcomes: list[tuple[str, str, dict]] = []
            claimed = self._claim(ready, result)
            claimed = self._wait_behind_holds(sequences, claimed, result, outcomes)
            claimed_at = time.perf_counter()
            sendable = self._screen(claimed, reasons, result, outcomes)
            tasks = self._throttle(sendable, campaigns, result, outcomes)
            going = {job.job_id for job in
                     self._wait_behind_holds(sequences, [t.job for t in tasks], result, outcomes)}
            tasks = [task for task in tasks if task.job.job_id in going]
            self._fit_slots(slots, tasks)
            self.deliveries.record(outcomes)
        except Exception:
            self.slots.give_back()  # nothing of this batch is on the wire yet
            raise
        screened_at = time.perf_counter()
        try:
            recording, deferred = self._send(tasks, result)
        except Exception:
            # Its transactions may still be on the wire: its slots run out
            # with their lease rather than let another sender open more.
            self.slots.abandon()
            raise
        self.slots.give_back()  # every transaction of the batch is over
        settled_unsent = {job_id for job_id, state, _ in outcomes if state in FINAL}
        self._forget_erased_since([task.job for task in tasks]
                                  + [job for job in jobs if job.job_id in settled_unsent])
        self._mark_deferred(deferred)
        self._close_holds(answers, result)
        for hold in result.values():
            if hold is not None:
                metrics.HELD.labels(hold.reason).inc()
        done_at = time.perf_counter()
        log.debug("engine", extra={"jobs": len(jobs), "ms": round((done_at - started) * 1000),
                                   "claim_ms": round((claimed_at - started) * 1000),
                                   "screen_ms": round((screened_at - claimed_at) * 1000),
                                   "send_ms": round((done_at - screened_at) * 1000),
                                   "record_ms": round(recording * 1000)})
        return result

    def _take_answers(self, sequences, result) -> tuple[list[list[Job]], dict[str, str]]:
        """One answer per hold of a job (HeldJobs): the sequences without the
        answers that come late (their hold closed, or replaced by a newer
        one) and without a second copy of one in the batch; and the answers
        taken, job id -> hold token. A late answer is settled unsent: the
        job went on with the answer taken before it."""
        asked = {job.job_id for sequence in sequences for job in sequence if job.hold_token}
        if not asked:
            return sequences, {}
        open_holds = self.held.open_holds(asked)
        taken: dict[str, str] = {}
        late: set[str] = set()
        kept_sequences = []
        for sequence in sequences:
            kept = []
            for job in sequence:
                token = job.hold_token
                if token is None:
                    kept.append(job)
                elif open_holds.get(job.job_id) == token and job.job_id not in taken:
                    taken[job.job_id] = token
                    kept.append(job)
                else:
                    late.add(job.job_id)
            kept_sequences.append(kept)
        kept_ids = {job.job_id for sequence in kept_sequences for job in sequence}
        for job_id in late - kept_ids:  # a copy kept has the id's disposition
            result[job_id] = DONE
            metrics.OUTCOMES.labels("late_answer").inc()
        return kept_sequences, taken

    def _close_holds(self, answers: dict[str, str], result) -> None:
        """The holds whose answer was settled end, once what the answer led
        to is out (its events and retries): until then a sender that dies
        takes the answer again when it comes back."""
        settled = {job_id: token for job_id, token in answers.items()
                   if job_id in result and result[job_id] is DONE}
        if settled:
            self.publisher.flush()
            self.held.close(settled)

    def _admit(self, sequences, campaigns, erased, result, slots) -> list[Job]:
        """Jobs whose campaign is known and not paused. Unknown: hold (it
        may be on its way). Paused: parked, back on send.jobs at resume.
        Not due (a retry's backoff): parked until due, or held if due
        within not_due_hold_seconds.
        Beyond what the campaign's rate window offers now: parked until the
        window turns, back on send.jobs at the campaign's pace (held in the
        partition, it held every other campaign's jobs behind it: one
        account's campaign limited to 2 a second kept another's twenty
        messages waiting 57 s). Of an erased account: dropped, with no
        record and no event (its campaigns and their counts are gone;
        nothing may bring them back)."""
        now = self.clock()
        ready, parking = [], []
        due_at: dict[str, datetime] = {}  # parked until: job id -> when
        rated: set[str] = set()  # parked for the rate
        taken: set[str] = set()  # ids admitted or parked: a second copy shares their fate
        room: dict[str, tuple[int, float] | None] = {}  # campaign -> (jobs left, until)
        for sequence in sequences:
            for job in sequence:
                if job.job_id in taken:
                    # A job twice in the batch (a parked job put back twice, a
                    # redelivery) goes on once. Claimed again, the second copy
                    # met the first's claim and held the partition for the
                    # whole lease; weighed again, its hold (the rate window
                    # full by then) was overwritten by the first copy's DONE,
                    # and the jobs after it were left with neither.
                    continue
                if job.account_id in erased:
                    result[job.job_id] = DONE
                    metrics.ERASED.inc()
                    continue
                campaign = campaigns.get(job.job_id)
                if campaign is None:
                    result[job.job_id] = Hold(now + self._unknown_recheck(job.campaign_id, now),
                                              "campaign not known yet")
                    break
                self._unknown_since.pop(job.campaign_id, None)
                not_before = job.not_before.timestamp() if job.not_before else now
                if campaign.status == CANCELLED and not job.test:
                    not_before = now  # skipped now: parked, it went back at once, for ever
                if not_before > now and not_before - now <= self.settings.not_due_hold_seconds:
                    # Soon due: cheaper held than parked and put back.
                    result[job.job_id] = Hold(not_before, "not due")
                    break
                if not_before > now or (campaign.status == PAUSED and not job.test):
                    # A retry not due yet, held in its partition, held the
                    # retries behind it, whose backoff may be shorter.
                    parking.append(job)
                    taken.add(job.job_id)
                    if not_before > now:
                        due_at[job.job_id] = job.not_before
                    result[job.job_id] = DONE
                    continue
                if not job.test and slots.get((campaign.campaign_id, job.recipient_domain)) == 0:
                    # another sender has the domain's slots: not claimed, looked at again soon
                    result[job.job_id] = Hold(now + self.settings.domain_slot_recheck_seconds,
                                              "domain concurrency")
                    break
                over = None if job.test else self._over_window(campaign, room)
                if over is not None:
                    parking.append(job)
                    taken.add(job.job_id)
                    due_at[job.job_id] = datetime.fromtimestamp(over, timezone.utc)
                    rated.add(job.job_id)
                    result[job.job_id] = DONE
                    continue
                ready.append(job)
                taken.add(job.job_id)
        self._park(parking, due_at)
        metrics.PARKED.labels("rate limit").inc(len(rated))
        metrics.PARKED.labels("not due").inc(len(due_at) - len(rated))
        metrics.PARKED.labels("paused").inc(len(parking) - len(due_at))
        return ready

    def _park(self, jobs: list[Job], due_at: dict[str, datetime]) -> None:
        """Set the jobs aside in parked_jobs (until `due_at`, where given).
        An erased contact's job parks without its address: the erasure
        rewrote the parked jobs there were, not the ones parked after it,
        and a job screened before the claim may have been erased since."""
        if jobs:
            blocked = self.contacts.blocked(jobs)
            erased = {j for j, why in blocked.items() if why == "erased"}
            self.parked.park(jobs, erased=erased, due_at=due_at)
            self._parked_here.update(TEST_SENDS if j.test else j.campaign_id for j in jobs)
            # Erased between the look and the insert, the erasure's rewrite
            # of parked jobs ran before these were there.
            erased_since = self.contacts.erased_jobs(jobs) - erased
            for job in jobs:
                if job.job_id in erased_since:
                    self.parked.forget_recipient(job.account_id, job.contact_id)

    def _over_window(self, campaign: Campaign,
                     room: dict[str, tuple[int, float] | None]) -> float | None:
        """When to look again, once this batch has what the campaign's
        per-second window offers this sender now (throttle.RateLimiter.
        per_window): claiming more only to give them back is an insert and
        a delete per job (a read of all claims on FerretDB), 490 of them a
        batch for a campaign limited to 10 a second."""
        if campaign.status == CANCELLED:
            return None  # its jobs are skipped, not sent: no rate to keep
        if campaign.campaign_id not in room:
            room[campaign.campaign_id] = self.limiter.per_window(campaign.campaign_id,
                                                                 campaign.limits)
        window = room[campaign.campaign_id]
        if window is None:
            return None
        left, look_again_at = window
        if left <= 0:
            return look_again_at
        room[campaign.campaign_id] = (left - 1, look_again_at)
        return None

    def _needs_slot(self, campaign: Campaign) -> bool:
        """Whether this campaign's transactions are counted in slots
        (domain_slots.py): when several senders share it and its per-domain
        limit is less than send.jobs' partitions, so that a sender's share
        of it could come to less than one. Every sender decides the same."""
        asked = campaign.limits.per_domain_concurrency
        return asked is not None and self.limiter.share < 1 \
            and asked < self.limiter.partitions

    def _take_slots(self, jobs, campaigns, erased) -> dict[tuple[str, str], int]:
        """(campaign, domain) -> the slots this sender holds for this batch:
        as many as the batch has jobs, up to its share of the limit (one at
        least), for the campaigns whose limit is counted in slots."""
        counts: dict[tuple[str, str], int] = {}
        limits: dict[tuple[str, str], int] = {}
        for job in jobs:
            campaign = campaigns.get(job.job_id)
            if campaign is None or job.test or job.account_id in erased \
                    or campaign.status in (CANCELLED, PAUSED) or not self._needs_slot(campaign):
                continue
            key = (campaign.campaign_id, job.recipient_domain)
            counts[key] = counts.get(key, 0) + 1
            limits[key] = campaign.limits.per_domain_concurrency
        share = self.limiter.share
        # Rounded up, or two senders at half of a limit of 3 took one each:
        # the slots' unique ids keep the total within the limit.
        wants = {key: (limits[key], min(n, math.ceil(limits[key] * share - 1e-9)))
                 for key, n in counts.items()}
        return self.slots.take(wants) if wants else {}

    def _fit_slots(self, slots: dict, tasks: list[smtp.SendTask]) -> None:
        """Once the batch's sends are known: the slots beyond a domain's
        sends go back (jobs skipped, held for the rate, claimed elsewhere),
        another sender may want them, and each send's limit is what is kept
        (the one place a slotted send's limit is set)."""
        if not slots:
            return
        sends: dict[tuple[str, str], int] = {}
        for task in tasks:
            key = (task.job.campaign_id, task.domain)
            if key in slots and not task.job.test:
                sends[key] = sends.get(key, 0) + 1
        for key, held in slots.items():
            if held > sends.get(key, 0):
                self.slots.keep(key, sends.get(key, 0))
        for task in tasks:
            key = (task.job.campaign_id, task.domain)
            if key in slots and not task.job.test:
                task.domain_limit = len(self.slots.held.get(key, ()))

    def _wait_behind_holds(self, sequences, jobs, result, outcomes) -> list[Job]:
        """The jobs not behind a held job in their sequence (partition). A
        held job's partition is read again from it, so a job after it sent
        now was sent again then: a deferred one at once (its claim given
        back), every 2 s, each try another send.retry copy. Those wait with
        it, their claims given back, no disposition."""
        held = {job_id for job_id, hold in result.items() if hold is not None}
        behind = _behind_holds(sequences, held)
        waiting = [job for job in jobs if job.job_id in behind]
        for job in waiting:
            outcomes.append((job.job_id, RELEASED, {}))
            result.pop(job.job_id, None)
        return [job for job in jobs if job.job_id not in behind]

    def _unknown_recheck(self, campaign_id: str, now: float) -> float:
        since = self._unknown_since.setdefault(campaign_id, now)
        if now - since < self.settings.unknown_campaign_patience_seconds:
            return self.settings.unknown_campaign_recheck_seconds
        return self.settings.held_recheck_seconds

    def _claim(self, ready, result) -> list[Job]:
        """The jobs this sender now owns (each id once: _admit). Finished
        ones: announced again. Claimed by a live sender: held."""
        claimed, finished, held = self.deliveries.claim(ready)
        for job in held:
            result[job.job_id] = Hold(self.clock() + self.settings.held_recheck_seconds,
                                      "claimed elsewhere")
        for job in ready:
            if job.job_id in finished:
                self._announce_again(job, finished[job.job_id])
                result[job.job_id] = DONE
        return claimed

    def _reasons(self, ready: list[Job], campaigns) -> dict[str, str | None]:
        """Why each job must not be sent as it is, if it must not: its
        campaign cancelled, or its contact blocked or changed (store.blocked)."""
        blocked = self.contacts.blocked(ready)
        return {job.job_id: "cancelled" if campaigns[job.job_id].status == CANCELLED
                and not job.test else blocked.get(job.job_id) for job in ready}

    def _wait_for_contact_view(self, sequences, ready, reasons, result) -> list[Job]:
        """The jobs to claim now. One blocked by a state that may have been
        lifted, while the sender's view of contacts is not known to be
        current yet (contact_view.py), is held before any claim, and the
        rest of its partition with it: looked at again shortly, the state
        then read decides. A cancellation, an erasure or a complaint is
        never lifted; a changed contact's job goes back to contacts anyway."""
        if self.contact_view is None:
            return ready
        liftable = {job.job_id for job in ready
                    if reasons[job.job_id] and reasons[job.job_id] not in UNLIFTABLE}
        self.contact_view.forget([job.job_id for job in ready if job.job_id not in liftable])
        behind = self.contact_view.behind(sorted(liftable)) if liftable else set()
        if not behind:
            return ready
        look_again = self.clock() + self.settings.contact_view_recheck_seconds
        for job_id in behind:
            result[job_id] = Hold(look_again, "contact view behind")
        held = {job_id for job_id, hold in result.items() if hold is not None}
        waiting = _behind_holds(sequences, held) | behind
        return [job for job in ready if job.job_id not in waiting]

    def _screen(self, claimed, reasons, result, outcomes) -> list[Job]:
        """Skip the jobs of a cancelled campaign and of contacts that
        unsubscribed, were suppressed, bounced, complained or were erased.
        Give back the jobs whose contact changed since the fan-out read it:
        contacts answers delivery.held with the job as the contact is now,
        so a corrected address gets the message and the old one does not."""
        sendable, stale = [], []
        for job in claimed:
            reason = reasons[job.job_id]
            if reason == CONTACT_CHANGED:
                outcomes.append((job.job_id, RELEASED, {}))
                stale.append(job)
                result[job.job_id] = DONE
            elif reason:
                outcomes.append(self._settle(job, SKIPPED, "delivery.skipped", {"reason": reason},
                                             erased=reason == "erased"))
                result[job.job_id] = DONE
            else:
                sendable.append(job)
        if stale:
            # before the offsets are committed past them
            wait = timedelta(seconds=self.settings.contact_answer_seconds)
            for doc in self.held.hold(stale, self._now() + wait):
                self._publish_held(doc)
        return sendable

    def _throttle(self, sendable, campaigns, result, outcomes) -> list[smtp.SendTask]:
        """Tasks within each campaign's rate; the rest gives its claim back
        and is parked until the next window or minute (as in _admit). A
        test send counts nowhere and carries its own campaign: grouped
        with its campaign's jobs, the group's first job decided for all,
        and a test send ahead of them let them past the hourly quota."""
        tasks = []
        for job in (j for j in sendable if j.test):
            own = campaigns[job.job_id]
            tasks.append(self._task(job, own, self._domain_limit(own)))
        over: list[Job] = []
        due_at: dict[str, datetime] = {}
        for campaign_id, group in _by_campaign([j for j in sendable if not j.test]).items():
            campaign = campaigns[group[0].job_id]
            grant = self.limiter.grant(campaign_id, len(group), campaign.limits)
            allowed = group[:grant.granted]
            for job in group[len(allowed):]:
                outcomes.append((job.job_id, RELEASED, {"reason": "rate limit"}))
                over.append(job)
                due_at[job.job_id] = datetime.fromtimestamp(grant.retry_at, timezone.utc)
                result[job.job_id] = DONE
                metrics.PARKED.labels("hourly quota" if grant.hourly else "rate limit").inc()
            limit = self._domain_limit(campaign)
            tasks.extend(self._task(job, campaign, limit) for job in allowed)
        self._park(over, due_at)
        return tasks

    def _domain_limit(self, campaign: Campaign) -> int:
        """A campaign's per-domain concurrency is for all its senders
        together: each takes its share (the part of send.jobs it reads, as
        for the rate), at least one; where that could come to less than one,
        _fit_slots sets the slots it holds instead. Per process, two senders
        doubled it. The operator's default stays a cap per process."""
        asked = campaign.limits.per_domain_concurrency
        if asked is None:
            return self.settings.default_domain_concurrency
        return max(1, math.floor(asked * self.limiter.share + 1e-9))

    def _send(self, tasks, result) -> tuple[float, list[Job]]:
        """Compose and send; record every few dozen outcomes while the
        connections go on, so a sender killed mid-batch re-sends (same
        Message-ID) only what it had not recorded. Returns the seconds spent
        recording and the jobs deferred."""
        self.messenger.submit(tasks, time.monotonic() + self.settings.batch_deadline_seconds)
        left = len(tasks)
        recording = 0.0
        deferred = []
        while left:
            done = self.messenger.collect(min(left, self.settings.record_every))
            outcomes = []
            for task in done:
                outcome, hold = self._after_send(task)
                outcomes.append(outcome)
                result[task.job.job_id] = hold
                if outcome[1] == DEFERRED:
                    deferred.append(task.job)
            started = time.perf_counter()
            self.deliveries.record(outcomes, self.settings.record_patience_seconds)
            recording += time.perf_counter() - started
            left -= len(done)
        self.messenger.collect(0, 0)  # forget the finished batch
        return recording, deferred

    def _forget_erased_since(self, jobs: list[Job]) -> None:
        """The records of contacts erased while their batch went out (their
        messages on the wire, or their skips recorded ahead of the sends),
        as the erasure left the others: it rewrote what was recorded when it
        ran, and these were recorded after, under the contact's id and with
        the SMTP reply (which may quote the name). The erasure marks the
        contact state first, so one of the two sees the other."""
        if not jobs:
            return
        try:
            erased = self.contacts.erased_jobs(jobs)
            if erased:
                self.deliveries.forget_contacts(erased)
        except Exception:  # the messages are out and recorded: the batch stands
            log.warning("records of contacts erased meanwhile not rewritten", exc_info=True)

    def _mark_deferred(self, jobs: list[Job]) -> None:
        """Once their retries are out, mark the deferred jobs' claims: a job
        after one released at the deadline (or held) is read again with it,
        and this copy, found deferred, is not sent again at once (nor put on
        send.retry a second time)."""
        if not jobs:
            return
        self.publisher.flush()  # a failure here is the batch's: the retries are not out
        try:
            self.deliveries.deferred(jobs)
        except Exception:  # failing the batch for it re-sent them (after the lease) for nothing
            log.warning("deferred jobs not marked; a copy read again is tried once their "
                        "claims' lease runs out", exc_info=True, extra={"jobs": len(jobs)})

    def ask_contacts_again(self, flush: Callable[[], None]) -> int:
        """delivery.held again for held jobs whose answer is due and has not
        come (HeldJobs); at most one page a call, so a poll is never kept
        waiting long. An ask that was only slow brings one answer more,
        which comes late and is dropped (_take_answers); the widening waits
        keep those few."""
        now = self._now()
        docs = self.held.due(now)
        for doc in docs:
            self._publish_held(doc)
        if docs:
            flush()
        for doc in docs:
            wait = min(self.settings.contact_answer_seconds * 2 ** doc.get("asks", 1),
                       self.settings.contact_answer_max_seconds)
            self.held.asked_again(doc["_id"], now + timedelta(seconds=wait))
        return len(docs)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), timezone.utc)

    def unpark(self, flush: Callable[[], None]) -> int:
        """Put the parked jobs of campaigns no longer paused back on the jobs
        topic (a resumed one sends them, a cancelled one skips them): a
        rate-limited campaign's once due, and no more at a time than its
        window takes (RateLimiter.pace). Safe to run anywhere, any time: a
        job put back twice is claimed once."""
        moved = 0
        for campaign_id in self._parked_campaigns():
            if campaign_id == TEST_SENDS:  # each carries its own campaign
                moved += self._put_back(campaign_id, flush, due_by=self._now())
                continue
            campaign = self.campaigns.get_many([campaign_id]).get(campaign_id)
            if campaign is None:
                self._drop_if_erased(campaign_id)
                continue
            if campaign.status == PAUSED:
                continue
            limits = campaign.limits
            if campaign.status == CANCELLED:  # all of them, to be skipped
                moved += self._put_back(campaign_id, flush)
            elif limits.per_second or limits.per_hour:
                moved += self._put_back(campaign_id, flush, self.limiter.pace(campaign_id, limits),
                                        due_by=self._now())
            else:
                moved += self._put_back(campaign_id, flush, due_by=self._now())
        return moved

    def _parked_campaigns(self) -> list[str]:
        """The campaigns with parked jobs: listed afresh every few seconds,
        not at every unpark (twice a second). Listing them is a distinct
        over parked_jobs, which MongoDB reads from its index but FerretDB
        from every document: 0.7 s for a paused campaign's 100,000 jobs,
        twice a second, per sender. The longer a listing takes, the longer
        until the next (at most a 20th of the time spent on it). Between
        listings, the campaigns this engine parked itself are added at
        once; those only another sender parked are found at the next
        listing, and their parker puts them back meanwhile."""
        now = self.clock()
        if now >= self._list_parked_at:
            here, self._parked_here = self._parked_here, set()  # parked from now on: added
            started = time.monotonic()
            try:
                self._listed_parked = set(self.parked.campaigns())
            except Exception:
                self._parked_here |= here  # still to be put back
                raise
            took = time.monotonic() - started
            self._list_parked_at = now + min(PARKED_LIST_MOST_SECONDS,
                                             max(PARKED_LIST_SECONDS, 20 * took))
        return sorted(self._listed_parked | self._parked_here)

    def _drop_if_erased(self, campaign_id: str) -> None:
        """A campaign unknown here whose account was erased: its jobs parked
        after the erasure deleted the account's parked jobs (this sender's
        view of erased accounts is up to a second old) would otherwise stay
        parked for ever, addresses and all."""
        docs = self.parked.take(campaign_id, limit=1)
        if docs and self.campaigns.erased_accounts({docs[0]["account_id"]}):
            self.parked.forget_account(docs[0]["account_id"])

    def _put_back(self, campaign_id: str, flush: Callable[[], None], most: int | None = None,
                  due_by: datetime | None = None) -> int:
        """Up to `most` (None: all) of the campaign's parked jobs due by
        `due_by` back on send.jobs, out before they leave the parking."""
        moved = 0
        # A job the send.job schema refuses (one parked by an older
        # version, say) stays parked, logged: raising here stopped every
        # paused campaign after it from resuming, on every try.
        refused: list[str] = []
        while most is None or moved < most:
            page = 1000 if most is None else min(1000, most - moved)
            docs = self.parked.take(campaign_id, limit=page, exclude=refused, due_by=due_by)
            if not docs:
                break
            out = []
            for doc in docs:
                job_id = parked_job_id(doc)
                try:
                    self.publisher.publish(self.settings.routes.jobs, new_event(
                        "send.job", source=SOURCE, subject=job_id,
                        account_id=doc["account_id"], data=doc["data"]), key=job_id)
                except InvalidEvent:
                    log.error("a parked job fails the send.job schema; it stays parked",
                              extra={"job_id": job_id, "campaign_id": campaign_id})
                    refused.append(doc["_id"])
                    continue
                out.append(doc)
            flush()
            self.parked.remove(out)
            moved += len(out)
        return moved

    # -----------------------------------------------------------------------
    def _campaigns_of(self, jobs: list[Job]) -> dict[str, Campaign]:
        """job id -> its campaign (a test send carries its own)."""
        known = self.campaigns.get_many(j.campaign_id for j in jobs if not j.inline_campaign)
        out = {}
        for job in jobs:
            if job.inline_campaign:
                # A test send counts nowhere: no pixel, and its links go
                # straight to their targets (a draft's links are known to
                # no tracking service, whose redirect would be a 404).
                out[job.job_id] = Campaign.from_launched(
                    job.account_id, {**job.inline_campaign, "tracking": False})
            elif known.get(job.campaign_id) is not None:
                out[job.job_id] = known[job.campaign_id]
        return out

    def _task(self, job: Job, campaign: Campaign, domain_limit: int) -> smtp.SendTask:
        def compose():
            return self.composer_for(campaign).compose(job)
        return smtp.SendTask(job, compose, domain_limit)

    def _after_send(self, task: smtp.SendTask) -> tuple[tuple[str, str, dict], Hold | None]:
        job, out = task.job, task.outgoing
        # The reply's text stays in the sender's own record: a remote server
        # may put the recipient's name in it, which no event stream may carry.
        detail = {"smtp_code": task.code, "smtp_status": enhanced_status(task.reply)}
        reply = {"smtp_reply": mask_emails(task.reply)[:450]}
        if out is not None:
            detail.update(message_id=out.message_id, size_bytes=len(out.message))
        if task.outcome == ACCEPTED:
            # The revision of the contact this message went to: a complaint
            # or bounce about it then suppresses that address, not the one
            # the contact may have moved to since (contacts' handlers).
            return self._settle(job, SENT, "delivery.sent",
                                {**detail, "contact_revision": job.contact_revision},
                                reply), DONE
        if task.outcome == PERMANENT:
            return self._settle(job, FAILED, "delivery.failed",
                                {**detail, "reason": "rejected by the relay"}, reply), DONE
        if task.outcome == smtp.COMPOSE_FAILED:  # the error may quote the merge data
            return self._settle(job, FAILED, "delivery.failed", {"reason": "cannot compose"},
                                {"compose_error": mask_emails(task.reply)[:300]}), DONE
        if task.outcome == smtp.RELEASED:
            return (job.job_id, RELEASED, {}), Hold(self.clock(), "released")
        # transient: try again later, or give up after the last attempt
        if self.retry.exhausted(job.attempt):
            self._dead(job, task.reply)
            return self._settle(job, FAILED, "delivery.failed",
                                {**detail, "reason": EXHAUSTED}, reply), DONE
        retry_at = self.retry.not_before(job.attempt, datetime.now(timezone.utc))
        self._reschedule(job, retry_at.timestamp(), job.attempt + 1)
        return self._settle(job, DEFERRED, "delivery.deferred", detail, reply), DONE

    def _settle(self, job: Job, state: str, event_type: str, fields: dict,
                kept: dict | None = None, erased: bool = False):
        """Announce the outcome (fields: the event's data) and return its
        record; `kept` goes into the record only, never onto the stream. A
        job skipped because its contact was erased is told under a pseudonym
        and without its provider: the erasure ran before this record existed,
        so nothing would replace them later. The stream names the recipient's
        mailbox provider, never their domain (shared/mailbox_providers.py)."""
        data = {"job_id": job.job_id, "campaign_id": job.campaign_id,
                "contact_id": pseudonym() if erased else job.contact_id,
                "attempt": job.attempt, "test": job.test,
                **({} if erased else {"mailbox_provider": provider_of(job.recipient_domain)}),
                **{k: v for k, v in fields.items() if v is not None}}
        self.publisher.publish(self.settings.routes.delivery, self._event(job, event_type, data),
                               key=job.job_id)
        metrics.OUTCOMES.labels(event_type.split(".", 1)[1]).inc()
        return job.job_id, state, {"event": {"type": event_type, "data": data},
                                   "account_id": job.account_id,
                                   "campaign_id": job.campaign_id, "attempt": job.attempt,
                                   **(kept or {})}

    def _publish_held(self, held: dict) -> None:
        """delivery.held, from the job's HeldJobs document: contacts answers
        with the job as the contact is now."""
        self.publisher.publish(self.settings.routes.delivery, new_event(
            "delivery.held", source=SOURCE, subject=held["_id"], account_id=held["account_id"],
            data={"job_id": held["_id"], "campaign_id": held["campaign_id"],
                  "contact_id": held["contact_id"], "list_id": held.get("list_id"),
                  **({"via_list_ids": held["via_list_ids"]} if held.get("via_list_ids") else {}),
                  "attempt": held["attempt"], "reason": CONTACT_CHANGED,
                  **({"hold": held["hold"]} if held.get("hold") else {})}), key=held["_id"])
        metrics.OUTCOMES.labels("held").inc()

    def _reschedule(self, job: Job, at: float, attempt: int) -> None:
        data = {**job.copy_data(), "attempt": attempt,
                "not_before": datetime.fromtimestamp(at, timezone.utc).isoformat()}
        self.publisher.publish(self.settings.routes.retry, self._event(job, "send.job", data),
                               key=job.job_id)

    def _announce_again(self, job: Job, record: dict) -> None:
        """A job found finished (its events may not have gone out before a
        crash): publish its outcome again; consumers count once per job. One
        that ran out of retries goes to the dead letters again too, with the
        job as this copy of it carries it (the record keeps no address)."""
        event = record.get("event")
        if event:
            self.publisher.publish(self.settings.routes.delivery,
                                   self._event(job, event["type"], event["data"]), key=job.job_id)
        if event and event["data"].get("reason") == EXHAUSTED:
            self._dead(job, record.get("smtp_reply") or "")

    def _dead(self, job: Job, reply: str) -> None:
        self.publisher.publish(self.settings.routes.dlq, self._event(job, "send.dead", {
            "job": job.copy_data(), "reason": f"{job.attempt + 1} attempts: {reply}"[:1000]}),
            key=job.job_id)

    @staticmethod
    def _event(job: Job, event_type: str, data: dict):
        return new_event(event_type, source=SOURCE, subject=job.job_id,
                         account_id=job.account_id, data=data)


def _behind_holds(sequences: list[list[Job]], held: set[str]) -> set[str]:
    """The ids of the jobs after a held one in their sequence, which wait
    with it. Not an id also met ahead of any hold (a job twice in the batch,
    as a redelivery or a retry copy): that copy goes on, and taking its
    disposition away left its partition with neither a disposition nor a
    hold, which the loop committed past."""
    behind, ahead = set(), set()
    for sequence in sequences:
        seen_hold = False
        for job in sequence:
            if job.job_id in held:
                seen_hold = True
            elif seen_hold:
                behind.add(job.job_id)
            else:
                ahead.add(job.job_id)
    return behind - ahead


def _latest_attempts(sequences: list[list[Job]]) -> list[list[Job]]:
    """The sequences without the copies of a job older than another copy of
    it in the batch: a redelivered attempt whose retry is here and due."""
    latest: dict[str, int] = {}
    for sequence in sequences:
        for job in sequence:
            latest[job.job_id] = max(latest.get(job.job_id, job.attempt), job.attempt)
    return [[job for job in sequence if job.attempt >= latest[job.job_id]]
            for sequence in sequences]


def _by_campaign(jobs: list[Job]) -> dict[str, list[Job]]:
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.campaign_id, []).append(job)
    return groups

