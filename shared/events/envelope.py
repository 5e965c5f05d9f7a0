from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from shared.ids import unique_hex
from shared.tracing import ensure_trace_id

SPEC_VERSION = "1.0"


class InvalidEvent(ValueError):
    """A message that can never be processed: not JSON, not an envelope, or
    data that does not match its type's schema."""


@dataclass(frozen=True)
class Event:
    type: str
    source: str
    subject: str
    account_id: str
    data: dict[str, Any]
    id: str = field(default_factory=unique_hex)
    time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
    trace_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": self.time,
            "subject": self.subject,
            "datacontenttype": "application/json",
            "accountid": self.account_id,
            "traceid": self.trace_id,
            "data": self.data,
        }


def new_event(type: str, *, source: str, subject: str, account_id: str,
              data: dict[str, Any], id: str | None = None) -> Event:
    """Build an event carrying the current trace id (a new one if none)."""
    kwargs = {"id": id} if id else {}
    return Event(type=type, source=source, subject=str(subject), account_id=str(account_id),
                 data=data, trace_id=ensure_trace_id(), **kwargs)


def encode(event: Event) -> bytes:
    from shared.events.registry import validate

    body = event.to_dict()
    validate(body)
    return to_json(body)


def to_json(value: Any) -> bytes:
    """JSON as every event is written (compact, UTF-8): also what a value
    will weigh inside one."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def decode(raw: bytes | None) -> Event:
    from shared.events.registry import validate

    if raw is None:
        raise InvalidEvent("empty message (tombstone) where an event was expected")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"not JSON: {exc}") from exc
    validate(body, tolerant=True)
    return Event(type=body["type"], source=body["source"], subject=body["subject"],
                 account_id=body["accountid"], data=body["data"], id=body["id"],
                 time=body["time"], trace_id=body.get("traceid", ""))
