"""A readiness probe for Kafka that answers within its timeout: one
ApiVersions request (the first thing every client sends) to a bootstrap
server. kafka-python's own `bootstrap_connected()` only reports a bootstrap
in progress, and its metadata calls block for max_block_ms."""
from __future__ import annotations

import socket
import struct

API_VERSIONS = 18
CORRELATION_ID = 0x5A4D


def _request(client_id: bytes) -> bytes:
    body = struct.pack(">hhih", API_VERSIONS, 0, CORRELATION_ID, len(client_id)) + client_id
    return struct.pack(">i", len(body)) + body


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        data += chunk
    return data


def check_broker(bootstrap: str, timeout: float = 2.0) -> None:
    """Raise unless some bootstrap server answers ApiVersions without error."""
    problems = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout) as sock:
                sock.settimeout(timeout)
                sock.sendall(_request(b"sandesh-probe"))
                (size,) = struct.unpack(">i", _read_exact(sock, 4))
                correlation, error = struct.unpack(">ih", _read_exact(sock, min(size, 6)))
                if correlation == CORRELATION_ID and error == 0:
                    return
                problems.append(f"{server}: error code {error}")
        except (OSError, ValueError, struct.error) as exc:
            problems.append(f"{server}: {exc}")
    raise ConnectionError("Kafka unreachable: " + "; ".join(problems))
