"""The gateway's own API: accounts (operator), keys, usage, the merged
OpenAPI document. Everything else under /api/v1 is forwarded (app.py)."""
from __future__ import annotations

from datetime import datetime

from flask import current_app, g, jsonify
from pymongo.errors import DuplicateKeyError

from services.gateway import keys, openapi
from services.gateway.routes import USAGE_PARTS
from services.gateway.store import LastKey
from services.gateway.schemas import (AccountCreate, AccountCreated, Account, Key, KeyCreate,
                                      KeyList, NewKey, Usage)
from shared.http import Blueprint
from shared.http.errors import ApiError, not_found
from shared.http.pagination import PageArgs, cursor_ms, cursor_position, cursor_time, page

blp = Blueprint("gateway", __name__, url_prefix="/api/v1", description="Accounts and API keys")

USAGE_FIELDS = ["lists", "contacts", "templates", "campaigns", "mailings_sent", "mailings_bytes"]


def _store():
    return current_app.extensions["gateway_store"]


def _issue_key(account_id: str, name: str, rate_limit: int | None) -> dict:
    for _ in range(3):  # a prefix is 40 random bits: another key may have it
        new = keys.generate()
        try:
            record = _store().add_key(account_id, new.prefix, new.digest, name, rate_limit)
        except DuplicateKeyError:
            continue
        return {**record, "key": new.plaintext}
    raise ApiError(503, "try_again", "no free key prefix was found; try again",
                   headers={"Retry-After": "1"})


@blp.post("/accounts")
@blp.arguments(AccountCreate)
@blp.response(201, AccountCreated)
def create_account(body):
    """Create an account and its first API key (operator token required,
    checked before the request reaches here: app.py)."""
    account = _store().create_account(body["name"], body["postal_address"],
                                      body["rate_limit_per_minute"] or 0)
    return {"account": account,
            "api_key": _issue_key(account["_id"], "first key", body["rate_limit_per_minute"])}


@blp.get("/account")
@blp.response(200, Account)
def get_account():
    """The calling key's account."""
    account = _store().get_account(g.identity.account_id)
    if account is None:
        raise not_found("account")
    return account


@blp.get("/keys")
@blp.arguments(PageArgs, location="query")
@blp.response(200, KeyList)
def list_keys(args):
    """The account's API keys, revoked ones included, oldest first (prefix
    only; the secret is never shown again)."""
    keys_ = _store().list_keys(g.identity.account_id, args["limit"] + 1, _after_key(args))
    return page(keys_, args["limit"], _key_position)


def _key_position(key: dict) -> dict:
    return {"ms": cursor_ms(key["created_at"]), "id": key["_id"]}


def _after_key(args) -> tuple[datetime, str] | None:
    cursor = args.get("cursor")
    if not cursor:
        return None
    return cursor_time(cursor, "ms"), cursor_position(cursor, "id", str)


# An account's keys share what the operator allowed it: each key's limit is
# at most the account's, and the keys are few, so extra keys cannot
# multiply the limit without bound.
MAX_ACTIVE_KEYS = 20


@blp.post("/keys")
@blp.arguments(KeyCreate, required=False)  # every field has a default
@blp.response(201, NewKey)
def create_key(body):
    """Create another API key for the calling account: at most
    MAX_ACTIVE_KEYS unrevoked, each limited to at most the account's
    requests a minute (the account's limit when not given)."""
    account_id = g.identity.account_id
    account = _store().get_account(account_id)
    if account is None:
        raise not_found("account")
    allowed = account.get("rate_limit_per_minute") or \
        current_app.config["SANDESH"].rate_limit_per_minute
    asked = body["rate_limit_per_minute"]
    if asked is not None and asked > allowed:
        raise ApiError(400, "validation_error", "invalid input: rate_limit_per_minute",
                       {"rate_limit_per_minute": [f"at most {allowed}, the account's limit"]})
    active = _store().count_active_keys(account_id)
    if active >= MAX_ACTIVE_KEYS:
        raise ApiError(409, "too_many_keys",
                       f"the account has {active} active keys; revoke one first")
    return _issue_key(account_id, body["name"], asked or allowed)


@blp.delete("/keys/<key_id>")
@blp.response(200, Key)
def revoke_key(key_id):
    """Revoke a key of the calling account; it stops working at once. The
    account's last working key is not revoked (409 `last_key`): make its
    successor first."""
    try:
        revoked = _store().revoke_key(g.identity.account_id, key_id)
    except LastKey:
        raise ApiError(409, "last_key", "this is the account's last working key; "
                                        "make another before revoking it")
    if revoked is None:
        raise not_found("key")
    return revoked


@blp.get("/usage")
@blp.response(200, Usage)
def usage():
    """Lists, contacts, templates, campaigns, mailings sent and their size."""
    upstreams = current_app.extensions["upstreams"]
    totals = dict.fromkeys(USAGE_FIELDS, 0)
    for service in USAGE_PARTS:
        part = upstreams.get_json(service, "/api/v1/usage", g.identity, timeout=(1.0, 5.0))
        for field in USAGE_FIELDS:
            totals[field] += int(part.get(field, 0) or 0)
    return totals


@blp.get("/openapi.json")
def merged_openapi():
    """The merged OpenAPI document of the whole public API."""
    return jsonify(openapi.merged(current_app))
