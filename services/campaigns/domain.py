"""The campaigns service's rules: no database, no broker.

States (docs/campaigns.md):
    draft -> scheduled -> sending <-> paused -> sent
    draft | scheduled | sending | paused -> cancelled;  scheduled -> draft (unschedule)
    paused for longer than the pause limit -> cancelled (the worker: expire)
A campaign becomes `sent` when every job of its audience is accounted for
(sent, failed or skipped), including an empty audience (sent with 0).
"""
from __future__ import annotations

import functools
import re
import zoneinfo
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared import templating
from shared.html_body import insert_before_body_close
from shared.idn import ascii_domain
from shared.events.envelope import to_json
from shared.header_text import HEADER_CONTROLS

DRAFT, SCHEDULED, SENDING, PAUSED, SENT, CANCELLED = (
    "draft", "scheduled", "sending", "paused", "sent", "cancelled")
STATUSES = (DRAFT, SCHEDULED, SENDING, PAUSED, SENT, CANCELLED)
ACTIVE = (SENDING, PAUSED)

# action -> (states it may start from, state it leads to)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "send": ((DRAFT,), SENDING),
    "schedule": ((DRAFT,), SCHEDULED),
    "unschedule": ((SCHEDULED,), DRAFT),
    "fire": ((SCHEDULED,), SENDING),
    "pause": ((SENDING,), PAUSED),
    "resume": ((PAUSED,), SENDING),
    "cancel": ((DRAFT, SCHEDULED, SENDING, PAUSED), CANCELLED),
    "complete": ((SENDING, PAUSED), SENT),
    "expire": ((PAUSED,), CANCELLED),  # the worker, when a pause outlives the limit
}

# Delivery outcomes that settle a job; `bounced` arrives after `sent` and
# does not settle it again; `deferred` means a retry is scheduled.
FINAL_OUTCOMES = ("sent", "failed", "skipped")
COUNTED = FINAL_OUTCOMES + ("deferred", "bounced")


class TransitionRefused(Exception):
    def __init__(self, action: str, status: str):
        allowed = ", ".join(TRANSITIONS[action][0])
        super().__init__(f"cannot {action} a campaign that is {status} (only when {allowed})")
        self.action = action
        self.status = status


def next_status(action: str, status: str) -> str:
    sources, target = TRANSITIONS[action]
    if status not in sources:
        raise TransitionRefused(action, status)
    return target


def deletable(campaign: dict) -> bool:
    """Only a campaign that never launched: one that did has jobs, delivery
    records and stats in other services that name it."""
    return campaign["status"] in (DRAFT, CANCELLED) and not campaign.get("launched_at")


def pause_expired(campaign: dict, limit: timedelta, now: datetime) -> bool:
    """A campaign paused for `limit` is cancelled: its parked jobs keep the
    recipients' addresses, and a pause nobody ends should not hold them, nor
    send stale content weeks later. A pause from before `paused_at` was
    recorded counts from the campaign's last status change."""
    if campaign["status"] != PAUSED:
        return False
    since = campaign.get("paused_at") or campaign.get("updated_at")
    return since is not None and now - since >= limit


# -- header safety ---------------------------------------------------------
_LINE_BREAK = re.compile(r"[\r\n]")


def has_line_break(value: str | None) -> bool:
    """A CR or LF in a header value would let a template inject headers."""
    return bool(value) and bool(_LINE_BREAK.search(value))


def header_problem(value: str | None) -> str | None:
    """What keeps a value out of a mail header (subject, preheader, sender
    name), or None."""
    if has_line_break(value):
        return "must not contain a line break (CR or LF)"
    if value and HEADER_CONTROLS.search(value):
        return "must not contain a control character"
    return None


# -- template parts --------------------------------------------------------
TEMPLATE_PARTS = {"subject": False, "preheader": False, "html": True, "text": False}
# The longest subject and preheader, as written and as rendered (998: RFC
# 5322's line; the sender folds a longer one, but no reader sees it whole).
HEADER_LIMITS = {"subject": 998, "preheader": 500}

# A contact merged as the sender merges one: email and name, no custom
# field (so each `default(...)` applies), and the links the sender adds.
_SAMPLE_CONTEXT = templating.merge_context(
    "someone@example.com", "Sample Name", {},
    **{templating.UNSUBSCRIBE_URL: "https://example.com/unsubscribe",
       templating.POSTAL_ADDRESS: "1 Sample Street, Sample City"})


