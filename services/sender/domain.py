"""The sender's rules, free of Kafka, MongoDB and SMTP: what a campaign
allows, what an SMTP answer means, when a failed job is tried again."""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Any, Callable

from shared.tracking_tokens import stand_in_id

# Campaign status as the sender knows it (from campaigns.events).
SENDING, PAUSED, CANCELLED = "sending", "paused", "cancelled"

# What becomes of a claimed job. FINAL outcomes are recorded for good; a
# deferred (send.retry) or released (not attempted) job gives its claim back.
SENT, FAILED, SKIPPED, DEFERRED, RELEASED = "sent", "failed", "skipped", "deferred", "released"
FINAL = (SENT, FAILED, SKIPPED)
# Why a claimed job is given back unsent: its contact's address, name or
# fields changed after the fan-out read them, and contacts sends it again.
CONTACT_CHANGED = "contact_changed"
# Where parked test sends are kept (in place of a campaign id): each carries
# its own draft campaign, which no sender may know, so they go back when
# due, whatever that campaign's state.
TEST_SENDS = "test-sends"


def parked_job_id(doc: dict) -> str:
    """The job a parked_jobs document holds (store.ParkedJobs.park; one
    parked before 2026-12-07 is named by the job id itself)."""
    return doc.get("job_id") or doc["_id"]


_HEX32 = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Limits:
    per_second: float | None = None
    per_hour: int | None = None
    per_domain_concurrency: int | None = None

    @classmethod
    def from_event(cls, raw: dict | None) -> "Limits":
        raw = raw or {}
        return cls(raw.get("per_second") or None, raw.get("per_hour") or None,
                   raw.get("per_domain_concurrency") or None)


@dataclass(frozen=True)
class Campaign:
    """What a sender needs of a campaign: the frozen template and settings
    from campaign.launched, and the status pause/resume/cancel set."""

    campaign_id: str
    account_id: str
    template: dict[str, Any]
    sender: dict[str, Any]
    limits: Limits = field(default_factory=Limits)
    tracking: bool = True
    postal_address: str = ""
    kind: str = "marketing"
    status: str = SENDING
    version: int = 0  # bumps on every status change, so caches can tell

    @classmethod
    def from_launched(cls, account_id: str, data: dict, status: str = SENDING) -> "Campaign":
        return cls(campaign_id=data["campaign_id"], account_id=account_id,
                   template=dict(data["template"]), sender=dict(data["sender"]),
                   limits=Limits.from_event(data.get("limits")),
                   tracking=bool(data.get("tracking", True)),
                   postal_address=data.get("postal_address") or "",
                   kind=data.get("kind") or "marketing", status=status)

    @cached_property
    def composer_key(self) -> tuple:
        """Everything a Composer reads (worker.ComposerCache): a draft's
        sender, postal address and kind change without a new template
        version. Made once per campaign object, not per message."""
        return (self.campaign_id, self.template.get("version"), self.tracking, self.kind,
                self.postal_address, json.dumps(self.sender, sort_keys=True))


