"""What the campaigns service does. Dependencies come in as arguments (a
`Ports` bundle): the HTTP API, the worker and the unit tests share these."""
from __future__ import annotations

import logging
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable

from services.campaigns import domain
from services.campaigns.htmltext import html_to_text
from services.campaigns.store import (CampaignStore, JobStateStore, ProgressStore,
                                      TemplateStore, VersionConflict, utcnow)
from shared import templating, topics
from shared.events import Event, new_event
from shared.http.errors import ApiError, not_found
from shared.jobs import job_id_for
from shared.kafka.producer import EventProducer
from shared.links import extract_links, rewrite_links
from shared.mongo import as_utc
from shared.tracking_tokens import TEST_SEND_CONTACTS

log = logging.getLogger(__name__)
SOURCE = "campaigns"


@dataclass
class Ports:
    templates: TemplateStore
    campaigns: CampaignStore
    jobs: JobStateStore
    progress: ProgressStore
    producer: EventProducer
    # Delivery outcomes read but not yet written (see flush_progress).
    pending: list = field(default_factory=list)


# -- templates -------------------------------------------------------------
# As long as a tracked link's click URL renders (base URL, /t/c/, a 112-
# character token), so the trial render at save builds what the sender's will.
_A_CLICK_URL = "https://tracking.example.com/t/c/" + "x" * 128


def _template_parts(body: dict, kind: str) -> dict:
    """Validated, versionable parts: refused with 400 naming the field, the
    line and the reason when a part does not compile in the sandbox."""
    parts = {"subject": body["subject"], "preheader": body.get("preheader") or "",
             "html": body["html"], "text": body.get("text")}
    too_big = domain.template_size_problems(parts)  # first, as given: compiling costs
    if too_big:
        raise ApiError(400, "validation_error", "invalid input: html", too_big)
    problems = domain.template_problems(parts)
    if problems:
        raise ApiError(400, "validation_error",
                       "invalid input: " + ", ".join(sorted(problems)), problems)
    text_derived = not parts["text"]
    if text_derived:
        parts["text"] = html_to_text(parts["html"])
    if kind == "marketing":
        parts["html"], parts["text"] = domain.with_compliance_footer(parts["html"],
                                                                     parts["text"])
    # What we derived or appended must compile too (it does, unless the
    # derived text turned an HTML-escaped brace into template syntax).
    derived_problems = domain.template_problems({"html": parts["html"], "text": parts["text"]})
    if derived_problems:
        raise ApiError(400, "validation_error", "invalid input: text",
                       {"text": ["the text derived from the HTML does not compile; give a "
                                 "text part"]})
    parts["links"] = extract_links(parts["html"])
    # What the sender compiles: the preheader inside the HTML part (one
    # template, one render budget), and with tracking each link replaced by
    # its click URL (a link's text holding "#}" closed a comment the
    # template had opened). Each part may pass alone and not as sent.
    as_sent = domain.template_problems({"html": templating.html_with_preheader(
        rewrite_links(parts["html"], parts["links"], lambda _: _A_CLICK_URL,
                      personal_mark=lambda i: f"sandesh-link-{i}:"), parts["preheader"])})
    if as_sent:
        field = "preheader" if parts["preheader"] else "html"
        raise ApiError(400, "validation_error", f"invalid input: {field}",
                       {field: [f"as the sender renders it (preheader inside the HTML, links "
                                f"tracked): {problem}" for problem in as_sent["html"]]})
    parts["text_derived"] = text_derived
    too_big = domain.template_size_problems(parts)
    if too_big:
        raise ApiError(400, "validation_error", "invalid input: html", too_big)
    return parts


def create_template(ports: Ports, account_id: str, body: dict) -> tuple[dict, dict]:
    kind = body.get("kind", "marketing")
    parts = _template_parts(body, kind)
    return ports.templates.create(account_id, {"name": body["name"], "kind": kind}, parts)


def update_template(ports: Ports, account_id: str, template_id: str,
                    body: dict) -> tuple[dict, dict]:
    """Every edit is a new immutable version; unchanged parts carry over."""
    template = ports.templates.get(account_id, template_id)
    if template is None:
        raise not_found("template")
    latest = ports.templates.latest_version(template_id)
    kind = body.get("kind", template.get("kind", "marketing"))
    merged = {"subject": latest["subject"], "preheader": latest.get("preheader", ""),
              "html": latest["html"],
              "text": None if latest.get("text_derived") else latest.get("text")}
    merged.update({k: v for k, v in body.items() if k in merged})
    meta = {"name": body.get("name", template["name"]), "kind": kind}
    try:
        return ports.templates.add_version(template, meta, _template_parts(merged, kind))
    except VersionConflict:
        raise ApiError(409, "conflict", "the template was edited at the same moment; "
                                        "fetch it and try again") from None


