"""What the public endpoints do, with their dependencies as arguments."""
from __future__ import annotations

import email
import email.policy
import hashlib
import logging
import re
import time
from datetime import datetime, timezone
from dataclasses import dataclass
from email.parser import BytesParser
from typing import Callable, NamedTuple

from services.tracking import domain
from services.tracking.reports import Report, header_text, parse_report
from services.tracking.store import TrackingStore
from shared import topics
from shared.erased_contacts import ErasedContacts
from shared.events import Event, new_event
from shared.kafka.producer import EventProducer
from shared.privacy_answers import is_pseudonym, pseudonym_of
from shared.tracing import new_trace_id
from shared.tracking_tokens import TEST_SEND_CONTACTS, Claims, InvalidToken, Keyring, verify

log = logging.getLogger(__name__)
SOURCE = "tracking"


def _stable_id(*parts: str) -> str:
    """The same fact gets the same event id, so consumers drop repeats."""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def hit_event(claims: Claims, method: str, user_agent: str, ip: str,
              at: float | None = None) -> Event:
    """tracking.opened / tracking.clicked: ids, UA family and /24 at most.
    `at` (epoch seconds) is when the hit came, if the event is built later.
    Each hit starts its own trace."""
    ctx = claims.context
    verdict = domain.classify_request(method, user_agent, ip, claims.kind)
    data = {"campaign_id": ctx.campaign_id, "contact_id": ctx.contact_id, "job_id": ctx.job_id,
            "machine": verdict.machine,
            "user_agent_family": domain.user_agent_family(user_agent),
            "ip_prefix": domain.truncate_ip(ip)}
    if verdict.reason:
        data["machine_reason"] = verdict.reason
    if claims.kind == "click":
        data["link_index"] = claims.link_index
    if ctx.sent_at is not None:  # from the token: the worker's rule 5 needs no delivery.sent
        data["sent_at"] = datetime.fromtimestamp(ctx.sent_at, timezone.utc).isoformat()
    kind = "tracking.opened" if claims.kind == "open" else "tracking.clicked"
    when = datetime.fromtimestamp(time.time() if at is None else at, timezone.utc)
    return Event(type=kind, source=SOURCE, subject=ctx.campaign_id, account_id=ctx.account_id,
                 data=data, time=when.isoformat(timespec="milliseconds"),
                 trace_id=new_trace_id())


# ------------------------------------------------------------ unsubscribe

def unsubscribe_event(claims: Claims, whole_account: bool, method: str) -> Event:
    """list_id null means every list of the account."""
    ctx = claims.context
    list_id = None if whole_account else claims.list_id
    data = {"campaign_id": ctx.campaign_id, "contact_id": ctx.contact_id, "job_id": ctx.job_id,
            "list_id": list_id, "method": method}
    return new_event("tracking.unsubscribed", source=SOURCE, subject=ctx.campaign_id,
                     account_id=ctx.account_id, data=data,
                     id=_stable_id("unsubscribe", ctx.job_id, list_id or "all"))


def publish_unsubscribe(event: Event, producer: Callable[[], EventProducer],
                        store: TrackingStore, erased: Callable[[Event], bool]) -> str | None:
    """An unsubscribe from the page, one-click or mail: published durably,
    unless it is a test send's (nothing to unsubscribe, nothing to count)
    or an erased contact's (already suppressed everywhere, and its id must
    not come back). Returns where it went, None when it went nowhere."""
    if event.data["contact_id"] in TEST_SEND_CONTACTS or erased(event):
        return None
    return publish_durably(event, producer, store)


def publish_durably(event: Event, producer: Callable[[], EventProducer],
                    store: TrackingStore) -> str:
    """Kafka now, or MongoDB and relayed later: never lost. Returns where it went.
    Raises only if both are down (the caller answers 503)."""
    try:
        producer().publish_now(topics.TRACKING_EVENTS, event, event.subject)
        return "kafka"
    except Exception:
        log.warning("publishing %s failed; parking it for the relay", event.type, exc_info=True)
    store.park_event(event.id, topics.TRACKING_EVENTS, event.subject, event.to_dict())
    return "parked"


