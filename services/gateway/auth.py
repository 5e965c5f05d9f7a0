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


class AccountLimits:
    """Each account's requests a minute, read at most once a minute per
    process; None for an account that is gone (deleted): a key made at the
    moment of its deletion outlived the revocation."""

    def __init__(self, store: GatewayStore, default_limit: int, ttl: float = 60.0,
                 clock=time.monotonic):
        self.store, self.default_limit, self.ttl, self.clock = store, default_limit, ttl, clock
        self._cache: dict[str, tuple[float, int | None]] = {}

    def of(self, account_id: str) -> int | None:
        now = self.clock()
        cached = self._cache.get(account_id)
        if cached is None or now - cached[0] >= self.ttl:
            account = self.store.get_account(account_id)
            limit = None if account is None or account.get("status") == "deleted" \
                else account.get("rate_limit_per_minute") or self.default_limit
            cached = self._cache[account_id] = (now, limit)
        return cached[1]


def enforce_rate_limit(limiter: RateLimiter, key: dict, default_limit: int,
                       account_limit: int | None = None, clock=time.time) -> None:
    """The key's own limit, then the account's across all its keys: each
    new key came with a full budget, so making and revoking keys gave an
    account as many requests as it liked."""
    limit = key.get("rate_limit_per_minute") or default_limit
    now = clock()
    retry_after = {"Retry-After": str(max(1, int(60 - now % 60)))}
    if not limiter.admit(key["_id"], int(now // 60), limit):
        raise ApiError(429, "rate_limited", f"more than {limit} requests a minute for this key",
                       {"limit_per_minute": limit}, headers=retry_after)
    if account_limit and not limiter.admit(f"account:{key['account_id']}", int(now // 60),
                                           account_limit):
        raise ApiError(429, "rate_limited",
                       f"more than {account_limit} requests a minute for this account",
                       {"limit_per_minute": account_limit}, headers=retry_after)