def get_template(ports: Ports, account_id: str, template_id: str,
                 version: int | None = None) -> tuple[dict, dict]:
    template = ports.templates.get(account_id, template_id)
    if template is None:
        raise not_found("template")
    if version is None:
        found = ports.templates.latest_version(template_id)
    elif 1 <= version <= domain.MAX_TEMPLATE_VERSION:
        found = ports.templates.version(template_id, version)
    else:
        found = None
    if found is None:
        raise not_found("template version")
    return template, found


# -- campaigns -------------------------------------------------------------
def _check_template_ref(ports: Ports, account_id: str, fields: dict) -> None:
    template_id = fields.get("template_id")
    if template_id is None:
        return
    if ports.templates.get(account_id, template_id) is None:
        raise ApiError(400, "validation_error", "invalid input: template_id",
                       {"template_id": ["no such template"]})
    version = fields.get("template_version")
    if version and ports.templates.version(template_id, version) is None:
        raise ApiError(400, "validation_error", "invalid input: template_version",
                       {"template_version": ["no such version of this template"]})


def create_campaign(ports: Ports, account_id: str, body: dict) -> dict:
    _check_template_ref(ports, account_id, body)
    return ports.campaigns.create(account_id, body)


def update_campaign(ports: Ports, account_id: str, campaign_id: str, body: dict) -> dict:
    campaign = get_campaign(ports, account_id, campaign_id)
    if campaign["status"] != domain.DRAFT:   # before the lease: a launched one keeps it a while
        raise _only_a_draft(campaign)
    body = _with_template_pin(campaign, body)
    _check_template_ref(ports, account_id, {
        "template_id": body.get("template_id", campaign.get("template_id")),
        "template_version": body.get("template_version")})
    with _unlaunched(ports, campaign, "edit"):   # a send meanwhile would launch the old one
        updated = ports.campaigns.update_draft(account_id, campaign_id, body)
    if updated is None:
        raise _only_a_draft(campaign)
    return updated


def _only_a_draft(campaign: dict) -> ApiError:
    return ApiError(409, "conflict", f"only a draft can be edited; this campaign is "
                                     f"{campaign['status']}")


def _with_template_pin(campaign: dict, body: dict) -> dict:
    """A pinned version is a version of the campaign's template: another
    template given without a version drops the pin (its latest is sent),
    where the campaign sent the new template's version of the old number."""
    other_template = "template_id" in body and body["template_id"] != campaign.get("template_id")
    if other_template and "template_version" not in body and campaign.get("template_version"):
        return {**body, "template_version": None}
    return body


def get_campaign(ports: Ports, account_id: str, campaign_id: str) -> dict:
    campaign = ports.campaigns.get(account_id, campaign_id)
    if campaign is None:
        raise not_found("campaign")
    return campaign


def delete_campaign(ports: Ports, account_id: str, campaign_id: str) -> None:
    campaign = get_campaign(ports, account_id, campaign_id)
    if domain.deletable(campaign):
        with _unlaunched(ports, campaign, "delete"):
            deleted = ports.campaigns.delete_unlaunched(account_id, campaign_id)
        if deleted:
            return
        campaign = get_campaign(ports, account_id, campaign_id)  # launched (or gone) meanwhile
    raise ApiError(409, "invalid_state", "only a draft, or a campaign cancelled before it "
                   "launched, can be deleted: a launched campaign keeps its record and stats",
                   {"status": [campaign["status"]]})


def launch_problems(campaign: dict) -> dict[str, list[str]]:
    problems: dict[str, list[str]] = {}
    audience = campaign.get("audience") or {}
    if not campaign.get("template_id"):
        problems["template_id"] = ["a campaign needs a template to send"]
    if not campaign.get("from_email"):
        problems["from_email"] = ["a campaign needs a from address to send"]
    if not (audience.get("list_ids") or audience.get("segment_id")):
        problems["audience"] = ["give at least one list or a segment"]
    if campaign.get("kind", "marketing") == "marketing" and not campaign.get("postal_address"):
        problems["postal_address"] = ["marketing email must carry the sender's postal "
                                      "address (CAN-SPAM)"]
    return problems


