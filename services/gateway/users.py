"""Account users, their privacy rights, and account deletion.

The gateway owns accounts, so it owns their users (email, name). Keys are
per account, so a user's rights are exercised by the account on the user's
behalf: list / create / get, correct (PATCH = rectification), export
(access) and delete (erasure); `DELETE /api/v1/account` erases the whole
account through the privacy service (a privacy.requested erasure with
subject kind "account") and then revokes its keys.

Why the gateway calls the privacy service synchronously here: the export
and the account erasure are privacy requests, recorded, audited and
answered there; the gateway is the one synchronous caller of service APIs.
"""
from __future__ import annotations

import json
import logging

from flask import Flask, current_app, g, request

from services.gateway import keys, policy_mail
from services.gateway.auth import bearer_token
from services.gateway.users_store import INDEXES, DuplicateUser, UserStore
from shared.http import Blueprint
from shared.http.errors import ApiError, not_found, refuse_head
from shared.http.fields import EMAIL_ADDRESS, UpdateSchema, one_line
from shared.http.internal_auth import Identity, deleting_the_account
from shared.http.pagination import PageArgs, cursor_ms, cursor_position, cursor_time, page
from shared.mongo import ensure_indexes
from shared.pii import InvalidEmail, email_hash, normalise_email

import marshmallow as ma
from marshmallow import validate

blp = Blueprint("users", __name__, url_prefix="/api/v1", description="Account users and their data")
PLATFORM = Identity("platform", "operator")
log = logging.getLogger(__name__)


# A user's name goes into the To: of the platform's mail to them (policy
# notices): one line, as a contact's.
USER_NAME = [validate.Length(max=300), one_line]


class UserIn(ma.Schema):
    email = ma.fields.String(required=True, validate=validate.Length(3, 320),
                             metadata=EMAIL_ADDRESS)
    name = ma.fields.String(load_default="", validate=USER_NAME)


class UserPatch(UpdateSchema):
    email = ma.fields.String(validate=validate.Length(3, 320), metadata=EMAIL_ADDRESS)
    name = ma.fields.String(validate=USER_NAME)


class UserOut(ma.Schema):
    id = ma.fields.String(attribute="_id")
    email = ma.fields.String()
    name = ma.fields.String()
    created_at = ma.fields.DateTime()
    updated_at = ma.fields.DateTime()


class UserPage(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(UserOut))
    next_cursor = ma.fields.String(allow_none=True)


class ReasonArgs(ma.Schema):
    reason = ma.fields.String(validate=validate.Length(max=500))


class AccountDeletion(ma.Schema):
    request_id = ma.fields.String()
    status = ma.fields.String()


def _users() -> UserStore:
    return current_app.extensions["user_store"]


def _email(raw: str) -> tuple[str, str]:
    try:
        normalised = normalise_email(raw)
    except InvalidEmail as exc:
        raise ApiError(400, "validation_error", "invalid input: email",
                       {"email": [f"not a valid address: {exc}"]})
    # the unique key folds case like the platform's hash does (Jo@ = jo@)
    return normalised, email_hash(normalised, "users")


def _privacy(method: str, path: str, body: dict | None = None, identity: Identity | None = None):
    upstreams = current_app.extensions["upstreams"]
    response = upstreams._call("privacy", method, path, identity or g.identity,
                               {"Content-Type": "application/json", "Accept": "application/json"},
                               data=json.dumps(body) if body is not None else None)
    body = _json_or_none(response)
    if response.status_code >= 400:
        error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
        raise ApiError(502 if response.status_code >= 500 else response.status_code,
                       error.get("code", "privacy_error"),
                       error.get("message", "the privacy service refused"), error.get("details"))
    if response.content and body is None:
        raise ApiError(502, "upstream_error", "the privacy service answered something not JSON")
    return body


def _json_or_none(response):
    """The answer's JSON; None when it has none (a proxy's HTML error page
    made every caller a 500)."""
    try:
        return response.json() if response.content else None
    except ValueError:
        return None


def _audit(action: str, user_id: str, reason: str | None = None) -> None:
    """Recorded before the change: no audit entry, no change."""
    _privacy("POST", "/api/v1/privacy/audit", {
        "action": action, "target_type": "user", "target_id": user_id,
        **({"reason": reason} if reason else {})})


