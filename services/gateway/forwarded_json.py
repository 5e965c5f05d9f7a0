"""The JSON object of a call the gateway forwards, for the few checks it
makes before forwarding (acting_users.py, audience.py). What it cannot read
is left for the service to refuse, with the service's own words."""
from __future__ import annotations

from flask import request
from webargs.core import is_json
from werkzeug.exceptions import RequestEntityTooLarge

from shared.http.blueprint import MAX_JSON_BYTES, json_too_large


def json_object() -> dict | None:
    """The body's JSON object, or None: not JSON, not an object, or JSON
    Python cannot take (nesting past the recursion limit, a number of over
    4,300 digits)."""
    if not is_json(request.mimetype):   # application/json or */*+json, as the services read it
        return None
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise json_too_large()
    request.max_content_length = MAX_JSON_BYTES   # a chunked body is cut there
    try:
        body = request.get_json(silent=True)
    except RequestEntityTooLarge:
        raise json_too_large() from None
    except (ValueError, RecursionError):
        return None
    return body if isinstance(body, dict) else None