def _refuse_a_deleted_template(ports: Ports, campaign: dict) -> None:
    """A template deleted (archived) since the campaign named it is not sent:
    its versions stay only for the campaigns that had frozen one (launched)."""
    if campaign.get("frozen_template"):
        return
    if ports.templates.get(campaign["account_id"], campaign["template_id"]) is None:
        raise ApiError(409, "campaign_incomplete", "the campaign's template was deleted",
                       {"template_id": ["no such template"]})


def launch_data(ports: Ports, campaign: dict) -> dict:
    """The campaign.launched payload: the frozen template and everything
    fan-out and the senders need."""
    _refuse_a_deleted_template(ports, campaign)
    # A launched campaign's test send shows what it sends: its frozen version.
    version = (campaign.get("frozen_template") or {}).get("version") \
        or campaign.get("template_version")
    frozen = (ports.templates.version(campaign["template_id"], version) if version
              else ports.templates.latest_version(campaign["template_id"]))
    if frozen is None:
        raise ApiError(409, "campaign_incomplete", "the campaign's template no longer exists",
                       {"template_id": ["no such template"]})
    html, text = frozen["html"], frozen.get("text") or html_to_text(frozen["html"])
    kind = campaign.get("kind", "marketing")
    if kind == "marketing":  # a system template used for marketing still gets the footer
        html, text = domain.with_compliance_footer(html, text)
    template = {"template_id": campaign["template_id"], "version": frozen["version"],
                "subject": frozen["subject"], "preheader": frozen.get("preheader", ""),
                "html": html, "text": text, "links": extract_links(html)}
    sender = {"from_email": campaign["from_email"]}
    for key in ("from_name", "reply_to", "sending_domain"):
        if campaign.get(key):
            sender[key] = campaign[key]
    if "sending_domain" not in sender:
        sender["sending_domain"] = campaign["from_email"].rpartition("@")[2].lower()
    audience = campaign.get("audience") or {}
    return {"campaign_id": campaign["_id"], "name": campaign.get("name", ""),
            "template": template, "sender": sender,
            "audience": {"list_ids": list(audience.get("list_ids") or []),
                         "segment_id": audience.get("segment_id")},
            "limits": dict(campaign.get("limits") or {}),
            "tracking": bool(campaign.get("tracking", True)),
            "postal_address": campaign.get("postal_address") or "", "kind": kind}


def _event(campaign: dict, type_: str, data: dict) -> dict:
    return {"id": uuid.uuid4().hex, "type": type_, "campaign_id": campaign["_id"],
            "account_id": campaign["account_id"], "data": data, "seq": time.time_ns()}


def _fits_an_event(data: dict) -> None:
    """A template saved before the size limit may not fit campaign.launched."""
    size = domain.encoded_size(data)
    if size > domain.MAX_LAUNCH_BYTES:
        raise ApiError(409, "campaign_incomplete", "the campaign's template is too large to send",
                       {"template_id": [f"{size:,} bytes to launch; at most "
                                        f"{domain.MAX_LAUNCH_BYTES:,}: make the template smaller"]})


def _publish(ports: Ports, events: list[dict]) -> None:
    """Publish staged events, flush, then forget them."""
    for entry in events:
        event = Event(type=entry["type"], source=SOURCE, subject=entry["campaign_id"],
                      account_id=entry["account_id"], data=entry["data"], id=entry["id"])
        ports.producer.publish(topics.CAMPAIGNS_EVENTS, event, key=entry["campaign_id"])
    if events:
        # Within the lease the move holds (LEASE_STALE): one that failed
        # stays staged for the sweep, whose copy a late first one cannot
        # undo (pauses and resumes carry their control version).
        ports.producer.flush(timeout=PUBLISH_FLUSH_SECONDS)
    for entry in events:
        ports.campaigns.drop_event(entry["id"])


# The status a campaign has after the event, for the sweep's check that a
# staged event's state change really happened (the crash may have come
# between staging the event and the change).
_EVENT_MEANS = {"campaign.launched": (domain.SENDING, domain.PAUSED, domain.SENT,
                                      domain.CANCELLED),
                "campaign.paused": (domain.PAUSED,), "campaign.resumed": (domain.SENDING,),
                "campaign.cancelled": (domain.CANCELLED,), "campaign.completed": (domain.SENT,)}


def _happened(entry: dict, campaign: dict | None) -> bool:
    if campaign is None or campaign["status"] not in _EVENT_MEANS.get(entry["type"], ()):
        return False
    return entry["type"] != "campaign.launched" or bool(campaign.get("launched_at"))