def _own_user(user_id: str) -> dict:
    user = _users().get(g.identity.account_id, user_id)
    if user is None:
        raise not_found("user")
    return user


@blp.get("/users")
@blp.arguments(PageArgs, location="query")
@blp.response(200, UserPage)
def list_users(args):
    """The account's users, oldest first."""
    cursor = args.get("cursor")
    after = (cursor_time(cursor, "ms"), cursor_position(cursor, "id", str)) if cursor else None
    items = _users().page(g.identity.account_id, args["limit"], after)
    return page(items, args["limit"], lambda u: {"ms": cursor_ms(u["created_at"]),
                                                 "id": u["_id"]})


# Every user of every account gets the platform's privacy-policy notices,
# which an account cannot unsubscribe them from: a bound on how many
# addresses one account can put on that mailing (the people of one team).
MAX_USERS = 100


@blp.post("/users")
@blp.arguments(UserIn)
@blp.response(201, UserOut)
def create_user(body):
    """Add a user to the account (one per address; at most MAX_USERS)."""
    email, key = _email(body["email"])
    if _users().count(g.identity.account_id) >= MAX_USERS:
        raise ApiError(409, "too_many_users",
                       f"the account has {MAX_USERS} users, the most it may have; delete one first")
    try:
        return _users().create(g.identity.account_id, email, key, body["name"])
    except DuplicateUser:
        raise _duplicate()


@blp.get("/users/<user_id>")
@blp.response(200, UserOut)
def get_user(user_id):
    """One user's profile."""
    return _own_user(user_id)


@blp.patch("/users/<user_id>")
@blp.arguments(UserPatch)
@blp.response(200, UserOut)
def rectify_user(body, user_id):
    """Correct a user's address or name (rectification; audited), here and
    on the platform's policy-notice list."""
    user = _own_user(user_id)
    changes = dict(body)
    if "email" in changes:
        changes["email"], changes["email_key"] = _email(changes["email"])
    if "email_key" in changes and _users().address_taken(g.identity.account_id,
                                                         changes["email_key"], user_id):
        raise _duplicate()   # before the platform list: a refused correction changes nothing
    _audit("user.rectified", user_id, "fields: " + ", ".join(sorted(body)))
    _correct_on_platform_list(user, changes)
    try:
        user = _users().update(g.identity.account_id, user_id, changes)
    except DuplicateUser:   # taken meanwhile
        raise _duplicate()
    if user is None:
        raise not_found("user")
    return user


def _duplicate() -> ApiError:
    return ApiError(409, "duplicate", "a user with this address exists",
                    {"email": ["already a user of this account"]})


def _correct_on_platform_list(user: dict, changes: dict) -> None:
    _on_platform_list(lambda db: policy_mail.correct_user(db, user, changes),
                      "the correction could not reach the platform's mailing list; "
                      "nothing was changed, try again")


def _forget_on_platform_list(users: list[dict]) -> None:
    _on_platform_list(lambda db: policy_mail.forget_users(db, users),
                      "the users could not be taken off the platform's mailing list; "
                      "nothing was deleted, try again")


def _on_platform_list(work, unreachable: str) -> None:
    """Run `work` on the platform's users list; contacts unreachable is a 503."""
    try:
        work(current_app.extensions["gateway_store"].db)
    except policy_mail.NotifyFailed:
        # no detail logged: an upstream error may echo the address searched for
        log.warning("platform users list unreachable")
        raise ApiError(503, "upstream_unavailable", unreachable, headers={"Retry-After": "5"})


@blp.delete("/users/<user_id>")
@blp.arguments(ReasonArgs, location="query")
@blp.response(204)
def delete_user(args, user_id):
    """Erase a user: the profile is deleted, and the address leaves the
    platform's policy-notice list (audited)."""
    user = _own_user(user_id)
    _forget_on_platform_list([user])
    _audit("user.erased", user_id, args.get("reason"))
    _users().delete(g.identity.account_id, user_id)


