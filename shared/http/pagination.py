"""Cursor pagination: stays fast at any depth because it seeks on an index
(`_id` > last seen) instead of skipping."""
from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from typing import Any

import marshmallow as ma

from shared.http.errors import ApiError

MAX_LIMIT = 500


class PageArgs(ma.Schema):
    limit = ma.fields.Integer(load_default=50, validate=ma.validate.Range(1, MAX_LIMIT))
    cursor = ma.fields.String(load_default=None, validate=ma.validate.Length(max=500))


def encode_cursor(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(value, dict):
            raise ValueError
        return value
    except (ValueError, RecursionError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
        raise _not_a_cursor() from None


def cursor_position(cursor: str | None, key: str, kind: type[str] | type[int]) -> Any:
    """The `key` of a cursor this API returned (a short printable ASCII
    string or an int that MongoDB can store), or None without a cursor. A cursor that lacks
    it or holds another type is the same 400 as one that does not decode."""
    position = decode_cursor(cursor)
    if position is None:
        return None
    value = position.get(key)
    if kind is int:
        valid = type(value) is int and 0 <= value < 2 ** 63
    else:
        # Every id the services make is printable ASCII; a lone surrogate
        # or a NUL reached the database and was a 500.
        valid = (isinstance(value, str) and 0 < len(value) <= 200 and value.isascii()
                 and value.isprintable())
    if not valid:
        raise _not_a_cursor()
    return value


def cursor_time(cursor: str | None, key: str) -> datetime | None:
    """A time a cursor holds as milliseconds since the epoch (what MongoDB
    keeps of a datetime), or None without a cursor."""
    ms = cursor_position(cursor, key, int)
    if ms is None:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, timezone.utc)
    except (OverflowError, ValueError, OSError):  # past year 9999
        raise _not_a_cursor() from None


def cursor_ms(moment: datetime) -> int:
    """The cursor's form of a time read from MongoDB (whole milliseconds)."""
    return round(moment.timestamp() * 1000)


def _not_a_cursor() -> ApiError:
    return ApiError(400, "validation_error", "invalid input: cursor",
                    {"cursor": ["Not a cursor this API returned."]})


def page(items: list[Any], limit: int, position_of) -> dict[str, Any]:
    """Build a page from up to limit+1 fetched items."""
    has_more = len(items) > limit
    items = items[:limit]
    next_cursor = encode_cursor(position_of(items[-1])) if has_more and items else None
    return {"items": items, "next_cursor": next_cursor}
