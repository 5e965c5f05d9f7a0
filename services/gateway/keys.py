"""API keys: `sk_<prefix>_<secret>`. Only a SHA-256 of the whole key is
stored (keys are 256-bit random, so a slow hash buys nothing); the prefix
finds the record and is what listings show."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX_LEN = 10


@dataclass(frozen=True)
class NewKey:
    prefix: str
    plaintext: str
    digest: str


def generate() -> NewKey:
    prefix = secrets.token_hex(PREFIX_LEN // 2)
    plaintext = f"sk_{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(prefix, plaintext, digest(plaintext))


def digest(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def prefix_of(plaintext: str) -> str | None:
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != "sk" or len(parts[1]) != PREFIX_LEN:
        return None
    return parts[1]


def matches(plaintext: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(plaintext), stored_digest)


def operator_token_matches(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())