def template_problems(parts: dict[str, str | None]) -> dict[str, list[str]]:
    """{field: [message naming the line and the reason]} for every part that
    the sender could not render for a sample contact, or a header with a
    line break."""
    problems: dict[str, list[str]] = {}
    for field, html in TEMPLATE_PARTS.items():
        source = parts.get(field)
        problem = None if source is None else _part_problem(field, source, html)
        if problem:
            problems[field] = [problem]
    return problems


def _part_problem(field: str, source: str, html: bool) -> str | None:
    limit = HEADER_LIMITS.get(field)
    if limit and header_problem(source):
        return header_problem(source)
    try:
        templating.check(source, html)
        # A trial render: the sandbox refuses some things only when they run,
        # and then it would refuse them for every recipient.
        rendered = templating.render(source, _SAMPLE_CONTEXT, html)
    except (templating.TemplateSyntaxProblem, templating.TemplateRenderProblem) as exc:
        where = f"line {exc.line}: " if exc.line else ""
        return f"template error at {where}{exc.message}"
    if limit:
        return _rendered_header_problem(rendered, limit)
    return None


def _rendered_header_problem(rendered: str, limit: int) -> str | None:
    problem = header_problem(rendered)  # {{ "\r\nBcc: ..." }} has no line break as written
    if problem:
        return f"when rendered: {problem}"
    if len(rendered) > limit:
        return f"renders to {len(rendered):,} characters; at most {limit:,}"
    return None


# campaign.launched carries the frozen template, and a Kafka message is at
# most 1 MiB (the producer's and the broker's default): a launch that could
# not be published left its campaign in "sending" for good, and its staged
# event failed every sweep. The template's parts as the event carries them
# (JSON, UTF-8) stay under this; a message that size is long clipped by
# mail clients anyway (Gmail at 102 KB).
MAX_TEMPLATE_BYTES = 700_000
MAX_LAUNCH_BYTES = 950_000


def encoded_size(value) -> int:
    """Bytes `value` takes in an event."""
    return len(to_json(value))


def template_size_problems(parts: dict) -> dict[str, list[str]]:
    size = encoded_size({key: parts.get(key) for key in
                         ("subject", "preheader", "html", "text", "links")})
    if size <= MAX_TEMPLATE_BYTES:
        return {}
    return {"html": [f"the template takes {size:,} bytes with its text part and links; at "
                     f"most {MAX_TEMPLATE_BYTES:,}"]}


UNSUBSCRIBE_HTML = ('<p style="font-size:12px;color:#666666">You receive this email because '
                    'you subscribed. <a href="{{ unsubscribe_url }}" data-no-track>'
                    'Unsubscribe</a></p>')
POSTAL_HTML = '<p style="font-size:12px;color:#666666">{{ postal_address }}</p>'
UNSUBSCRIBE_TEXT = "Unsubscribe: {{ unsubscribe_url }}"
POSTAL_TEXT = "{{ postal_address }}"


def _append_html(html: str, footer: str) -> str:
    # a </body> in a raw block or a Jinja comment is none: a footer there
    # went out with its {{ unsubscribe_url }} unfilled, or not at all
    return insert_before_body_close(html, footer, "\n", templating.unrendered_spans(html))


def with_compliance_footer(html: str, text: str) -> tuple[str, str]:
    """Marketing mail carries an unsubscribe link and the sender's postal
    address (CAN-SPAM). Both are placeholders the sender fills; a template
    that already has them is left alone."""
    footer_html, footer_text = [], []
    if not templating.refers_to(html, templating.UNSUBSCRIBE_URL, True):
        footer_html.append(UNSUBSCRIBE_HTML)
    if not templating.refers_to(html, templating.POSTAL_ADDRESS, True):
        footer_html.append(POSTAL_HTML)
    if not templating.refers_to(text, templating.UNSUBSCRIBE_URL, False):
        footer_text.append(UNSUBSCRIBE_TEXT)
    if not templating.refers_to(text, templating.POSTAL_ADDRESS, False):
        footer_text.append(POSTAL_TEXT)
    if footer_html:
        html = _append_html(html, "\n".join(footer_html))
    if footer_text:
        text = text.rstrip("\n") + "\n\n--\n" + "\n".join(footer_text) + "\n"
    return html, text


# Template versions count up from 1; a number past this names none (and past
# 2**63 MongoDB could not even look for it).
MAX_TEMPLATE_VERSION = 1_000_000


# -- schedules ---------------------------------------------------------------
def _skipped_by_the_clocks(when: datetime, zone: ZoneInfo, local: datetime) -> bool:
    try:
        return when.astimezone(timezone.utc).astimezone(zone).replace(tzinfo=None) != local
    except OverflowError:
        return False  # out of range in UTC: refused as such below


