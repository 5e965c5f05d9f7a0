"""The privacy rules, pure: no database, no broker.

- A data-subject request is due one calendar month after it is received,
  extendable by at most two further months with a recorded reason (GDPR
  art. 12(3)).
- It is complete when every service that must answer has answered.
- A policy version takes effect no sooner than 30 days after publication.
- The aggregate report suppresses every group of fewer than k contacts.
"""
from __future__ import annotations

import calendar
import html
import json
from datetime import datetime, timedelta
from typing import Any, Iterable

KINDS = ("access", "erasure", "rectification", "restriction")
SUBJECT_KINDS = ("contact", "user", "account")
DUE_MONTHS = 1
MAX_EXTENSION_MONTHS = 2
POLICY_NOTICE_DAYS = 30
SETTLED = ("done", "not_found")  # answers that close a service's part
CLOSED = "closed"  # ended by the account, unfulfilled, with its reason (close_request)
ENDED = ("complete", CLOSED)


class RuleViolation(ValueError):
    """A request breaks a rule; `field` names what to fix."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def add_months(moment: datetime, months: int) -> datetime:
    """Same day-of-month `months` later, clamped to the month's last day
    (31 January + 1 month = 28/29 February)."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def due_at(received_at: datetime, extension_months: int = 0) -> datetime:
    return add_months(received_at, DUE_MONTHS + extension_months)


def extended_months(extensions: Iterable[dict]) -> int:
    return sum(int(e["months"]) for e in extensions)


def check_extension(extensions: list[dict], months: int, status: str) -> None:
    if status in ENDED:
        raise RuleViolation("status", f"the request is {status}; nothing to extend")
    if extended_months(extensions) + months > MAX_EXTENSION_MONTHS:
        raise RuleViolation("months", f"a request can be extended by at most "
                                      f"{MAX_EXTENSION_MONTHS} months in total")


# Campaigns holds nothing about a contact, but an account's templates and
# campaigns are that account's data: it answers account erasures only.
ACCOUNT_ONLY_RESPONDERS = ("campaigns",)


def responders_for(subject_kind: str, contact_responders: list[str]) -> list[str]:
    """Who must answer. An account user's profile is the gateway's (its
    users API acts on it); the privacy service answers for what it holds
    about them (notice acknowledgements)."""
    if subject_kind == "user":
        return ["privacy"]
    if subject_kind == "account":
        return sorted(set(contact_responders) | set(ACCOUNT_ONLY_RESPONDERS))
    return sorted(set(contact_responders))


def check_user_request(kind: str) -> None:
    """Only access is answered here for an account user. The gateway owns
    the profile and has no Kafka consumer, so a request queued here could
    never be acted on: the users API does it at once instead."""
    if kind != "access":
        raise RuleViolation("kind", {
            "erasure": "an account user is erased with DELETE /api/v1/users/<id>",
            "rectification": "an account user is corrected with PATCH /api/v1/users/<id>",
            "restriction": "an account user's data is used only to run the account: "
                           "restriction is not offered; delete the user with "
                           "DELETE /api/v1/users/<id>",
        }[kind])


def request_status(responders: Iterable[str], answers: dict[str, dict]) -> str:
    statuses = [answers.get(name, {}).get("status") for name in responders]
    if all(s in SETTLED for s in statuses):
        return "complete"
    if any(s == "failed" for s in statuses):
        return "needs_attention"
    return "pending"


def silent_services(request: dict, now: datetime, silent_after: timedelta) -> list[str]:
    """Services that have not answered (or failed) once `silent_after` has
    passed since the request, or at all once it is past due."""
    if request.get("status") == "complete":
        return []
    late = now >= request["created_at"] + silent_after or now >= request["due_at"]
    if not late:
        return []
    answers = request.get("answers") or {}
    return [s for s in request["responders"]
            if answers.get(s, {}).get("status") not in SETTLED]


def check_needs_attention(status: str, action: str) -> None:
    """Only a request a service could not fulfil is retried or closed: one
    still being worked on is waited for, one ended stays as it ended."""
    if status != "needs_attention":
        raise RuleViolation("status", f"only a request that needs attention can be {action}; "
                                      f"this one is {status}")


def is_overdue(request: dict, now: datetime, silent_after: timedelta) -> bool:
    if request.get("status") in ENDED:
        return False
    return now >= request["due_at"] or bool(silent_services(request, now, silent_after))


# -- policies ---------------------------------------------------------------
def check_policy_dates(published_at: datetime, effective_at: datetime) -> None:
    earliest = published_at + timedelta(days=POLICY_NOTICE_DAYS)
    # Compared by calendar day: "30 days out" means the date 30 days from
    # today, whatever the hour of publication.
    if effective_at.date() < earliest.date():
        raise RuleViolation(
            "effective_at", f"a policy can take effect no sooner than {POLICY_NOTICE_DAYS} days "
                            f"after it is published: {earliest.date().isoformat()} at the earliest")


# -- k-anonymous aggregates --------------------------------------------------
def k_anonymous(rows: list[dict], k: int, count_field: str = "contacts") -> tuple[list[dict], int]:
    """The rows whose group has at least k distinct contacts, and how many
    rows were suppressed (their counts are not added anywhere: a total
    would let a reader subtract its way back to a small group)."""
    kept = [r for r in rows if r.get(count_field, 0) >= k]
    return kept, len(rows) - len(kept)


# -- access export -----------------------------------------------------------
def assemble_export(request: dict, parts: dict[str, dict]) -> dict[str, Any]:
    """One machine-readable document: the request, then each service's
    answer under its name (services that found nothing say so)."""
    answers = request.get("answers") or {}
    return {
        "request_id": request["_id"],
        "kind": request["kind"],
        "subject": {k: v for k, v in request["subject"].items() if v is not None},
        "received_at": _iso(request["created_at"]),
        "completed_at": _iso(request.get("completed_at")),
        "services": {
            name: {"status": answers.get(name, {}).get("status", "pending"),
                   "answered_at": _iso(answers.get(name, {}).get("at")),
                   "data": parts.get(name, {})}
            for name in request["responders"]
        },
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def export_text(export: dict[str, Any]) -> str:
    """A plain-text summary a person can read: one section per service, one
    line per item."""
    lines = [f"Data held about the subject of request {export['request_id']}",
             f"Received {export['received_at']}; completed {export['completed_at'] or 'not yet'}",
             ""]
    for service, part in export["services"].items():
        lines.append(f"== {service} ({part['status']}) ==")
        data = part["data"] or {}
        if not data:
            lines.append("  nothing held")
        for section, value in data.items():
            if isinstance(value, list):
                lines.append(f"  {section}: {len(value)} item(s)")
                lines.extend(f"    - {_one_line(item)}" for item in value)
            else:
                lines.append(f"  {section}: {_one_line(value)}")
        lines.append("")
    return "\n".join(lines)


def export_html(export: dict[str, Any]) -> str:
    body = html.escape(export_text(export))
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>Your data</title></head>"
            f"<body><pre>{body}</pre></body></html>")


def _one_line(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_one_line(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)
