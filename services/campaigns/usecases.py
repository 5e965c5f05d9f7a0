"""What the campaigns service does. Dependencies come in as arguments (a
`Ports` bundle): the HTTP API, the worker and the unit tests share these."""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.campaigns import domain
from services.campaigns.htmltext import html_to_text
from services.campaigns.store import (CampaignStore, JobStateStore, TemplateStore,
                                      VersionConflict, utcnow)
from shared import topics
from shared.events import Event, new_event
from shared.http.errors import ApiError, not_found
from shared.jobs import job_id_for
from shared.kafka.producer import EventProducer
from shared.links import extract_links

log = logging.getLogger(__name__)
SOURCE = "campaigns"


@dataclass
class Ports:
    templates: TemplateStore
    campaigns: CampaignStore
    jobs: JobStateStore
    producer: EventProducer


# -- templates -------------------------------------------------------------
def _template_parts(body: dict, kind: str) -> dict:
    """Validated, versionable parts: refused with 400 naming the field, the
    line and the reason when a part does not compile in the sandbox."""
    parts = {"subject": body["subject"], "preheader": body.get("preheader") or "",
             "html": body["html"], "text": body.get("text")}
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
    parts["text_derived"] = text_derived
    parts["links"] = extract_links(parts["html"])
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
    found = (ports.templates.version(template_id, version) if version
             else ports.templates.latest_version(template_id))
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
    _check_template_ref(ports, account_id, body)
    updated = ports.campaigns.update_draft(account_id, campaign_id, body)
    if updated is None:
        raise ApiError(409, "conflict", f"only a draft can be edited; this campaign is "
                                        f"{campaign['status']}")
    return updated


def get_campaign(ports: Ports, account_id: str, campaign_id: str) -> dict:
    campaign = ports.campaigns.get(account_id, campaign_id)
    if campaign is None:
        raise not_found("campaign")
    return campaign


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


def launch_data(ports: Ports, campaign: dict) -> dict:
    """The campaign.launched payload: the frozen template and everything
    fan-out and the senders need."""
    version = campaign.get("template_version")
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


def _outbox_event(campaign: dict, type_: str, data: dict) -> dict:
    return {"id": uuid.uuid4().hex, "type": type_, "account_id": campaign["account_id"],
            "data": data, "seq": time.time_ns()}


def publish_outbox(ports: Ports, campaign: dict, only_current: bool = False) -> int:
    """Publish the campaign's pending events, flush, then clear them. With
    `only_current` (the sweep after a crash) a pause or resume that no
    longer matches the status is dropped rather than replayed out of order."""
    pending = sorted((campaign.get("outbox") or {}).values(), key=lambda e: e.get("seq", 0))
    for entry in pending:
        stale = only_current and (
            (entry["type"] == "campaign.paused" and campaign["status"] != domain.PAUSED)
            or (entry["type"] == "campaign.resumed" and campaign["status"] != domain.SENDING))
        if not stale:
            event = Event(type=entry["type"], source=SOURCE, subject=campaign["_id"],
                          account_id=entry["account_id"], data=entry["data"], id=entry["id"])
            ports.producer.publish(topics.CAMPAIGNS_EVENTS, event, key=campaign["_id"])
    if pending:
        ports.producer.flush()
    for entry in pending:
        ports.campaigns.clear_outbox(campaign["_id"], entry["id"])
    return len(pending)


def _launch(ports: Ports, campaign: dict, action: str) -> dict | None:
    problems = launch_problems(campaign)
    if problems:
        raise ApiError(409, "campaign_incomplete", "the campaign cannot be sent yet: "
                       + ", ".join(sorted(problems)), problems)
    data = launch_data(ports, campaign)
    sources, target = domain.TRANSITIONS[action]
    now = utcnow()
    moved = ports.campaigns.transition(
        campaign["_id"], sources, target,
        events=[_outbox_event(campaign, "campaign.launched", data)],
        extra={"frozen_template": {"template_id": data["template"]["template_id"],
                                   "version": data["template"]["version"]},
               "launched_at": now},
        condition={"updated_at": campaign["updated_at"]} if action == "fire" else None)
    if moved is not None:
        publish_outbox(ports, moved)
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
    moved = ports.campaigns.transition(campaign_id, (domain.DRAFT,), domain.SCHEDULED,
                                       extra={"send_at": when, "time_zone": time_zone})
    if moved is None:
        raise _moved_meanwhile(ports, account_id, campaign_id, "schedule")
    return moved


