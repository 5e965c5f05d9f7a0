"""Audit entries for what contacts does with personal data in bulk or for
good (a CSV export, a contact deleted): an `audit.recorded` event on
audit.events, which the privacy service appends to its audit log.

Recorded before the act and flushed: no entry, no export or delete (the
caller answers 503 and the client retries). Ids only, never an address.
"""
from __future__ import annotations

import logging

from shared import topics
from shared.events import new_event
from shared.http.errors import ApiError
from shared.kafka.producer import EventProducer

SOURCE = "contacts"
log = logging.getLogger(__name__)


def record(producer: EventProducer, account_id: str, action: str, principal: str,
           target_type: str, target_id: str, reason: str | None = None) -> None:
    data = {"action": action, "target_type": target_type, "target_id": target_id,
            "principal": principal, "service": SOURCE, "reason": reason}
    try:
        producer.publish(topics.AUDIT_EVENTS, new_event(
            "audit.recorded", source=SOURCE, subject=target_id, account_id=account_id,
            data=data), key=account_id)
        producer.flush(timeout=30)
    except Exception:
        log.exception("audit entry not published", extra={"action": action})
        raise ApiError(503, "broker_unavailable", f"{action} could not be audited; nothing "
                       "was done, try again", headers={"Retry-After": "5"}) from None