@blp.get("/users/<user_id>/export")
@blp.arguments(ReasonArgs, location="query")
@blp.response(200, description="everything held about the user, as JSON")
def export_user(args, user_id):
    """Everything the platform holds about a user: the profile (here) and
    what the privacy service holds (notice acknowledgements), through an
    access request so it is recorded and audited like any other."""
    refuse_head()
    user = _own_user(user_id)
    made = _privacy("POST", "/api/v1/privacy/requests", {
        "kind": "access", "subject": {"user_id": user_id},
        "reason": args.get("reason") or "user export"})
    export = _privacy("GET", f"/api/v1/privacy/requests/{made['id']}/export")
    export["services"]["gateway"] = {"status": "done", "data": {"profile": {
        "id": user["_id"], "email": user["email"], "name": user["name"],
        "created_at": user["created_at"].isoformat(), "updated_at": user["updated_at"].isoformat()}}}
    response = current_app.response_class(json.dumps(export, ensure_ascii=False, indent=2),
                                          mimetype="application/json")
    response.headers["Content-Disposition"] = f'attachment; filename="user-{user_id}.json"'
    response.headers["Cache-Control"] = "no-store"
    return response


@blp.delete("/account")
@blp.response(202, AccountDeletion)
def delete_account():
    """Delete the calling account with all its data: its users leave the
    platform's notice list, every service is asked to erase the account's
    data (a privacy request, tracked to completion there), its users are
    deleted and every key revoked at once."""
    account_id = g.identity.account_id
    _forget_on_platform_list(_users().all_of(account_id))
    made = _privacy("POST", "/api/v1/privacy/requests", {
        "kind": "erasure", "subject": {"account": True}, "reason": "account deleted"},
        identity=deleting_the_account(g.identity))
    _users().delete_account(account_id)
    UserStore.erase_account_record(current_app.extensions["gateway_store"].db, account_id)
    return {"request_id": made["id"], "status": "deleting"}


POLICIES_PATH = "/api/v1/privacy/policies"


def publishes_a_policy() -> bool:
    return request.method == "POST" and request.path.rstrip("/") == POLICIES_PATH


def _operator_publishes_policy():
    """The platform's privacy policy is published with the operator token
    (not an account key): forwarded to privacy as the operator."""
    if not publishes_a_policy():
        return None
    expected = current_app.config["SANDESH"].operator_token
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("bearer ") or not keys.operator_token_matches(
            bearer_token(), expected):
        return None  # an account key: the normal path, then publish_policy
    return publish_policy(PLATFORM)


def publish_policy(identity: Identity):
    """Forward the publication to privacy as `identity` (the operator, or
    an account privacy lets publish: SANDESH_PRIVACY_PUBLISHER_ACCOUNTS,
    else it answers 403), then mail every account user the notice. A
    publisher account's publication went through the plain proxy, and
    nobody was told of the new policy."""
    upstreams = current_app.extensions["upstreams"]
    # The caller's Content-Type, not JSON's: privacy answers 415 to a body
    # that does not say it is JSON, as every JSON endpoint does.
    published = upstreams._call("privacy", "POST", request.path, identity,
                                {"Content-Type": request.headers.get("Content-Type", ""),
                                 "Accept": "application/json"},
                                data=request.get_data())
    body = _json_or_none(published)
    if body is None:  # a proxy's HTML error page: the policy's fate is unknown here
        raise ApiError(502, "privacy_error",
                       f"the privacy service answered {published.status_code} without JSON")
    if published.status_code == 201:
        # The policy stands whatever happens to the mail; the answer says how it went.
        try:
            body["notification"] = policy_mail.notify_account_users(
                current_app.extensions["gateway_store"].db, body)
        except policy_mail.NotifyFailed as exc:
            log.warning("policy notification failed", extra={"policy_id": body.get("id")})
            body["notification"] = {"status": "failed", "detail": str(exc)[:300]}
    return current_app.response_class(json.dumps(body), status=published.status_code,
                                      mimetype="application/json")


def init_app(app: Flask, smorest_api, db) -> None:
    """The one line in app.py: blueprint, indexes, operator policy route."""
    ensure_indexes(db, INDEXES)
    app.extensions["user_store"] = UserStore(db)
    smorest_api.register_blueprint(blp)
    app.before_request(_operator_publishes_policy)
