"""gunicorn's own error answers in the API's JSON error shape.

gunicorn refuses some requests before any app sees them: a request line over
4,094 bytes (414), headers too large or too many (431), a malformed request
line or header (400), a transfer coding it does not take (501). It answers
those with an HTML page that quotes the request. `install()` replaces the one
function that writes them, `gunicorn.util.write_error`: its workers call it
through the module, and requirements.lock pins gunicorn. The answer names
the status, never what the client sent (it may be a recipient's address in
a link)."""
from __future__ import annotations

import json

from gunicorn import util

_MESSAGES = {
    400: "the request is not valid HTTP",
    414: "the request line (method, path and query string) is too long",
    431: "the request headers are too large or too many",
    501: "the transfer coding is not supported",
}


def json_error(status: int, reason: str) -> bytes:
    """The whole HTTP answer: status line, headers and the JSON body."""
    code = reason.lower().replace(" ", "_")
    message = _MESSAGES.get(status, reason.lower())
    body = json.dumps({"error": {"code": code, "message": message, "details": {}}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


def _write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    util.write_nonblock(sock, json_error(status_int, reason))


def install() -> None:
    util.write_error = _write_json_error