def publish_staged(ports: Ports, older_than: timedelta) -> int:
    """Publish the staged events whose status change happened. One whose
    change has not happened is dropped only after OUTBOX_DROP_AFTER: the
    call that staged it may still be changing the status (a slow database),
    and if its own publish then failed, nothing else would announce it."""
    published = 0
    drop_before = utcnow() - OUTBOX_DROP_AFTER
    for entry in ports.campaigns.staged_events(older_than):
        if _happened(entry, ports.campaigns.get_any(entry["campaign_id"])):
            try:
                _publish(ports, [entry])
            except Exception:  # one bad entry must not hold up the others' and the sweep
                log.exception("publishing a staged event failed; retried at the next sweep",
                              extra={"event_id": entry["id"], "campaign_id": entry["campaign_id"]})
                continue
            published += 1
        elif as_utc(entry["created_at"]) <= drop_before:
            ports.campaigns.drop_event(entry["id"])
    return published



def _move(ports: Ports, campaign: dict, action: str, event: dict | None,
          extra: dict | None = None, unchanged: bool = False) -> dict | None:
    """Stage the event, change the status, publish: a crash anywhere leaves
    either nothing or a staged event the sweep publishes.

    Only from the status the caller read: what it decided from it (whether
    to announce, what to launch) holds only for that status. A cancel that
    read "scheduled" moved a campaign the schedule had just launched,
    announced nothing, and the whole audience was mailed under "cancelled".
    `unchanged`: nor may the campaign have been edited since it was read."""
    sources, target = domain.TRANSITIONS[action]
    sources = [status for status in sources if status == campaign["status"]]
    if event:
        ports.campaigns.stage_event(event)
    moved = ports.campaigns.transition(
        campaign["_id"], sources, target, extra,
        unchanged_since=campaign.get("updated_at") if unchanged else None)
    if event:
        if moved is not None:
            _publish(ports, [event])
        else:
            ports.campaigns.drop_event(event["id"])
    return moved


LEASE_STALE = timedelta(seconds=60)
PUBLISH_FLUSH_SECONDS = 20.0


def _launch(ports: Ports, campaign: dict, action: str) -> dict | None:
    problems = launch_problems(campaign)
    if problems:
        raise ApiError(409, "campaign_incomplete", "the campaign cannot be sent yet: "
                       + ", ".join(sorted(problems)), problems)
    data = launch_data(ports, campaign)
    _fits_an_event(data)
    # A campaign launches once, whatever the replicas or double clicks.
    token = ports.campaigns.take_lease(f"{campaign['_id']}:launch", LEASE_STALE)
    if not token:
        return None
    extra = {"frozen_template": {"template_id": data["template"]["template_id"],
                                 "version": data["template"]["version"]},
             "launched_at": utcnow()}
    # `data` is the campaign as read: an edit since (a PATCH of its audience)
    # makes the move fail, rather than launch what the user just changed.
    moved = None
    try:
        moved = _move(ports, campaign, action, _event(campaign, "campaign.launched", data), extra,
                      unchanged=True)
    finally:
        if moved is None:  # not moved, or failed: a retry may launch it at once
            ports.campaigns.release_lease(f"{campaign['_id']}:launch", token)
    return moved


def send_now(ports: Ports, account_id: str, campaign_id: str) -> dict:
    campaign = get_campaign(ports, account_id, campaign_id)
    _refuse_unless(campaign, "send")
    moved = _launch(ports, campaign, "send")
    if moved is None:
        raise _moved_meanwhile(ports, account_id, campaign_id, "send")
    return moved


def schedule(ports: Ports, account_id: str, campaign_id: str, send_at: str,
             time_zone: str | None, now: datetime | None = None) -> dict:
    campaign = get_campaign(ports, account_id, campaign_id)
    _refuse_unless(campaign, "schedule")
    try:
        when = domain.parse_send_at(send_at, time_zone, now or utcnow())
    except ValueError as exc:
        field, message = exc.args
        raise ApiError(400, "validation_error", f"invalid input: {field}",
                       {field: [message]}) from None
    problems = launch_problems(campaign)
    if problems:
        raise ApiError(409, "campaign_incomplete", "the campaign cannot be scheduled yet: "
                       + ", ".join(sorted(problems)), problems)
    _refuse_a_deleted_template(ports, campaign)
    with _unlaunched(ports, campaign, "schedule"):
        moved = _move(ports, campaign, "schedule", None, {"send_at": when, "time_zone": time_zone})
    if moved is None:
        raise _moved_meanwhile(ports, account_id, campaign_id, "schedule")
    return moved