_ANNOUNCED = {"pause": "campaign.paused", "resume": "campaign.resumed",
              "cancel": "campaign.cancelled"}


def change_status(ports: Ports, account_id: str, campaign_id: str, action: str) -> dict:
    """pause, resume, cancel, unschedule: one atomic move, then the event."""
    campaign = get_campaign(ports, account_id, campaign_id)
    _refuse_unless(campaign, action)
    sources, target = domain.TRANSITIONS[action]
    events = []
    # A draft or scheduled campaign was never launched: nobody needs telling.
    if action in _ANNOUNCED and campaign["status"] in domain.ACTIVE:
        events.append(_outbox_event(campaign, _ANNOUNCED[action], {"campaign_id": campaign_id}))
    extra = {"cancelled_at": utcnow()} if action == "cancel" else {}
    if action == "unschedule":
        extra = {"send_at": None, "time_zone": None}
    moved = ports.campaigns.transition(campaign_id, sources, target, events, extra)
    if moved is None:
        raise _moved_meanwhile(ports, account_id, campaign_id, action)
    publish_outbox(ports, moved)
    return moved


def _refuse_unless(campaign: dict, action: str) -> None:
    try:
        domain.next_status(action, campaign["status"])
    except domain.TransitionRefused as exc:
        raise ApiError(409, "invalid_state", str(exc),
                       {"status": [campaign["status"]]}) from None


def _moved_meanwhile(ports, account_id, campaign_id, action) -> ApiError:
    current = get_campaign(ports, account_id, campaign_id)
    return ApiError(409, "invalid_state", f"cannot {action}: the campaign is now "
                    f"{current['status']}", {"status": [current["status"]]})


def send_test(ports: Ports, account_id: str, campaign_id: str, emails: list[str]) -> list[str]:
    """Render the campaign as it would send now to up to five addresses.
    The jobs carry the campaign (a draft was never launched) and test=true,
    so the sender sends them and nothing counts them."""
    campaign = get_campaign(ports, account_id, campaign_id)
    problems = {k: v for k, v in launch_problems(campaign).items() if k != "audience"}
    if problems:
        raise ApiError(409, "campaign_incomplete", "the campaign cannot be test-sent yet: "
                       + ", ".join(sorted(problems)), problems)
    data = launch_data(ports, campaign)
    job_ids = []
    for index, email in enumerate(emails):
        job_id = job_id_for(campaign_id, f"test:{uuid.uuid4().hex}")
        job = {"job_id": job_id, "campaign_id": campaign_id, "contact_id": f"test-{index + 1}",
               "recipient": {"email": email}, "attempt": 0, "test": True, "campaign": data}
        event = new_event("send.job", source=SOURCE, subject=job_id, account_id=account_id,
                          data=job)
        ports.producer.publish(topics.SEND_JOBS, event, key=job_id)
        job_ids.append(job_id)
    ports.producer.flush()
    return job_ids


def usage(ports: Ports, account_id: str) -> dict:
    sent, size = ports.campaigns.mailings(account_id)
    return {"templates": ports.templates.count(account_id),
            "campaigns": ports.campaigns.count(account_id),
            "mailings_sent": sent, "mailings_bytes": size}


def progress_of(campaign: dict, now: datetime | None = None) -> dict:
    return domain.progress(campaign.get("counts") or {}, campaign.get("audience_size"),
                           campaign.get("first_outcome_at") or campaign.get("launched_at"),
                           now or utcnow())


