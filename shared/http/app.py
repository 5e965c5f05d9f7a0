"""create_service_app(): the Flask app every service starts from.

It gives a service its JSON errors, request ids, /healthz (alive),
/readyz (its dependencies answer), /metrics, its OpenAPI document at
/openapi.json, and, for /api/ routes, the identity the gateway signed.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Callable, Iterable, Mapping
from urllib.parse import quote

import flask_smorest
from flask import Flask, Response, g, jsonify, request

from shared import metrics
from shared.config import Config
from shared.http import internal_auth
from shared.http.errors import ApiError, ErrorSchema, register_error_handlers
from shared.http.openapi import DocumentedValidation
from shared.tracing import new_trace_id, set_trace_id

log = logging.getLogger(__name__)

REQUEST_ID = "X-Request-Id"
# A caller's request id is kept (and becomes the trace id of every event and
# log line of its work) only when it is an opaque id: hex digits and hyphens,
# as a UUID or a W3C trace id is. Anything else, e.g. "jane@example.com Jane",
# would have carried personal data onto the analytics streams: a fresh id
# replaces it, and is the one the answer carries.
_OPAQUE_ID = re.compile(r"[0-9A-Fa-f-]{16,64}")


def caller_request_id(value: str | None) -> str | None:
    return value if value and _OPAQUE_ID.fullmatch(value) else None
ReadinessCheck = Callable[[], None]  # raises when not ready


# What a path may hold as is (RFC 3986 pchar and "/"): anything else, "?",
# "#" and "%" among it, is escaped again.
_PATH_AS_IS = "/!$&'()*+,;=:@"


def request_target() -> str:
    """This request's path and query, as the gateway forwards them and a
    signature covers them: the path escaped again (the gateway forwarded the
    decoded path, and /lists/<id>%3Fx reached the service as list <id> with a
    query), the query in its canonical spelling (internal_auth)."""
    query = internal_auth.canonical_query(request.query_string)
    return quote(request.path, safe=_PATH_AS_IS) + (f"?{query}" if query else "")


def current_identity() -> internal_auth.Identity:
    identity = getattr(g, "identity", None)
    if identity is None:
        raise ApiError(401, "unauthenticated", "no identity on this request")
    return identity


class Api(flask_smorest.Api):
    """flask-smorest's, its OpenAPI document describing the errors as they are."""
    ERROR_SCHEMA = ErrorSchema


def create_service_app(service: str, config: Config, *, title: str,
                       readiness: Mapping[str, ReadinessCheck] | None = None,
                       public_prefixes: Iterable[str] = (),
                       signed_prefix: str | None = "/api/") -> tuple[Flask, flask_smorest.Api]:
    app = Flask(service)
    # "//" in a path is no route: merged, it was answered with an HTML 308
    # whose Location named the service's own address (through the gateway,
    # /contacts/%2F/consent).
    app.url_map.merge_slashes = False
    app.config.update(
        API_TITLE=title, API_VERSION="v1", OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/", OPENAPI_JSON_PATH="openapi.json",
        JSON_SORT_KEYS=False, MAX_CONTENT_LENGTH=None,
    )
    app.config["SANDESH"] = config
    app.json.sort_keys = False
    api = Api(app, spec_kwargs={"marshmallow_plugin": DocumentedValidation()})
    register_error_handlers(app)  # after Api(): ours replace smorest's shape
    public = tuple(public_prefixes)
    checks = dict(readiness or {})

    @app.before_request
    def _begin():
        g.started = time.perf_counter()
        g.request_id = caller_request_id(request.headers.get(REQUEST_ID)) or new_trace_id()
        set_trace_id(g.request_id)
        if signed_prefix and request.path.startswith(signed_prefix) \
                and not request.path.startswith(public):
            try:
                g.identity = internal_auth.verify(config.internal_secret, request.headers,
                                                  request.method, request_target(),
                                                  lambda: request.get_data(cache=True))
            except internal_auth.InvalidSignature as exc:
                raise ApiError(401, "unauthenticated", str(exc))

    @app.after_request
    def _finish(response: Response):
        response.headers[REQUEST_ID] = getattr(g, "request_id", "")
        route = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.HTTP_REQUESTS.labels(service, metrics.method_label(request.method), route,
                                     response.status_code).inc()
        if hasattr(g, "started"):
            metrics.HTTP_LATENCY.labels(service, route).observe(time.perf_counter() - g.started)
        return response

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", service=service, stack_id=config.stack_id)

    @app.get("/readyz")
    def readyz():
        failures = {}
        for name, check in checks.items():
            try:
                check()
            except Exception as exc:  # a readiness probe reports, it does not raise
                failures[name] = f"{type(exc).__name__}: {exc}"[:300]
        body = {"status": "ready" if not failures else "not_ready", "service": service,
                "stack_id": config.stack_id, "checks": {n: failures.get(n, "ok") for n in checks}}
        return jsonify(body), (200 if not failures else 503)

    @app.get("/metrics")
    def metrics_endpoint():
        payload, content_type = metrics.render()
        return Response(payload, content_type=content_type)

    return app, api
