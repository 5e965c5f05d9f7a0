"""Health, readiness and metrics for processes that are not web apps (the
Kafka workers, the sender), served from a daemon thread."""
from __future__ import annotations

import faulthandler
import json
import logging
import threading
import time
from typing import Callable, Mapping
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from socketserver import ThreadingMixIn

from shared import metrics

# A stalled process prints its threads' stacks at most this often: the probe
# asks every few seconds, and one dump a stall is what a diagnosis needs.
STACKS_EVERY_SECONDS = 60.0

log = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def serve(host: str, port: int, service: str, stack_id: str,
          readiness: Mapping[str, Callable[[], None]],
          liveness: Mapping[str, Callable[[], None]] | None = None) -> WSGIServer:
    """/healthz fails (503) when a `liveness` check raises (a stuck main
    loop: shared/heartbeat.py), /readyz when a `readiness` one does."""
    liveness = liveness or {}
    last_stacks = [float("-inf")]

    def print_stacks_once_a_while(failures: dict[str, str]) -> None:
        # Kubernetes restarts the pod after a few failed probes, and with it
        # goes the only evidence of where the loop was stuck.
        if time.monotonic() - last_stacks[0] < STACKS_EVERY_SECONDS:
            return
        last_stacks[0] = time.monotonic()
        log.error("liveness check failing; every thread's stack follows on stderr",
                  extra={"checks": failures})
        faulthandler.dump_traceback(all_threads=True)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            payload, content_type = metrics.render()
            start_response("200 OK", [("Content-Type", content_type)])
            return [payload]
        if path == "/healthz":
            failures = _failures(liveness)
            if failures:
                print_stacks_once_a_while(failures)
            body = {"status": "stalled" if failures else "ok", "service": service,
                    "stack_id": stack_id,
                    **({"checks": {n: failures.get(n, "ok") for n in liveness}} if liveness
                       else {})}
            status = "503 Service Unavailable" if failures else "200 OK"
        elif path == "/readyz":
            failures = _failures(readiness)
            body = {"status": "not_ready" if failures else "ready", "service": service,
                    "stack_id": stack_id,
                    "checks": {n: failures.get(n, "ok") for n in readiness}}
            status = "503 Service Unavailable" if failures else "200 OK"
        else:
            body, status = {"error": {"code": "not_found", "message": "not found",
                                      "details": {}}}, "404 Not Found"
        start_response(status, [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    server = make_server(host, port, app, server_class=_ThreadingServer,
                         handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    return server


def _failures(checks: Mapping[str, Callable[[], None]]) -> dict[str, str]:
    failures = {}
    for name, check in checks.items():
        try:
            check()
        except Exception as exc:
            failures[name] = f"{type(exc).__name__}: {exc}"[:300]
    return failures
