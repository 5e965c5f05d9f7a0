"""Requests to a service app as the gateway sends them: identity, timestamp
and the body's digest signed (shared/http/internal_auth.py)."""
from __future__ import annotations

import json as jsonlib

from shared.http.internal_auth import Identity, signed_headers


def signed_open(flask_client, secret: str, identity: Identity, method: str, path: str,
                json=None, headers: dict | None = None, **kw):
    """`json`: sent as the exact bytes signed. Multipart form data (an
    upload: a `data` dict, or an `input_stream`) is signed as an unsigned
    payload, as the gateway signs it."""
    if json is not None:
        kw["data"] = body = jsonlib.dumps(json).encode()
        kw["content_type"] = "application/json"
    elif isinstance(kw.get("data"), (bytes, str)):
        body = kw["data"].encode() if isinstance(kw["data"], str) else kw["data"]
    elif kw.get("data") is not None or "input_stream" in kw:
        body = None
    else:
        body = b""
    signed = signed_headers(secret, method, path, identity, body)
    return flask_client.open(path, method=method, headers={**signed, **(headers or {})}, **kw)
