"""How a service knows a request came through the gateway.

The gateway authenticates the API key, then signs (HMAC-SHA256, shared
secret) the method, path, account id, principal, a timestamp and the
SHA-256 of the body. Services refuse an /api/ request whose signature is
missing, wrong or older than `MAX_SKEW` seconds, or whose body is not the
one signed, so calling a service directly with a made-up account header
gets 401, and so does replaying a signed request with another body.

The one body not covered is a file upload (multipart form data), which the
gateway streams on without holding it (up to the upload limit, 200 MB): it
is signed as UNSIGNED-PAYLOAD, as AWS's SigV4 does for streamed bodies, and
a service accepts that for multipart form data only.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Callable, Mapping

ACCOUNT = "X-Sandesh-Account"
PRINCIPAL = "X-Sandesh-Principal"
TIMESTAMP = "X-Sandesh-Timestamp"
SIGNATURE = "X-Sandesh-Signature"
CONTENT_SHA256 = "X-Sandesh-Content-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
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


def content_digest(body: bytes | None) -> str:
    """What the signature says of a body: its SHA-256, or UNSIGNED_PAYLOAD
    for a streamed upload (None)."""
    return UNSIGNED_PAYLOAD if body is None else hashlib.sha256(body).hexdigest()


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_QUERY_AS_IS = _UNRESERVED | frozenset(b"!$&'()*+,;=:@/?")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def canonical_query(raw: bytes) -> str:
    """A query string in one spelling of its many: escapes of unreserved
    characters decoded, other escapes in upper case, and every byte a query
    may not hold as is escaped (a lone % too). HTTP clients rewrite a URL on
    its way (requests and urllib3 turn %7e into ~ and %c3 into %C3), so the
    gateway sends this form and both sides sign it; it is idempotent."""
    out, i = [], 0
    while i < len(raw):
        byte = raw[i]
        if byte == 0x25 and i + 2 < len(raw) and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            value = int(raw[i + 1:i + 3], 16)
            out.append(chr(value) if value in _UNRESERVED else f"%{value:02X}")
            i += 3
            continue
        out.append(chr(byte) if byte in _QUERY_AS_IS else f"%{byte:02X}")
        i += 1
    return "".join(out)


def canonical_target(target: str) -> str:
    """The path as given (request_target escapes it), and the query in its
    canonical form."""
    path, mark, query = target.partition("?")
    return path + (mark + canonical_query(query.encode("latin-1", "replace")) if query else "")


def _signature(secret: str, method: str, target: str, account_id: str, principal: str,
               timestamp: str, digest: str) -> str:
    message = "\n".join([method.upper(), canonical_target(target), account_id, principal,
                         timestamp, digest]).encode("utf-8", "surrogateescape")
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(secret: str, method: str, target: str, identity: Identity,
                   body: bytes | None = b"", now: float | None = None) -> dict[str, str]:
    """`body`: the exact bytes sent (b"" for none), or None for a streamed
    multipart upload."""
    timestamp = str(int(now if now is not None else time.time()))
    digest = content_digest(body)
    return {
        ACCOUNT: identity.account_id,
        PRINCIPAL: identity.principal,
        TIMESTAMP: timestamp,
        CONTENT_SHA256: digest,
        SIGNATURE: _signature(secret, method, target, identity.account_id, identity.principal,
                              timestamp, digest),
    }


def verify(secret: str, headers: Mapping[str, str], method: str, target: str,
           body: Callable[[], bytes], now: float | None = None) -> Identity:
    """`body` reads the request's body; it is called only once the
    signature is known good, so nobody else can make a service read one."""
    if not secret:
        raise InvalidSignature("internal secret is not configured")
    account_id = headers.get(ACCOUNT, "")
    principal = headers.get(PRINCIPAL, "")
    timestamp = headers.get(TIMESTAMP, "")
    digest = headers.get(CONTENT_SHA256, "")
    given = headers.get(SIGNATURE, "")
    if not (account_id and principal and timestamp and digest and given):
        raise InvalidSignature("request did not come through the gateway")
    try:
        age = abs((now if now is not None else time.time()) - int(timestamp))
    except ValueError:
        raise InvalidSignature("bad timestamp") from None
    if age > MAX_SKEW:
        raise InvalidSignature("signature expired")
    expected = _signature(secret, method, target, account_id, principal, timestamp, digest)
    if not _same(expected, given):
        raise InvalidSignature("bad signature")
    if digest == UNSIGNED_PAYLOAD:
        if not headers.get("Content-Type", "").lower().startswith("multipart/form-data"):
            raise InvalidSignature("only a file upload may leave its body unsigned")
    elif not _same(content_digest(body()), digest):
        raise InvalidSignature("the body is not the one signed")
    return Identity(account_id, principal)


def _same(expected: str, given: str) -> bool:
    # As bytes: compare_digest raises TypeError on a str with non-ASCII characters.
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogateescape"))