# -- progress (the worker) -------------------------------------------------
def record_delivery(ports: Ports, event: Event) -> None:
    """Count one delivery event into its campaign, once per job and outcome."""
    data = event.data
    if data.get("test"):
        return
    outcome = event.type.split(".", 1)[1]
    job_id, campaign_id = data["job_id"], data["campaign_id"]
    if outcome in domain.FINAL_OUTCOMES:
        counted = ports.jobs.settle(job_id, campaign_id, outcome, data.get("size_bytes") or 0)
    elif outcome == "deferred":
        counted = ports.jobs.mark(job_id, campaign_id, "deferred", data["attempt"])
    elif outcome == "bounced":
        counted = ports.jobs.mark(job_id, campaign_id, "bounced", True)
    else:
        return
    if counted:
        campaign = ports.campaigns.add_outcome(campaign_id, outcome, data.get("size_bytes") or 0)
    else:
        campaign = ports.campaigns.get_any(campaign_id)
    if campaign is not None and outcome in domain.FINAL_OUTCOMES:
        maybe_complete(ports, campaign)


def record_audience(ports: Ports, event: Event) -> None:
    campaign = ports.campaigns.set_audience_size(event.data["campaign_id"],
                                                 event.data["audience_size"])
    if campaign is not None:
        maybe_complete(ports, campaign)


def reconcile(ports: Ports, campaign: dict) -> dict:
    """Make the cached counts the job states' exact ones (a crash between a
    job's state and its counter leaves the cache one short)."""
    exact = ports.jobs.exact_counts(campaign["_id"])
    counts = {k: exact[k] for k in domain.FINAL_OUTCOMES}
    if any(int((campaign.get("counts") or {}).get(k, 0)) != v for k, v in counts.items()) \
            or exact["bytes"] != int(campaign.get("bytes") or 0):
        ports.campaigns.set_counts(campaign["_id"], counts, exact["bytes"])
    else:
        ports.campaigns.mark_reconciled(campaign["_id"])
    campaign = {**campaign, "counts": {**(campaign.get("counts") or {}), **counts},
                    "bytes": exact["bytes"]}
    return campaign


def maybe_complete(ports: Ports, campaign: dict) -> bool:
    if campaign["status"] not in domain.ACTIVE:
        return False
    if not domain.is_complete(campaign.get("counts") or {}, campaign.get("audience_size")):
        return False
    campaign = reconcile(ports, campaign)
    counts = campaign["counts"]
    if not domain.is_complete(counts, campaign.get("audience_size")):
        return False
    summary = {k: int(counts.get(k, 0)) for k in domain.COUNTED}
    summary["audience_size"] = int(campaign["audience_size"])
    moved = ports.campaigns.transition(
        campaign["_id"], domain.TRANSITIONS["complete"][0], domain.SENT,
        events=[_outbox_event(campaign, "campaign.completed",
                              {"campaign_id": campaign["_id"], "counts": summary})],
        extra={"completed_at": utcnow()})
    if moved is not None:
        publish_outbox(ports, moved)
        log.info("campaign completed", extra={"campaign_id": campaign["_id"], **summary})
    return moved is not None


# -- the worker's periodic sweep ---------------------------------------------
OUTBOX_GRACE = timedelta(seconds=5)
STALL = timedelta(seconds=20)


def fire_due_schedules(ports: Ports, now: datetime | None = None) -> int:
    """Launch scheduled campaigns that are due. With several workers, the
    atomic scheduled->sending move is the lease: one wins, the others
    find the campaign no longer scheduled."""
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
                                       extra={"cancel_reason": exc.message[:300]})
    return fired


def sweep(ports: Ports, now: datetime | None = None) -> dict[str, Any]:
    """Runs every few seconds in every campaigns worker: fire due schedules,
    publish events a crash left in an outbox, complete stalled campaigns."""
    now = now or utcnow()
    fired = fire_due_schedules(ports, now)
    republished = 0
    for campaign in ports.campaigns.with_pending_outbox(OUTBOX_GRACE):
        republished += publish_outbox(ports, campaign, only_current=True)
    completed = 0
    for campaign in ports.campaigns.active():
        if campaign.get("audience_size") is None:
            continue
        last = campaign.get("last_outcome_at") or campaign.get("launched_at")
        checked = campaign.get("reconciled_at")
        if last and now - last >= STALL and (checked is None or now - checked >= STALL):
            campaign = reconcile(ports, campaign)
        completed += maybe_complete(ports, campaign)
    return {"fired": fired, "republished": republished, "completed": completed}