_ANNOUNCED = {"pause": "campaign.paused", "resume": "campaign.resumed",
              "cancel": "campaign.cancelled"}


def change_status(ports: Ports, account_id: str, campaign_id: str, action: str) -> dict:
    """pause, resume, cancel, unschedule: one atomic move, then the event."""
    campaign = get_campaign(ports, account_id, campaign_id)
    _refuse_unless(campaign, action)
    extra = {"cancel": {"cancelled_at": utcnow()}, "pause": {"paused_at": utcnow()},
             "resume": {"paused_at": None},
             "unschedule": {"send_at": None, "time_zone": None}}.get(action, {})
    if campaign["status"] in (domain.DRAFT, domain.SCHEDULED):
        with _unlaunched(ports, campaign, action):
            moved = _move(ports, campaign, action, None, extra)
    else:
        try:
            moved = _under_control(ports, campaign,
                                   lambda fresh: _announced_move(ports, fresh, action, extra))
        except _Contested:
            raise ApiError(409, "busy", f"cannot {action}: another change to the campaign is "
                                        "under way; try again in a moment",
                           {"status": [campaign["status"]]}) from None
    if moved is None:
        raise _moved_meanwhile(ports, account_id, campaign_id, action)
    return moved


def _announced_move(ports: Ports, campaign: dict, action: str, extra: dict) -> dict | None:
    """Under the control lease (`campaign` read under it). A pause or resume
    carries the campaign's next control version: a staged one the sweep
    publishes again, or a second copy of a slow flush, can reach the senders
    and the fan-out after the user's next move, and they apply a pause or
    resume only over an older one (a pause landing after a resume left the
    campaign "sending" with every job parked, for good)."""
    _refuse_unless(campaign, action)
    event = None
    # A draft or scheduled campaign was never launched: nobody needs telling.
    if action in _ANNOUNCED and campaign["status"] in domain.ACTIVE:
        data = {"campaign_id": campaign["_id"]}
        if action in ("pause", "resume"):
            data["version"] = int(campaign.get("control_version") or 0) + 1
            extra = {**extra, "control_version": data["version"]}
        if action == "resume" and campaign.get("paused_at"):   # what the time left leaves out
            pause = (utcnow() - as_utc(campaign["paused_at"])).total_seconds()
            extra["paused_seconds"] = float(campaign.get("paused_seconds") or 0) + max(pause, 0)
        event = _event(campaign, _ANNOUNCED[action], data)
    return _move(ports, campaign, action, event, extra)


class _Contested(Exception):
    """Another move of the campaign holds its control lease."""


def _under_control(ports: Ports, campaign: dict,
                   move: Callable[[dict], dict | None]) -> dict | None:
    """`move` on the campaign as it is now, under its control lease, which
    pause, resume, cancel, completion and the pause limit each take. A move
    is no compare-and-set on FerretDB (it reads, then writes): a pause and a
    cancel at the same moment both answered 200, the pause wrote over the
    cancel, and the cancelled campaign ended "sent" (a review found it). The
    loser of the lease gets _Contested (an API call answers 409 `busy`)."""
    lease = f"{campaign['_id']}:control"
    token = ports.campaigns.take_lease(lease, LEASE_STALE)
    if not token:
        raise _Contested(campaign["_id"])
    try:
        fresh = ports.campaigns.get_any(campaign["_id"])
        return move(fresh) if fresh is not None else None
    finally:
        ports.campaigns.release_lease(lease, token)


@contextmanager
def _unlaunched(ports: Ports, campaign: dict, action: str):
    """A move of a campaign not launched yet (a draft's edit, schedule,
    cancel or delete; a scheduled one's cancel or unschedule), under its
    launch lease. A move is no compare-and-set on FerretDB (it reads, then
    writes): a cancel that read "scheduled" as the schedule fired wrote
    "cancelled" over "sending", and the whole audience was mailed with no
    campaign.cancelled; a draft's cancel or delete beside a send did the
    same (reviews found both). The lease makes them take turns with the
    launch; the move then finds the status it read, or fails."""
    lease = f"{campaign['_id']}:launch"
    token = ports.campaigns.take_lease(lease, LEASE_STALE)
    if not token:
        raise ApiError(409, "launching", f"cannot {action}: the campaign is being launched; "
                                         "try again in a moment", {"status": [campaign["status"]]})
    try:
        yield
    finally:
        ports.campaigns.release_lease(lease, token)


def _refuse_unless(campaign: dict, action: str) -> None:
    try:
        domain.next_status(action, campaign["status"])
    except domain.TransitionRefused as exc:
        raise ApiError(409, "invalid_state", str(exc),
                       {"status": [campaign["status"]]}) from None


