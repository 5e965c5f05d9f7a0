"""How a service knows a request came through the gateway.

The gateway authenticates the API key, then signs (HMAC-SHA256, shared
secret) the method, path, account id, principal and a timestamp. Services
refuse an /api/ request whose signature is missing, wrong or older than
`MAX_SKEW` seconds, so calling a service directly with a made-up account
header gets 401.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Mapping

ACCOUNT = "X-Sandesh-Account"
PRINCIPAL = "X-Sandesh-Principal"
TIMESTAMP = "X-Sandesh-Timestamp"
SIGNATURE = "X-Sandesh-Signature"
MAX_SKEW = 300


@dataclass(frozen=True)
class Identity:
    account_id: str
    principal: str  # the API key id (or "operator")


class InvalidSignature(Exception):
    pass


# The gateway's DELETE /api/v1/account signs its privacy request with this
# principal (and the key's id after it): only that flow, which also revokes
# the keys and deletes the users, may ask for an account's erasure.
ACCOUNT_DELETION = "account-deletion"


def deleting_the_account(identity: Identity) -> Identity:
    return Identity(identity.account_id, f"{ACCOUNT_DELETION}:{identity.principal}")


def is_account_deletion(identity: Identity) -> bool:
    return identity.principal.startswith(ACCOUNT_DELETION + ":")


def _signature(secret: str, method: str, target: str, account_id: str, principal: str,
               timestamp: str) -> str:
    message = "\n".join([method.upper(), target, account_id, principal, timestamp]).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(secret: str, method: str, target: str, identity: Identity,
                   now: float | None = None) -> dict[str, str]:
    timestamp = str(int(now if now is not None else time.time()))
    return {
        ACCOUNT: identity.account_id,
        PRINCIPAL: identity.principal,
        TIMESTAMP: timestamp,
        SIGNATURE: _signature(secret, method, target, identity.account_id, identity.principal,
                              timestamp),
    }


def verify(secret: str, headers: Mapping[str, str], method: str, target: str,
           now: float | None = None) -> Identity:
    if not secret:
        raise InvalidSignature("internal secret is not configured")
    account_id = headers.get(ACCOUNT, "")
    principal = headers.get(PRINCIPAL, "")
    timestamp = headers.get(TIMESTAMP, "")
    given = headers.get(SIGNATURE, "")
    if not (account_id and principal and timestamp and given):
        raise InvalidSignature("request did not come through the gateway")
    try:
        age = abs((now if now is not None else time.time()) - int(timestamp))
    except ValueError:
        raise InvalidSignature("bad timestamp") from None
    if age > MAX_SKEW:
        raise InvalidSignature("signature expired")
    expected = _signature(secret, method, target, account_id, principal, timestamp)
    # As bytes: compare_digest raises TypeError on a str with non-ASCII characters.
    if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogateescape")):
        raise InvalidSignature("bad signature")
    return Identity(account_id, principal)
