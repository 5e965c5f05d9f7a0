"""The id of one send job: a stable hash of (campaign id, contact id).

Fan-out, the sender's claim and campaigns' progress all key on it, so a
recipient fanned out twice (a restart between a flush and its record)
is still one job: the sender claims it once and progress counts it once.
"""
from __future__ import annotations

import hashlib

JOB_ID_LENGTH = 32


def job_id_for(campaign_id: str, contact_id: str) -> str:
    """32 lower-case hex characters; the separator keeps ("a", "bc") and
    ("ab", "c") apart."""
    raw = f"{campaign_id}\x1f{contact_id}".encode()
    return hashlib.sha256(raw).hexdigest()[:JOB_ID_LENGTH]
