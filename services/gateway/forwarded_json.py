"""The JSON object of a call the gateway forwards, for the few checks it
makes before forwarding (acting_users.py, audience.py). What it cannot read
is left for the service to refuse, with the service's own words."""
from __future__ import annotations

from flask import request

from shared.http.blueprint import MAX_JSON_BYTES


def json_object() -> dict | None:
    """The body's JSON object, or None: not JSON, not an object, or JSON
    Python cannot take (nesting past the recursion limit, a number of over
    4,300 digits)."""
    if request.mimetype != "application/json":
        return None
    request.max_content_length = MAX_JSON_BYTES   # as the forwarded body is capped
    try:
        body = request.get_json(silent=True)
    except (ValueError, RecursionError):
        return None
    return body if isinstance(body, dict) else None