def _moved_meanwhile(ports, account_id, campaign_id, action) -> ApiError:
    current = get_campaign(ports, account_id, campaign_id)
    try:
        domain.next_status(action, current["status"])
    except domain.TransitionRefused:
        pass
    else:  # it did not move: another change held it (its lease)
        return ApiError(409, "busy", f"cannot {action}: another change to the campaign is "
                                     "under way; try again in a moment",
                        {"status": [current["status"]]})
    return ApiError(409, "invalid_state", f"cannot {action}: the campaign is now "
                    f"{current['status']}", {"status": [current["status"]]})


# Test sends skip the audience, its unsubscribes and the campaign's limits,
# five addresses a call: without a bound, an account's key could mail anyone
# as often as its request rate allows (a review sent 20 tests to a contact
# who had unsubscribed). At most this many test messages an hour per account.
MAX_TESTS_PER_HOUR = 50
TEST_WINDOW = timedelta(hours=1)


def send_test(ports: Ports, account_id: str, campaign_id: str, emails: list[str]) -> list[str]:
    """Render the campaign as it would send now to up to five addresses.
    The jobs carry the campaign (a draft was never launched) and test=true,
    so the sender sends them and nothing counts them.

    The messages are reserved against the hourly cap before they go, then
    counted with every reservation: counted first and noted after, ten
    calls at once all passed a cap of 50 with 45 gone (95 went)."""
    campaign = get_campaign(ports, account_id, campaign_id)
    problems = {k: v for k, v in launch_problems(campaign).items() if k != "audience"}
    if problems:
        raise ApiError(409, "campaign_incomplete", "the campaign cannot be test-sent yet: "
                       + ", ".join(sorted(problems)), problems)
    data = launch_data(ports, campaign)
    _fits_an_event(data)
    since = utcnow() - TEST_WINDOW
    reservation = ports.campaigns.note_tests(account_id, len(emails), forget_before=since)
    counted = ports.campaigns.tests_since(account_id, since)
    if counted > MAX_TESTS_PER_HOUR:
        ports.campaigns.forget_tests(reservation)
        raise ApiError(429, "too_many_tests",
                       f"at most {MAX_TESTS_PER_HOUR} test messages an hour per account; "
                       f"{counted - len(emails)} went in the last hour",
                       headers={"Retry-After": "600"})
    try:
        job_ids = []
        for index, email in enumerate(emails):
            job_id = job_id_for(campaign_id, f"test:{uuid.uuid4().hex}")
            job = {"job_id": job_id, "campaign_id": campaign_id,
                   "contact_id": f"test-{index + 1}", "recipient": {"email": email},
                   "attempt": 0, "test": True, "campaign": data}
            event = new_event("send.job", source=SOURCE, subject=job_id, account_id=account_id,
                              data=job)
            ports.producer.publish(topics.SEND_JOBS, event, key=job_id)
            job_ids.append(job_id)
        ports.producer.flush()
    except Exception:
        ports.campaigns.forget_tests(reservation)   # nothing went: the caller may try again
        raise
    return job_ids


def usage(ports: Ports, account_id: str) -> dict:
    sent, size = ports.progress.mailings(account_id)
    return {"templates": ports.templates.count(account_id),
            "campaigns": ports.campaigns.count(account_id),
            "mailings_sent": sent, "mailings_bytes": size}


def progress_views(ports: Ports, campaigns: list[dict],
                   now: datetime | None = None) -> list[dict]:
    combined = ports.progress.of([c["_id"] for c in campaigns])
    now = now or utcnow()
    return [{**c, "progress": _progress(c, combined[c["_id"]], now)} for c in campaigns]


def _progress(campaign: dict, combined: dict, now: datetime) -> dict:
    started = combined["first_outcome_at"] or campaign.get("launched_at")
    if campaign.get("paused_seconds") and campaign.get("launched_at"):
        # its pauses may come before the first outcome: all of them fall
        # after the launch (from the first outcome, a pause right after
        # the launch made the rate millions a second)
        started = as_utc(campaign["launched_at"])
    active = campaign["status"] in domain.ACTIVE
    # A finished campaign's rate is the one it sent at, not that spread to now.
    ended = None if active else campaign.get("completed_at") or campaign.get("cancelled_at")
    paused = float(campaign.get("paused_seconds") or 0)
    if campaign.get("paused_at") and campaign["status"] == domain.PAUSED:
        paused += max((now - as_utc(campaign["paused_at"])).total_seconds(), 0)
    view = domain.progress(combined["counts"], combined["audience_size"], started, ended or now,
                           paused)
    if not active or campaign["status"] == domain.PAUSED:
        view["eta_seconds"] = None  # a paused one ends when it is resumed, which nobody knows
    return view


