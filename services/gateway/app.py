from __future__ import annotations

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import Map, Rule

from services.gateway import acting_users, api, audience, openapi, users
from services.gateway.auth import AccountLimits, authenticate, enforce_rate_limit, require_operator
from services.gateway.auth_failures import AuthFailures
from services.gateway.cors import Cors
from services.gateway.rate_limit import INDEXES as RATE_INDEXES
from services.gateway.rate_limit import RateLimiter
from services.gateway.routes import owner
from services.gateway.settings import SETTINGS
from services.gateway.store import INDEXES, GatewayStore
from services.gateway.upstream import Upstreams
from shared.config import load_common
from shared.http.app import create_service_app
from shared.http.errors import ApiError, not_found
from shared.logs import configure_logging
from shared.mongo import ensure_indexes
from shared.runtime import Runtime

SERVICE = "gateway"
UNAUTHENTICATED = {("GET", "/api/v1/openapi.json")}
OPERATOR_ONLY = {("POST", "/api/v1/accounts")}


def create_app(environ=None) -> Flask:
    config = load_common(SETTINGS, environ)
    configure_logging(SERVICE, config.log_level)
    runtime = Runtime(SERVICE, config)
    app, smorest_api = create_service_app(SERVICE, config, title="Sandesh gateway",
                                          readiness=runtime.readiness(kafka=False),
                                          signed_prefix=None)
    store = GatewayStore(runtime.db)
    ensure_indexes(runtime.db, {**INDEXES, **RATE_INDEXES})
    limiter = RateLimiter(runtime.db)
    account_limits = AccountLimits(store, config.rate_limit_per_minute)
    auth_failures = AuthFailures(limiter, config.auth_failures_per_minute, config.internal_secret)
    app.extensions["gateway_store"] = store
    app.extensions["upstreams"] = Upstreams(
        {"contacts": config.contacts_url, "campaigns": config.campaigns_url,
         "tracking": config.tracking_url, "privacy": config.privacy_url},
        config.internal_secret, config.upstream_connect_timeout, config.upstream_read_timeout)
    Cors(config.dashboard_origin).init_app(app)
    smorest_api.register_blueprint(api.blp)
    users.init_app(app, smorest_api, runtime.db)

    @app.before_request
    def _authenticate():
        if not request.path.startswith("/api/") or request.method == "OPTIONS" \
                or (request.method, request.path) in UNAUTHENTICATED:
            return
        auth_failures.refuse_if_over(request.remote_addr)
        with auth_failures.counted(request.remote_addr):
            if (request.method, request.path) in OPERATOR_ONLY:
                require_operator(config.operator_token)
                return
            g.identity, key = authenticate(store)
            account_limit = account_limits.of(g.identity.account_id)
            if account_limit is None:
                raise ApiError(401, "unauthenticated", "invalid or revoked API key",
                               headers={"WWW-Authenticate": "Bearer"})
        enforce_rate_limit(limiter, key, config.rate_limit_per_minute, account_limit)

    @app.before_request
    def _allowed_methods():
        """An OPTIONS (not a CORS preflight, answered before) lists in Allow
        the methods the document gives the path. Flask's own answer listed
        those of every rule the path matched, the catch-all's among them:
        GET, PUT, DELETE... for /campaigns/<id>/pause, which takes POST."""
        if request.method != "OPTIONS" or not request.path.startswith("/api/"):
            return None
        methods = openapi.methods_at(app, request.path) if _plain_path(request.path) else None
        if methods is None:
            raise not_found("endpoint")
        return Response(status=200, headers={"Allow": ", ".join(methods)})

    @app.route("/api/v1/<path:rest>",
               methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def forward(rest):
        service = owner(request.path) if _plain_path(request.path) else None
        if service is None:
            _refuse_a_method_of_our_own(own_routes, request.path, request.method)
            raise not_found("endpoint")
        try:
            acting_users.check(service, g.identity.account_id, app.extensions["user_store"])
            audience.check(service, g.identity, app.extensions["upstreams"])
        except ApiError:
            # A body is refused only for a method the path takes: to another
            # (GET of a POST-only path, with a user_id) the service's 405
            # says what is wrong, not a 400 about a field it never reads.
            if _takes(app, request.method, request.path):
                raise
        if users.publishes_a_policy():   # a publisher account's: its users are mailed too
            return users.publish_policy(g.identity)
        return app.extensions["upstreams"].forward(service, g.identity)

    if config.trusted_proxy_hops:
        # Behind the ingress the peer is the controller: failed
        # authentications are counted per client (auth_failures.py).
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.trusted_proxy_hops)
    own_routes = Map([Rule(rule.rule, methods=rule.methods, endpoint=rule.endpoint)
                      for rule in app.url_map.iter_rules() if rule.endpoint != "forward"])
    return app


def _refuse_a_method_of_our_own(own_routes: Map, path: str, method: str) -> None:
    """A path the gateway serves itself (/usage, /keys, /account...) asked
    with a method it does not take: 405 with Allow, as the services answer,
    not the catch-all's 404."""
    try:
        own_routes.bind("").match(path, method=method)
    except MethodNotAllowed:
        raise
    except HTTPException:
        return


def _takes(app: Flask, method: str, path: str) -> bool:
    """Whether the document gives `path` this method; yes while it does not
    know the path (a service not asked yet)."""
    methods = openapi.methods_at(app, path)
    return methods is None or method in methods


def _plain_path(path: str) -> bool:
    """No `.`, `..` or empty segment: the route is matched on the path as
    given, but the HTTP client removes dot segments before it sends, so
    /api/v1/lists/%2e%2e/%2e%2e/%2e%2e/metrics reached a service's unsigned
    /metrics; and an id of "/" (%2F) named no resource of the service's.
    (Flask hands over `path` decoded, so %2e and %2f are covered.)"""
    return not any(segment in ("", ".", "..") for segment in path.split("/")[1:])
