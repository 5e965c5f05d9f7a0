"""The id of one send job: stable for (campaign id, contact id) while the
campaign's fan-out runs, and unlinkable to the contact afterwards.

Fan-out, the sender's claim and campaigns' progress all key on it, so a
recipient fanned out twice (a restart between a flush and its record)
is still one job: the sender claims it once and progress counts it once.

The id is an HMAC of the pair under a random key of the campaign's own,
kept in its fan-out document until the fan-out is done (fanout_store.py).
Job ids stay in records an erasure keeps for the totals (the sender's
delivery records, tracking's markers, campaigns' outcomes). A plain hash of
the pair would let anyone holding the erased contact's id (every tracking
link carries it) compute its job ids and find those records again; once
the key is gone, nobody can.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

JOB_ID_LENGTH = 32


def new_job_id_key() -> str:
    return secrets.token_hex(32)


def job_id_for(campaign_id: str, contact_id: str, key: str | None = None) -> str:
    """32 lower-case hex characters; the separator keeps ("a", "bc") and
    ("ab", "c") apart. Without a key, the plain hash that fan-outs started
    before the keys (and test sends, whose contact part is random) use."""
    raw = f"{campaign_id}\x1f{contact_id}".encode()
    if key is None:
        return hashlib.sha256(raw).hexdigest()[:JOB_ID_LENGTH]
    return hmac.new(bytes.fromhex(key), raw, hashlib.sha256).hexdigest()[:JOB_ID_LENGTH]
