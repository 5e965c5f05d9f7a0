"""Failed authentications, limited per client address.

An API key is 256 random bits, beyond guessing, but the operator token is
the operator's choice, and every wrong key costs a database read. So one
client address gets SANDESH_AUTH_FAILURES_PER_MINUTE failed authentications
a minute, counted across every gateway process by the tickets of
rate_limit.py. Past them, its requests that need a key or the operator token
are refused with a 429 before either is checked, until the minute ends: a
right guess then looks like a wrong one.

The address is personal data: it is kept only as a keyed hash, in tickets
that live two minutes. Behind the ingress it is read from X-Forwarded-For
(SANDESH_TRUSTED_PROXY_HOPS). Clients behind one NAT share an allowance.
"""
from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from typing import Iterator

from services.gateway.rate_limit import RateLimiter
from shared.http.errors import ApiError


class AuthFailures:
    def __init__(self, limiter: RateLimiter, limit: int, secret: str, clock=time.time):
        self.limiter, self.limit, self.clock = limiter, limit, clock
        self._hash_key = hashlib.sha256(b"auth-failures:" + secret.encode()).digest()

    def refuse_if_over(self, address: str | None) -> None:
        """A 429 when this process knows the address spent its failures."""
        now = self.clock()
        if self.limiter.spent(self._slot(address), int(now // 60), self.limit):
            raise self._too_many(now)

    @contextmanager
    def counted(self, address: str | None) -> Iterator[None]:
        """Counts a 401 raised inside; the one past the limit is a 429."""
        try:
            yield
        except ApiError as error:
            if error.status == 401:
                self._failed(address)
            raise

    def _failed(self, address: str | None) -> None:
        now = self.clock()
        if not self.limiter.admit(self._slot(address), int(now // 60), self.limit):
            raise self._too_many(now)

    def _slot(self, address: str | None) -> str:
        digest = hashlib.blake2b((address or "").encode(), key=self._hash_key, digest_size=12)
        return f"auth-failures:{digest.hexdigest()}"

    def _too_many(self, now: float) -> ApiError:
        wait = max(1, int(60 - now % 60))
        return ApiError(429, "too_many_failed_authentications",
                        f"more than {self.limit} failed authentications a minute from this "
                        f"address; try again in {wait} s",
                        {"field": "Authorization", "limit_per_minute": self.limit},
                        headers={"Retry-After": str(wait)})