@dataclass(frozen=True)
class Job:
    job_id: str
    campaign_id: str
    contact_id: str
    account_id: str
    list_id: str | None
    email: str
    name: str | None
    fields: dict[str, Any]
    attempt: int
    not_before: datetime | None
    test: bool
    inline_campaign: dict | None  # a test send carries its (never launched) campaign
    data: dict = field(default_factory=dict, compare=False, repr=False)  # the event's data
    contact_revision: int = 0  # the contact's, when the fan-out read it
    withdrawn: bool = False    # contacts found no contact to send it to again
    # Contacts' answer to a delivery.held: the hold's token, which the held
    # event carried (HeldJobs), or True from a contacts older than tokens.
    answers_held: str | bool = False
    # The lists that put the contact in the audience (send.job via_list_ids):
    # unsubscribed from all of them since the fan-out, it is not mailed.
    via_list_ids: tuple[str, ...] = ()
    # The send.job event it came in (None: built otherwise): a record read
    # again is the same event, a job put back on send.jobs a new one.
    event_id: str | None = field(default=None, compare=False)

    @classmethod
    def from_event(cls, account_id: str, data: dict, event_id: str | None = None) -> "Job":
        recipient = data.get("recipient") or {}  # none on a withdrawn job
        not_before = data.get("not_before")
        return cls(job_id=data["job_id"], campaign_id=data["campaign_id"],
                   contact_id=data["contact_id"], account_id=account_id,
                   list_id=data.get("list_id"), email=recipient.get("email", ""),
                   name=recipient.get("name"), fields=recipient.get("fields") or {},
                   attempt=int(data.get("attempt") or 0),
                   not_before=parse_time(not_before) if not_before else None,
                   test=bool(data.get("test")), inline_campaign=data.get("campaign"),
                   data=data, contact_revision=int(data.get("contact_revision") or 0),
                   withdrawn=bool(data.get("withdrawn")),
                   answers_held=data.get("answers_held") or False,
                   via_list_ids=tuple(data.get("via_list_ids") or ()), event_id=event_id)

    @property
    def hold_token(self) -> str | None:
        """The hold this job answers, when the answer names it."""
        return self.answers_held if isinstance(self.answers_held, str) else None

    def copy_data(self) -> dict:
        """The job's data for a copy of it put back for later (send.retry,
        parked, the dead letters): a copy is no answer to delivery.held, and
        would otherwise be taken for a late one and dropped, or end a newer
        hold of the job."""
        return {key: value for key, value in self.data.items() if key != "answers_held"}

    @property
    def recipient_domain(self) -> str:
        return self.email.rpartition("@")[2].lower()


def parse_time(raw: str) -> datetime:
    value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def hex_id(value: str) -> str:
    """Tracking tokens carry 16-byte ids; platform ids are uuid4().hex. Any
    other id (a test send's "test-1") maps to a stable 32-hex stand-in."""
    return value if _HEX32.match(value or "") else stand_in_id(value)


def message_id(job_id: str, sending_domain: str) -> str:
    """The same job always gets the same Message-ID, so a duplicate caused
    by a crash mid-send is recognisable (and deduplicated by many receivers)."""
    return f"<{job_id}@{sending_domain}>"


# ---------------------------------------------------------------- SMTP answers

TRANSIENT, PERMANENT, ACCEPTED = "transient", "permanent", "accepted"


_ENHANCED_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


def enhanced_status(reply: str) -> str | None:
    """The RFC 3463 status of an SMTP reply ("5.1.1"), if it gives one: what
    the event streams carry instead of the reply's free text, which a remote
    server may fill with the recipient's address or name."""
    match = _ENHANCED_STATUS.search(reply or "")
    return match.group(1) if match else None


def classify(code: int | None) -> str:
    """2xx accepted, 5xx permanent; anything else is transient: no code
    (connection lost, timeout), 4xx, and a reply that is no SMTP reply
    (smtplib's -1 for a garbled line, a 1xx or 3xx where none belongs),
    which says nothing about the address."""
    if code is not None and 200 <= code < 300:
        return ACCEPTED
    if code is not None and 500 <= code < 600:
        return PERMANENT
    return TRANSIENT


# ---------------------------------------------------------------------- retries

@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_seconds: float = 30.0
    max_seconds: float = 3600.0

    def exhausted(self, attempt: int) -> bool:
        """`attempt` (0-based) just failed: is there no try left?"""
        return attempt + 1 >= self.max_attempts

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Full-jitter exponential backoff after failed attempt `attempt`:
        uniform in [cap/2, cap] with cap = base * 2**attempt, bounded."""
        cap = min(self.max_seconds, self.base_seconds * (2 ** attempt))
        return cap / 2 + rng() * cap / 2

    def not_before(self, attempt: int, now: datetime,
                   rng: Callable[[], float] = random.random) -> datetime:
        return now + timedelta(seconds=self.delay(attempt, rng))