def relay_parked(store: TrackingStore, producer: EventProducer,
                 withheld: Callable[[Event], bool] = lambda event: False) -> int:
    """Publish what was parked while Kafka was away; `withheld` (an erased
    contact's, which may have been erased since it was parked) is dropped."""
    parked = store.parked_events()
    if not parked:
        return 0
    for doc in parked:
        body = doc["body"]
        event = Event(type=body["type"], source=body["source"], subject=body["subject"],
                      account_id=body["accountid"], data=body["data"], id=body["id"],
                      time=body["time"], trace_id=body.get("traceid", ""))
        if not withheld(event):
            producer.publish(doc["topic"], event, doc["key"])
    producer.flush(timeout=30)
    store.unpark([doc["_id"] for doc in parked])
    return len(parked)


# ---------------------------------------------------------------- bounces

class BounceRejected(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class BounceOutcome:
    result: str          # "hard_bounce" | "soft_bounce" | "complaint" | "unsubscribe" | "ignored"
    job_id: str | None = None
    event_id: str | None = None
    reason: str = ""


class ReportedMessage(NamedTuple):
    """The message a report is about. Not a LinkContext: the delivery record
    of an erased contact's message holds a pseudonym, not an id."""
    account_id: str
    campaign_id: str
    contact_id: str
    job_id: str
    contact_revision: int | None = None  # the contact's when the message went out


def resolve_context(report: Report, keyring: Keyring, store: TrackingStore) -> ReportedMessage:
    bounce_jobs, contexts = [], []
    for token in report.bounce_tokens:
        try:
            bounce_jobs.append(verify(keyring, token).job_id)
        except InvalidToken:
            continue
    for token in report.link_tokens:
        try:
            claims = verify(keyring, token)
        except InvalidToken:
            continue
        if claims.context is not None:
            contexts.append(claims.context)
    for ctx in contexts:
        if not bounce_jobs or ctx.job_id in bounce_jobs:
            delivery = store.delivery(ctx.job_id) or {}
            return ReportedMessage(ctx.account_id, ctx.campaign_id, ctx.contact_id, ctx.job_id,
                                   delivery.get("contact_revision"))
    for job_id in bounce_jobs:
        delivery = store.delivery(job_id)
        if delivery and delivery.get("campaign_id"):
            return ReportedMessage(delivery["account_id"], delivery["campaign_id"],
                                   delivery["contact_id"], job_id,
                                   delivery.get("contact_revision"))
    if bounce_jobs:
        raise BounceRejected(503, "job_not_known_yet",
                             "the message this report is about is not recorded yet; retry later")
    raise BounceRejected(422, "no_token", "the report names no message this platform signed")


_MAILED_UNSUBSCRIBE = re.compile(r"^\s*unsubscribe\s+([A-Za-z0-9_-]{60,200})\s*$", re.IGNORECASE)


def mailed_unsubscribe(raw: bytes, keyring: Keyring) -> Claims | None:
    """A mail to the List-Unsubscribe mailto address (compose.py): its
    subject is "unsubscribe <token>", and the token must verify."""
    # compat32, as reports.py reads: the default policy raised on a header
    # it could not parse ("charset*" with no value), and anyone can mail us.
    # The headers alone: a report is parsed whole next (parse_report).
    headers = BytesParser(policy=email.policy.compat32).parsebytes(raw, headersonly=True)
    subject = header_text(headers, "Subject")
    match = _MAILED_UNSUBSCRIBE.match(subject)
    if not match:
        return None
    try:
        claims = verify(keyring, match.group(1))
    except InvalidToken:
        return None
    return claims if claims.kind == "unsubscribe" else None


def _take_mailed_unsubscribe(claims: Claims, store: TrackingStore,
                             producer: Callable[[], EventProducer],
                             erased_contacts: ErasedContacts | None) -> BounceOutcome:
    """As the one-click POST does (public.unsubscribe): the list the link
    names, or every list; kept in MongoDB if Kafka will not take it."""
    event = unsubscribe_event(claims, claims.list_id is None, "mail")

    def erased(e: Event) -> bool:
        return erased_contacts is not None and erased_contacts.erased(e.account_id,
                                                                      e.data["contact_id"])
    try:
        went = publish_unsubscribe(event, producer, store, erased)
    except Exception as exc:
        raise BounceRejected(503, "unavailable", "could not record the unsubscribe; retry") from exc
    if went is None:
        return BounceOutcome("ignored", claims.context.job_id,
                             reason="a test send's, or an erased contact's: nothing to unsubscribe")
    return BounceOutcome("unsubscribe", claims.context.job_id, event.id)


def take_bounce_report(raw: bytes, keyring: Keyring, store: TrackingStore,
                       producer: Callable[[], EventProducer], soft_limit: int,
                       erased_contacts: ErasedContacts | None = None) -> BounceOutcome:
    """A report about an erased contact's message is told under a fresh
    pseudonym and adds to no soft-bounce tally: the erasure took the id out
    of every record, and a report must not bring it back."""
    if not raw.strip():
        raise BounceRejected(400, "empty_body", "the body must be an RFC 5322 message")
    unsubscribing = mailed_unsubscribe(raw, keyring)
    if unsubscribing is not None:
        return _take_mailed_unsubscribe(unsubscribing, store, producer, erased_contacts)
    report = parse_report(raw)
    if report.kind == "ignored":
        return BounceOutcome("ignored", reason=report.reason)
    ctx = resolve_context(report, keyring, store)
    if ctx.contact_id in TEST_SEND_CONTACTS:
        # A test send counts nowhere: its report would count in the
        # campaign's figures (its job carries the real campaign id).
        return BounceOutcome("ignored", ctx.job_id, reason="a test send's: nothing to count")
    erased = is_pseudonym(ctx.contact_id) or (
        erased_contacts is not None and erased_contacts.erased(ctx.account_id, ctx.contact_id))
    if erased and report.kind == "complaint":
        # Its marker is per contact: under a pseudonym each retry of the
        # report would count another complaint. The erasure already put the
        # address on the platform-wide suppression list.
        return BounceOutcome("ignored", ctx.job_id, reason="the contact was erased")
    data = {"campaign_id": ctx.campaign_id, "job_id": ctx.job_id,
            # the same for every retry of the report, as its event id is
            "contact_id": pseudonym_of(f"bounce|{ctx.job_id}") if erased else ctx.contact_id}
    if ctx.contact_revision is not None and not erased:
        data["contact_revision"] = ctx.contact_revision
    if report.kind == "complaint":
        data["feedback_type"] = report.feedback_type or "abuse"
        event = new_event("tracking.complained", source=SOURCE, subject=ctx.campaign_id,
                          account_id=ctx.account_id, data=data,
                          id=_stable_id("complaint", ctx.job_id))
        result = "complaint"
    else:
        bounce_type = report.bounce_type
        if bounce_type == "soft" and not erased:
            seen = store.add_soft_bounce(ctx.account_id, ctx.contact_id, ctx.job_id)
            if seen >= soft_limit:
                bounce_type = "hard"
                data["escalated"] = True
        data["bounce_type"] = bounce_type
        if report.status:
            data["status"] = report.status
        event = new_event("tracking.bounced", source=SOURCE, subject=ctx.campaign_id,
                          account_id=ctx.account_id, data=data,
                          # a soft then a hard bounce of one message are two facts
                          id=_stable_id("bounce", ctx.job_id, bounce_type))
        result = f"{bounce_type}_bounce"
    try:
        producer().publish_now(topics.TRACKING_EVENTS, event, ctx.campaign_id)
    except Exception as exc:
        # The sender of the webhook retries; nothing is recorded half-way.
        raise BounceRejected(503, "broker_unavailable", "could not record the report; retry") from exc
    return BounceOutcome(result, ctx.job_id, event.id)
