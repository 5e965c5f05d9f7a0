"""HTTP API of the privacy service: requests, audit, policies, notices,
aggregates. Thin: parse, call a use case, answer."""
from __future__ import annotations

import json
from datetime import timedelta
from typing import Callable

from flask import Response

from services.privacy import aggregates, domain, schemas, usecases
from services.privacy.store import PrivacyStore, now
from shared.http import Blueprint
from shared.http.app import current_identity
from shared.http.errors import ApiError, not_found, refuse_head
from shared.http.internal_auth import is_account_deletion
from shared.http.pagination import PageArgs, cursor_position, page
from shared.http.service import runtime

blp = Blueprint("privacy", __name__, url_prefix="/api/v1/privacy", description="Privacy")


def _store() -> PrivacyStore:
    return PrivacyStore(runtime().db)


def _config():
    return runtime().config


def _silent_after() -> timedelta:
    return timedelta(hours=_config().privacy_silent_after_hours)


def _after(args) -> str | None:
    return cursor_position(args.get("cursor"), "id", str)


def _invalid(exc: domain.RuleViolation) -> ApiError:
    return ApiError(400, "validation_error", f"invalid input: {exc.field}",
                    {exc.field: [exc.message]})


def _with_overdue(request: dict) -> dict:
    return {**request, "overdue": domain.is_overdue(request, now(), _silent_after())}


# -- data-subject requests -----------------------------------------------------
@blp.post("/requests")
@blp.arguments(schemas.RequestCreate)
@blp.response(201, schemas.RequestOut)
def create_request(body):
    """Receive a data-subject request (access, erasure, rectification,
    restriction) about a contact (email or id) or an account user; it is due
    one month from now and every service holding personal data is asked."""
    identity = current_identity()
    if (body.get("subject") or {}).get("account") and not is_account_deletion(identity):
        # Any key could otherwise erase its account's data here while the
        # account, its keys and its users stayed: an account broken for good.
        raise ApiError(403, "forbidden", "an account is erased with DELETE /api/v1/account",
                       {"subject.account": ["use DELETE /api/v1/account"]})
    try:
        request = usecases.create_request(_store(), runtime().producer(), _config(),
                                          identity, body)
    except domain.RuleViolation as exc:
        raise _invalid(exc)
    return _with_overdue(request)


@blp.get("/requests")
@blp.arguments(schemas.RequestListArgs, location="query")
@blp.response(200, schemas.RequestPage)
def list_requests(args):
    """The account's requests, oldest first; `overdue=true` lists only those
    past due or with a service that has not answered in time."""
    identity = current_identity()
    after = _after(args)
    if args["overdue"]:
        items = [r for r in usecases.overdue_requests(_store(), identity.account_id, _silent_after())
                 if after is None or r["_id"] > after]
        items = sorted(items, key=lambda r: r["_id"])[:args["limit"] + 1]
    else:
        items = _store().list_requests(identity.account_id, args["limit"], after,
                                       open_only=args["open"])
    return page([_with_overdue(r) for r in items], args["limit"], lambda r: {"id": r["_id"]})


def _own_request(request_id: str) -> dict:
    request = _store().get_request(current_identity().account_id, request_id)
    if request is None:
        raise not_found("request")
    return request


@blp.get("/requests/<request_id>")
@blp.response(200, schemas.RequestOut)
def get_request(request_id):
    """One request: each service's answer and when it came, what is awaited."""
    return _with_overdue(_own_request(request_id))


@blp.post("/requests/<request_id>/extend")
@blp.arguments(schemas.Extension)
@blp.response(200, schemas.RequestOut)
def extend_request(body, request_id):
    """Extend the due date by one or two months (at most two in total),
    recording why."""
    try:
        request = usecases.extend_request(_store(), current_identity(), request_id,
                                          body["months"], body["reason"])
    except domain.RuleViolation as exc:
        if exc.field == "status":
            raise ApiError(409, "request_complete", exc.message)
        raise _invalid(exc)
    if request is None:
        raise not_found("request")
    return _with_overdue(request)


def _moved(move: Callable[[], dict | None]) -> dict:
    """A request a use case moved: 409 when its status does not allow the
    move, 404 when the account has no such request."""
    try:
        request = move()
    except domain.RuleViolation as exc:
        raise ApiError(409, "invalid_state", exc.message, {exc.field: [exc.message]})
    if request is None:
        raise not_found("request")
    return _with_overdue(request)


@blp.post("/requests/<request_id>/retry")
@blp.response(200, schemas.RequestOut)
def retry_request(request_id):
    """Ask again the services that answered `failed` (needs_attention only),
    once what they said is fixed; the request is pending again."""
    return _moved(lambda: usecases.retry_request(_store(), runtime().producer(),
                                                 current_identity(), request_id))


@blp.post("/requests/<request_id>/close")
@blp.arguments(schemas.Closing)
@blp.response(200, schemas.RequestOut)
def close_request(body, request_id):
    """End a request no service can fulfil (needs_attention only), saying
    why: `closed`, neither open nor overdue any more."""
    return _moved(lambda: usecases.close_request(_store(), current_identity(), request_id,
                                                 body["reason"]))


@blp.get("/requests/<request_id>/export")
@blp.arguments(schemas.ExportArgs, location="query")
@blp.response(200, content_type="application/json",
              description="the export (JSON), or its readable summary (text or HTML)")