# -- progress (the worker) -------------------------------------------------
COMPLETION_CHECK_EVERY = 1.0  # seconds, per campaign and process
_last_check: dict[str, float] = {}
_CHECKS_KEPT = 10_000  # campaigns; a worker lives for months and sees every campaign


def _note_check(campaign_id: str, now: float) -> None:
    """When the campaign's completion was last looked at; the memory of
    campaigns not looked at for the longest goes when it grows past
    _CHECKS_KEPT (it grew by one entry a campaign for the process's life)."""
    if len(_last_check) >= _CHECKS_KEPT and campaign_id not in _last_check:
        for oldest in sorted(_last_check, key=_last_check.get)[:_CHECKS_KEPT // 10]:
            del _last_check[oldest]
    _last_check[campaign_id] = now


def record_delivery(ports: Ports, event: Event, flush: bool = True) -> None:
    """Count one delivery event into its campaign, once per job and outcome.
    The worker passes flush=False and calls flush_progress before each
    offset commit: one bulk insert per second instead of two round trips
    per event, and nothing is committed that was not written."""
    data = event.data
    outcome = event.type.split(".", 1)[1]
    if data.get("test") or data.get("contact_id") in TEST_SEND_CONTACTS \
            or outcome not in domain.COUNTED:
        return
    # tracking.bounced names no attempt: one bounce per job, whichever it was
    doc = ports.jobs.outcome_doc(data["job_id"], data["campaign_id"], outcome,
                                 data.get("attempt", 0), data.get("size_bytes") or 0)
    ports.pending.append((doc, event.account_id, outcome))
    if flush:
        flush_progress(ports)


def flush_progress(ports: Ports) -> None:
    pending, ports.pending = ports.pending, []
    if not pending:
        return
    try:
        new = ports.jobs.record_many([doc for doc, _, _ in pending])
    except Exception:
        ports.pending = pending + ports.pending  # the loop retries the commit later
        raise
    totals: dict[str, dict] = {}
    for (doc, account_id, outcome), counted in zip(pending, new):
        campaign = totals.setdefault(doc["campaign_id"], {"account_id": account_id,
                                                          "counts": {}, "bytes": 0,
                                                          "final": False})
        if counted:
            campaign["counts"][outcome] = campaign["counts"].get(outcome, 0) + 1
            campaign["bytes"] += doc.get("size_bytes") or 0
        campaign["final"] |= outcome in domain.FINAL_OUTCOMES
    now = time.monotonic()
    for campaign_id, total in totals.items():
        if total["counts"]:
            ports.progress.add_many(campaign_id, total["account_id"], total["counts"],
                                    total["bytes"])
        if total["final"] and now - _last_check.get(campaign_id, 0.0) >= COMPLETION_CHECK_EVERY:
            _note_check(campaign_id, now)
            campaign = ports.campaigns.get_any(campaign_id)
            if campaign is not None:
                maybe_complete(ports, campaign)


def record_audience(ports: Ports, event: Event) -> None:
    campaign_id = event.data["campaign_id"]
    ports.progress.set_audience_size(campaign_id, event.account_id,
                                     event.data["audience_size"])
    if event.data.get("missing"):
        ports.campaigns.note_audience_missing(campaign_id, event.data["missing"])
    campaign = ports.campaigns.get_any(campaign_id)
    if campaign is not None:
        maybe_complete(ports, campaign)


def reconcile(ports: Ports, campaign: dict) -> dict:
    """The exact figures from job states (a crash between a job's state and
    its counter leaves a shard one short); returns the combined progress."""
    exact = ports.jobs.exact_counts(campaign["_id"])
    ports.progress.set_exact(campaign["_id"], campaign["account_id"],
                             {k: exact[k] for k in domain.COUNTED}, exact["bytes"])
    return ports.progress.of([campaign["_id"]])[campaign["_id"]]


def maybe_complete(ports: Ports, campaign: dict, combined: dict | None = None) -> bool:
    """Complete the campaign when every job of its audience is accounted
    for; verified against the job states before it happens, and once."""
    if campaign["status"] not in domain.ACTIVE:
        return False
    combined = combined or ports.progress.of([campaign["_id"]])[campaign["_id"]]
    if not domain.is_complete(combined["counts"], combined["audience_size"]):
        return False
    combined = reconcile(ports, campaign)
    if not domain.is_complete(combined["counts"], combined["audience_size"]):
        return False
    summary = {k: int(combined["counts"].get(k, 0)) for k in domain.COUNTED}
    summary["audience_size"] = int(combined["audience_size"])

    def complete(fresh: dict) -> dict | None:
        if fresh["status"] != campaign["status"] or \
                not ports.campaigns.take_lease(f"{campaign['_id']}:complete", LEASE_STALE):
            return None  # changed meanwhile (looked at again), or being completed
        return _move(ports, fresh, "complete",
                     _event(fresh, "campaign.completed",
                            {"campaign_id": campaign["_id"], "counts": summary}),
                     {"completed_at": utcnow()})
    try:
        moved = _under_control(ports, campaign, complete)
    except _Contested:  # a pause, resume or cancel under way: the next sweep
        return False
    if moved is not None:
        log.info("campaign completed", extra={"campaign_id": campaign["_id"], **summary})
    return moved is not None


# -- the worker's periodic sweep ---------------------------------------------
OUTBOX_GRACE = timedelta(seconds=5)
OUTBOX_DROP_AFTER = timedelta(minutes=10)
STALL = timedelta(seconds=15)


def fire_due_schedules(ports: Ports, now: datetime | None = None) -> int:
    """Launch scheduled campaigns that are due. With several workers, the
    launch lease (a unique insert) lets exactly one of them fire it."""
    fired = 0
    for campaign in ports.campaigns.due_schedules(now or utcnow()):
        try:
            if _launch(ports, campaign, "fire") is not None:
                fired += 1
                log.info("schedule fired", extra={"campaign_id": campaign["_id"]})
        except ApiError as exc:  # became unsendable since (template deleted...)
            log.warning("scheduled campaign cannot launch; cancelled",
                        extra={"campaign_id": campaign["_id"], "reason": exc.message})
            ports.campaigns.transition(campaign["_id"], (domain.SCHEDULED,), domain.CANCELLED,
                                       {"cancel_reason": exc.message[:300]})
    return fired


PAUSE_LIMIT = timedelta(days=7)


def expire_pause(ports: Ports, campaign: dict, limit: timedelta, now: datetime) -> bool:
    """Cancel a campaign paused for `limit` or longer (domain.pause_expired);
    its senders then release its parked jobs as skipped."""
    if not domain.pause_expired(campaign, limit, now):
        return False
    hours = limit / timedelta(hours=1)

    def expire(fresh: dict) -> dict | None:
        # The move is not a compare-and-set on FerretDB: one worker does it.
        if not domain.pause_expired(fresh, limit, now) or \
                not ports.campaigns.take_lease(f"{campaign['_id']}:expire", LEASE_STALE):
            return None
        return _move(ports, fresh, "expire",
                     _event(fresh, "campaign.cancelled", {"campaign_id": campaign["_id"]}),
                     {"cancelled_at": now,
                      "cancel_reason": f"paused past the {hours:g}-hour limit"})
    try:
        moved = _under_control(ports, campaign, expire)
    except _Contested:  # a resume or cancel under way: looked at again next sweep
        return False
    if moved is not None:
        log.info("paused campaign cancelled at the pause limit",
                 extra={"campaign_id": campaign["_id"], "limit_hours": hours})
    return moved is not None


def sweep(ports: Ports, now: datetime | None = None,
          pause_limit: timedelta = PAUSE_LIMIT) -> dict[str, Any]:
    """Runs every few seconds in every campaigns worker: fire due schedules,
    publish events a crash left staged, complete campaigns (recomputing the
    exact figures of one whose counters stopped moving), and cancel those
    left paused past the pause limit."""
    now = now or utcnow()
    fired = fire_due_schedules(ports, now)
    republished = publish_staged(ports, OUTBOX_GRACE)
    completed = expired = 0
    active = ports.campaigns.active()
    combined = ports.progress.of([c["_id"] for c in active]) if active else {}
    for campaign in active:
        progress = combined[campaign["_id"]]
        if progress["audience_size"] is not None:
            last = progress["last_outcome_at"] or campaign.get("launched_at")
            checked = progress["exact_at"]
            if last and now - last >= STALL and (checked is None or now - checked >= STALL):
                progress = reconcile(ports, campaign)
            if maybe_complete(ports, campaign, progress):
                completed += 1
                continue
        expired += expire_pause(ports, campaign, pause_limit, now)
    return {"fired": fired, "republished": republished, "completed": completed,
            "expired": expired}
