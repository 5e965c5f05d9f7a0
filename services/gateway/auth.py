"""Who is calling: the operator (for account creation) or an account's API
key. Every failure is the same 401, so a caller learns nothing about which
keys exist."""
from __future__ import annotations

import time

from flask import request

from services.gateway import keys
from services.gateway.rate_limit import RateLimiter
from services.gateway.store import GatewayStore
from shared.http.errors import ApiError
from shared.http.internal_auth import Identity

OPERATOR = "operator"


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthenticated", "missing API key: send Authorization: Bearer <key>",
                       headers={"WWW-Authenticate": "Bearer"})
    return token.strip()


def require_operator(expected_token: str) -> None:
    if not keys.operator_token_matches(bearer_token(), expected_token):
        raise ApiError(401, "unauthenticated", "operator token required",
                       headers={"WWW-Authenticate": "Bearer"})


def authenticate(store: GatewayStore) -> tuple[Identity, dict]:
    token = bearer_token()
    prefix = keys.prefix_of(token)
    record = store.key_by_prefix(prefix) if prefix else None
    if record is None or record["revoked_at"] is not None \
            or not keys.matches(token, record["digest"]):
        raise ApiError(401, "unauthenticated", "invalid or revoked API key",
                       headers={"WWW-Authenticate": "Bearer"})
    return Identity(record["account_id"], record["_id"]), record


def enforce_rate_limit(limiter: RateLimiter, key: dict, default_limit: int,
                       clock=time.time) -> None:
    limit = key.get("rate_limit_per_minute") or default_limit
    now = clock()
    if not limiter.admit(key["_id"], int(now // 60), limit):
        retry_after = max(1, int(60 - now % 60))
        raise ApiError(429, "rate_limited", f"more than {limit} requests a minute for this key",
                       {"limit_per_minute": limit}, headers={"Retry-After": str(retry_after)})