def _an_iana_zone(name: str) -> bool:
    return name in _iana_zones()


@functools.lru_cache(maxsize=1)
def _iana_zones() -> frozenset[str]:
    return frozenset(zone for zone in zoneinfo.available_timezones()
                     if zone not in ("localtime", "posixrules", "Factory")
                     and not zone.startswith(("posix/", "right/")))


def parse_send_at(send_at: str, time_zone: str | None, now: datetime) -> datetime:
    """An ISO 8601 time with an offset, or a local time plus an IANA zone
    name; returns UTC. Raises ValueError(field, message)."""
    try:
        when = datetime.fromisoformat(send_at.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("send_at", "not an ISO 8601 date and time") from None
    if time_zone:
        try:
            zone = ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("time_zone", f"unknown time zone {time_zone!r}") from None
        if not _an_iana_zone(time_zone):
            # "localtime" is the host's /etc/localtime: the send time would
            # depend on the pod; "posixrules", "Factory", "right/..." are the
            # database's own files, no zone a user means
            raise ValueError("time_zone", f"{time_zone!r} is not an IANA time zone name "
                                          "(e.g. Europe/Paris)")
        if when.tzinfo is None:
            local = when
            when = when.replace(tzinfo=zone)
            if _skipped_by_the_clocks(when, zone, local):
                # e.g. 02:30 on the night the clocks go forward: it was
                # silently moved an hour; the user should choose
                raise ValueError("send_at", f"{local.isoformat()} does not exist in "
                                            f"{time_zone} (the clocks change then)")
            if when.replace(fold=1).utcoffset() != when.utcoffset():
                # 01:30 on the night the clocks go back comes twice: the
                # first was taken without a word; the user should choose
                raise ValueError("send_at", f"{local.isoformat()} comes twice in {time_zone} "
                                            "(the clocks go back then): give send_at with "
                                            "its UTC offset instead")
        else:
            raise ValueError("time_zone", "give either an offset in send_at or a time_zone, "
                                          "not both")
    if when.tzinfo is None:
        raise ValueError("send_at", "needs a UTC offset (e.g. +02:00) or a time_zone")
    try:
        when = when.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("send_at", "is out of range once converted to UTC") from None
    if when <= now:
        raise ValueError("send_at", "is in the past")
    return when


# -- sending domains ---------------------------------------------------------
_HOST_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def sending_domain_problem(name: str) -> str | None:
    """Why `name` is no domain a message can be signed for and sent from
    (it goes into headers: Message-ID, List-Id, DKIM's d=)."""
    try:  # as the sender will write it (shared/idn.py): refused here, not at every send
        ascii_name = ascii_domain(name.strip().rstrip("."))
    except ValueError:
        return "not a valid domain name"
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or len(labels) < 2 \
            or not all(_HOST_LABEL.match(label) for label in labels):
        return "not a valid domain name (e.g. news.example.com)"
    return None


# -- progress ----------------------------------------------------------------
def progress(counts: dict, audience_size: int | None, started_at: datetime | None,
             now: datetime, paused_seconds: float = 0.0) -> dict:
    """What the dashboard and the CLI show; time left from the rate so far,
    the time spent paused left out (a campaign paused for two days after
    ten minutes of sending showed two days left once resumed)."""
    sent, failed, skipped = (int(counts.get(k, 0)) for k in FINAL_OUTCOMES)
    accounted = sent + failed + skipped
    queued = max(0, audience_size - accounted) if audience_size is not None else None
    rate = None
    eta = None
    if started_at and accounted:
        elapsed = max((now - started_at).total_seconds() - paused_seconds, 0.001)
        rate = accounted / elapsed
        if queued is not None:
            eta = round(queued / rate, 1) if rate > 0 else None
    percent = (round(100.0 * accounted / audience_size, 2) if audience_size
               else (100.0 if audience_size == 0 else 0.0))
    return {"audience_size": audience_size, "queued": queued, "sent": sent,
            "deferred": int(counts.get("deferred", 0)), "failed": failed,
            "bounced": int(counts.get("bounced", 0)), "skipped": skipped,
            "accounted": accounted, "percent": percent,
            "rate_per_second": round(rate, 2) if rate is not None else None,
            "eta_seconds": eta}


def is_complete(counts: dict, audience_size: int | None) -> bool:
    if audience_size is None:
        return False
    return sum(int(counts.get(k, 0)) for k in FINAL_OUTCOMES) >= audience_size
