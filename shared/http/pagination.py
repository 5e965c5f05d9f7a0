"""Cursor pagination: stays fast at any depth because it seeks on an index
(`_id` > last seen) instead of skipping."""
from __future__ import annotations

import base64
import json
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
    except (ValueError, json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "validation_error", "invalid input: cursor",
                       {"cursor": ["Not a cursor this API returned."]}) from None


def page(items: list[Any], limit: int, position_of) -> dict[str, Any]:
    """Build a page from up to limit+1 fetched items."""
    has_more = len(items) > limit
    items = items[:limit]
    next_cursor = encode_cursor(position_of(items[-1])) if has_more and items else None
    return {"items": items, "next_cursor": next_cursor}
