"""Requests gunicorn refuses before any app sees them (shared/http/gunicorn_errors.py)
get the API's JSON error shape from every web service, and never quote the
request back."""
import json
import socket
from urllib.parse import urlsplit

import pytest

WEB_SERVICES = ["GATEWAY", "TRACKING", "CONTACTS", "CAMPAIGNS", "PRIVACY"]
SECRET = b"ann.secret@example.com"
REFUSED = {
    414: b"GET /api/v1/contacts?email_prefix=" + SECRET + b"a" * 5000 + b" HTTP/1.1\r\n"
         b"Host: x\r\n\r\n",
    431: b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Note: " + SECRET + b"a" * 9000 + b"\r\n\r\n",
    400: b"GET /" + SECRET + b" two spaces HTTP/1.1\r\nHost: x\r\n\r\n",
}


def _answer(url: str, request: bytes) -> tuple[int, dict, bytes]:
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):   # gunicorn closes the connection
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("service", WEB_SERVICES)
@pytest.mark.parametrize("status", sorted(REFUSED))
def test_a_request_gunicorn_refuses_gets_a_json_error(stack_env, service, status):
    code, headers, body = _answer(stack_env[f"SANDESH_{service}_URL"], REFUSED[status])
    assert code == status and headers["Content-Type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] and error["message"] and error["details"] == {}
    assert SECRET not in body