def download_export(args, request_id):
    """The assembled answer to an access request: every service's part in one
    document (format=json), or a readable summary (format=text or html)."""
    refuse_head()
    request = _own_request(request_id)
    if request["kind"] != "access":
        raise ApiError(409, "not_an_access_request", "only an access request has an export")
    if request["status"] != "complete":
        waiting = [s for s in request["responders"]
                   if (request.get("answers") or {}).get(s, {}).get("status") not in domain.SETTLED]
        raise ApiError(409, "not_complete", "the request is not complete yet",
                       {"waiting_for": waiting})
    if request.get("export_expired_at"):
        days = _config().privacy_export_days
        raise ApiError(410, "export_expired", f"the export was deleted {days} days after the "
                       "request completed, as it holds the person's data; make a new access "
                       "request for a fresh one")
    export = usecases.export_for(_store(), current_identity(), request, args["format"])
    filename = f"privacy-export-{request_id}"
    if args["format"] == "text":
        body, mime, filename = domain.export_text(export), "text/plain; charset=utf-8", filename + ".txt"
    elif args["format"] == "html":
        body, mime, filename = domain.export_html(export), "text/html; charset=utf-8", filename + ".html"
    else:
        body = json.dumps(export, ensure_ascii=False, indent=2, default=str)
        mime, filename = "application/json", filename + ".json"
    return Response(body, mimetype=mime.split(";")[0], content_type=mime,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"',
                             "Cache-Control": "no-store"})


# -- audit ------------------------------------------------------------------
@blp.get("/audit")
@blp.arguments(schemas.AuditArgs, location="query")
@blp.response(200, schemas.AuditPage)
def list_audit(args):
    """The account's audit log (access, export, erasure, bulk export), oldest
    first, optionally between `since` and `until`."""
    items = _store().list_audit(current_identity().account_id, args.get("since"),
                                args.get("until"), args["limit"], _after(args))
    return page(items, args["limit"], lambda e: {"id": e["_id"]})


@blp.post("/audit")
@blp.arguments(schemas.AuditIn)
@blp.response(201, schemas.AuditOut)
def append_audit(body):
    """Record that personal data was accessed (the dashboard's own reads,
    say). Append-only; the calling key is recorded as who. A `reason` is
    replaced by "(erased)" once the contact the entry is about, or the
    account, is erased."""
    identity = current_identity()
    entry_id = usecases.new_id()
    usecases.audit(_store(), account_id=identity.account_id, action=body["action"],
                   principal=identity.principal, user_id=body.get("user_id"),
                   target_type=body["target_type"], target_id=body.get("target_id"),
                   reason=body.get("reason"), service="api", entry_id=entry_id)
    return _store().db.audit.find_one({"_id": entry_id})


# -- policies and notices ----------------------------------------------------
@blp.post("/policies")
@blp.arguments(schemas.PolicyIn)
@blp.response(201, schemas.PolicyOut)
def publish_policy(body):
    """Publish a version of the platform's privacy policy (operator only).
    It cannot take effect sooner than 30 days after publication."""
    identity = current_identity()
    if not usecases.can_publish(_config(), identity):
        raise ApiError(403, "forbidden", "only the platform operator publishes policies")
    try:
        return usecases.publish_policy(_store(), None, _config(), identity, body)
    except domain.RuleViolation as exc:
        raise _invalid(exc)


@blp.get("/policies")
@blp.arguments(PageArgs, location="query")
@blp.response(200, schemas.PolicyPage)
def list_policies(args):
    """Every published version of the privacy policy, oldest first."""
    items = _store().list_policies(args["limit"], _after(args))
    return page(items, args["limit"], lambda p: {"id": p["_id"]})


@blp.get("/policies/<policy_id>")
@blp.response(200, schemas.PolicyOut)
def get_policy(policy_id):
    """One version of the privacy policy."""
    policy = _store().get_policy(policy_id)
    if policy is None:
        raise not_found("policy")
    return policy


@blp.get("/notices")
@blp.arguments(schemas.NoticeArgs, location="query")
@blp.response(200, schemas.NoticeList)
def list_notices(args):
    """Policy versions the calling user (`user_id`, else the calling key) has
    not acknowledged yet: what the dashboard and login page show."""
    identity = current_identity()
    subject = args.get("user_id") or identity.principal
    items = usecases.notices_for(_store(), identity.account_id, subject, args["limit"],
                                 _after(args))
    return page(items, args["limit"], lambda p: {"id": p["_id"]})


@blp.post("/notices/<policy_id>/ack")
@blp.arguments(schemas.NoticeAckIn)
@blp.response(200, schemas.NoticeAckOut)
def acknowledge_notice(body, policy_id):
    """Record that the user (or the calling key) acknowledged a notice."""
    ack = usecases.acknowledge_notice(_store(), current_identity(), policy_id, body.get("user_id"))
    if ack is None:
        raise not_found("notice")
    return ack


# -- aggregates -------------------------------------------------------------
@blp.get("/aggregates")
@blp.arguments(schemas.AggregateArgs, location="query")
@blp.response(200, schemas.AggregateReport)
def aggregate_report(args):
    """Deliveries by day and mailbox provider with no personal data; a group
    of fewer than k distinct contacts is left out (`suppressed_groups`)."""
    identity = current_identity()
    result = aggregates.report(_store(), identity.account_id, args["since"], args["until"],
                               _config().privacy_aggregate_k)
    usecases.audit(_store(), account_id=identity.account_id, action="aggregates.exported",
                   principal=identity.principal, target_type="account",
                   target_id=identity.account_id)
    return result
