"""The public endpoints: the only part of Sandesh the internet reaches.

Open (/t/o/<token>) and click (/t/c/<token>) are the hot path: served by a
small WSGI layer in front of Flask, from memory (token check, cached link
table), with the event queued for the background publisher (hits.py).
Unsubscribe (/u/<token>) and the bounce webhook (/t/bounces) are Flask views:
they are rare and must be durable, so they publish before answering.
"""
from __future__ import annotations

import base64
import hmac
import threading
import time
from functools import cached_property, partial
from typing import Callable

from flask import Blueprint, Response, current_app, jsonify, request

from services.tracking import pages, usecases
from services.tracking.hits import HitPublisher
from services.tracking.redirects import redirect_location
from services.tracking.store import TrackingStore
from shared import metrics, topics
from shared.erased_accounts import ErasedAccounts
from shared.erased_contacts import ErasedContacts
from shared.events import Event
from shared.kafka.producer import EventProducer
from shared.links import is_personal, literal_origin
from shared.tracking_tokens import Claims, InvalidToken, Keyring, verify

# A 1x1 transparent GIF (42 bytes).
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_CACHE = [("Cache-Control", "no-store, no-cache, must-revalidate, private, max-age=0"),
            ("Pragma", "no-cache"), ("Expires", "0")]
GIF_HEADERS = [("Content-Type", "image/gif"), ("Content-Length", str(len(GIF))), *NO_CACHE]
NOT_FOUND_BODY = pages.not_found_page().encode()
NOT_FOUND_HEADERS = [("Content-Type", "text/html; charset=utf-8"),
                     ("Content-Length", str(len(NOT_FOUND_BODY))),
                     *pages.SECURITY_HEADERS.items()]
COME_BACK_SECONDS = 3
COME_BACK_BODY = pages.come_back_page(COME_BACK_SECONDS).encode()
COME_BACK_HEADERS = [("Content-Type", "text/html; charset=utf-8"),
                     ("Content-Length", str(len(COME_BACK_BODY))),
                     ("Retry-After", str(COME_BACK_SECONDS)),
                     *pages.SECURITY_HEADERS.items()]
MAX_REPORT_BYTES = 10 * 1024 * 1024
SERVICE = "tracking"


class LinkTable:
    """campaign id -> (account id, original URLs), cached per process.
    Filled by the worker from campaign.launched (tracking's own database)."""

    MISS_RETRY_SECONDS = 2.0
    MAX_CAMPAIGNS = 10_000
    # How long after its sending a click may still beat its campaign's link
    # table (a tracking worker down that long is an outage someone sees).
    PENDING_SECONDS = 24 * 3600
    CLOCK_SKEW_SECONDS = 300

    def __init__(self, store: Callable[[], TrackingStore]):
        self._store = store
        self._known: dict[str, tuple[str, list[str]]] = {}
        self._missing: dict[str, float] = {}
        self._lock = threading.Lock()

    def url(self, account_id: str, campaign_id: str, index: int,
            personal_url: str | None = None) -> str | None:
        """Where link `index` of the campaign goes: its URL, or for a
        personal link (merge fields in its URL) the one its token carries,
        as a browser would request it. None when it can go nowhere."""
        entry = self._known.get(campaign_id) or self._load(campaign_id)
        if entry is None or entry[0] != account_id or not 0 <= index < len(entry[1]):
            return None
        url = entry[1][index]
        if is_personal(url):
            if not literal_origin(url):   # a host from merge data: anyone's, signed by us
                return None
            url = personal_url or ""
        # Only web links: a template's "javascript:" or "data:" link is never followed.
        return redirect_location(url)

    def may_still_come(self, account_id: str, campaign_id: str, sent_at: int | None,
                       now: float) -> bool:
        """Whether a genuine click that url() sent nowhere may find its link
        in a moment: the worker stores a campaign's link table when it reads
        campaign.launched, and a reader can click before that (the worker
        behind, or down). Not when tracking knows the campaign (the link
        itself is bad), the message is old, or the account was deleted."""
        if campaign_id in self._known or sent_at is None:
            return False
        if not -self.CLOCK_SKEW_SECONDS <= now - sent_at <= self.PENDING_SECONDS:
            return False
        return not self._erased_accounts.among([account_id])

    @cached_property
    def _erased_accounts(self) -> ErasedAccounts:
        # One for the process: its cache saves a read per click while a
        # worker outage makes every click of a new campaign come back.
        return ErasedAccounts(self._store().db)

    def _load(self, campaign_id: str) -> tuple[str, list[str]] | None:
        if time.monotonic() - self._missing.get(campaign_id, -1e9) < self.MISS_RETRY_SECONDS:
            return None
        doc = self._store().campaign(campaign_id)
        if not doc or not doc.get("links"):
            self._missing[campaign_id] = time.monotonic()
            return None
        entry = (doc.get("account_id", ""), list(doc["links"]))
        with self._lock:
            if len(self._known) >= self.MAX_CAMPAIGNS:
                self._known.clear()
            self._known[campaign_id] = entry
            self._missing.pop(campaign_id, None)
        return entry


class HotPath:
    """WSGI middleware answering /t/o/ and /t/c/ before Flask."""

    def __init__(self, app, keyring: Keyring, hits: HitPublisher, links: LinkTable,
                 topic: str = topics.TRACKING_EVENTS):
        self.app = app
        self.topic = topic
        self.keyring = keyring
        self.hits = hits
        self.links = links
        self._requests = {}

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/t/o/"):
            return self._open(environ, start_response, path[5:])
        if path.startswith("/t/c/"):
            return self._click(environ, start_response, path[5:])
        return self.app(environ, start_response)

    def _count(self, method: str, route: str, status: int) -> None:
        key = (metrics.method_label(method), route, status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = metrics.HTTP_REQUESTS.labels(SERVICE, *key)
        child.inc()

    def _claims(self, token: str, kind: str) -> Claims | None:
        try:
            claims = verify(self.keyring, token)
        except InvalidToken:
            return None
        return claims if claims.kind == kind else None

    def _record(self, claims: Claims, environ, method: str) -> None:
        # The publisher thread builds the event (see hits.py); the request
        # only takes what it needs from the environ and the time.
        build = partial(usecases.hit_event, claims, method, environ.get("HTTP_USER_AGENT", ""),
                        environ.get("REMOTE_ADDR", ""), time.time())
        self.hits.submit(self.topic, build, claims.context.campaign_id)

    def _open(self, environ, start_response, token: str):
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return self._not_allowed(start_response, "/t/o/<token>", method)
        claims = self._claims(token, "open")
        if claims is not None:
            self._record(claims, environ, method)
        # The pixel is always answered, even for a bad token (no broken image).
        self._count(method, "/t/o/<token>", 200)
        start_response("200 OK", list(GIF_HEADERS))
        return [b""] if method == "HEAD" else [GIF]

    def _click(self, environ, start_response, token: str):
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return self._not_allowed(start_response, "/t/c/<token>", method)
        claims = self._claims(token, "click")
        url = None
        if claims is not None:
            ctx = claims.context
            url = self.links.url(ctx.account_id, ctx.campaign_id, claims.link_index, claims.url)
        if url is None and claims is not None and self.links.may_still_come(
                ctx.account_id, ctx.campaign_id, ctx.sent_at, time.time()):
            # No hit recorded: the page asks again, and that request is the click.
            self._count(method, "/t/c/<token>", 503)
            start_response("503 Service Unavailable", list(COME_BACK_HEADERS))
            return [b""] if method == "HEAD" else [COME_BACK_BODY]
        if url is None:
            self._count(method, "/t/c/<token>", 404)
            start_response("404 Not Found", list(NOT_FOUND_HEADERS))
            return [b""] if method == "HEAD" else [NOT_FOUND_BODY]
        self._record(claims, environ, method)
        self._count(method, "/t/c/<token>", 302)
        start_response("302 Found", [("Location", url), ("Content-Length", "0"),
                                     ("Referrer-Policy", "no-referrer"), *NO_CACHE])
        return [b""]

    def _not_allowed(self, start_response, route: str, method: str):
        self._count(method, route, 405)
        start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"),
                                                  ("Content-Length", "0")])
        return [b""]


# ------------------------------------------------------------ Flask views

public_blp = Blueprint("tracking_public", __name__)


def _deps():
    return current_app.extensions["tracking"]


def _html(body: str, status: int = 200) -> Response:
    response = Response(body, status=status, content_type="text/html; charset=utf-8")
    response.headers.update(pages.SECURITY_HEADERS)
    return response


def _unsubscribe_claims(token: str) -> Claims | None:
    try:
        claims = verify(_deps().keyring, token)
    except InvalidToken:
        return None
    return claims if claims.kind == "unsubscribe" else None


@public_blp.route("/u/<token>", methods=["GET"])
def unsubscribe_page(token: str):
    claims = _unsubscribe_claims(token)
    if claims is None:
        return _html(pages.not_found_page(), 404)
    return _html(pages.unsubscribe_form(request.path, claims.list_id is not None))


@public_blp.route("/u/<token>", methods=["POST"])
def unsubscribe(token: str):
    """RFC 8058 one-click (body List-Unsubscribe=One-Click) or the page's form.
    No cookie, no CSRF token: the signed URL is the authority. Idempotent."""
    claims = _unsubscribe_claims(token)
    if claims is None:
        return _html(pages.not_found_page(), 404)
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    whole_account = claims.list_id is None or request.form.get("scope") == "all"
    deps = _deps()
    event = usecases.unsubscribe_event(claims, whole_account,
                                       "one-click" if one_click else "page")
    try:
        went = usecases.publish_unsubscribe(event, deps.sync_producer, deps.store(),
                                            deps.of_erased_contact)
        if went == "parked":
            current_app.extensions["tracking_hits"].ensure_running()  # its thread relays
    except Exception:
        return _html(pages.not_found_page().replace("Not found", "Try again later")
                     .replace("This link is not valid.", "Please try again in a minute."), 503)
    if one_click:
        return Response("Unsubscribed\n", status=200, content_type="text/plain; charset=utf-8",
                        headers={"Cache-Control": "no-store"})
    return _html(pages.unsubscribed_page(whole_account))


def _webhook_authorised(expected: str) -> bool:
    if not expected:
        return False
    given = request.headers.get("X-Sandesh-Webhook-Token", "")
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        given = auth[7:].strip()
    elif request.authorization and request.authorization.password:
        given = request.authorization.password
    return hmac.compare_digest(given.encode(), expected.encode())


@public_blp.route("/t/bounces", methods=["POST"])
def bounce_webhook():
    """A DSN (RFC 3464) or ARF (RFC 5965) message, raw, as the request body."""
    deps = _deps()
    if not _webhook_authorised(deps.config.bounce_webhook_token):
        return _json_error(401, "unauthenticated", "missing or wrong webhook token",
                           {"WWW-Authenticate": 'Bearer realm="sandesh-bounces"'})
    if (request.content_length or 0) > MAX_REPORT_BYTES:
        return _json_error(413, "too_large", f"reports are limited to {MAX_REPORT_BYTES} bytes")
    if request.mimetype == "application/json" or request.mimetype.endswith("+json"):
        # A relay's JSON notification is no report: it was read as a
        # message, found empty and answered 202 "ignored". (A form type is
        # let through: curl --data-binary sends a piped message as one.)
        return _json_error(415, "unsupported_media_type",
                           "send the report as the raw message (message/rfc822, "
                           "multipart/report or text/plain)")
    raw = request.get_data(cache=False)[:MAX_REPORT_BYTES + 1]
    if len(raw) > MAX_REPORT_BYTES:
        return _json_error(413, "too_large", f"reports are limited to {MAX_REPORT_BYTES} bytes")
    try:
        outcome = usecases.take_bounce_report(raw, deps.keyring, deps.store(),
                                              deps.sync_producer, deps.config.soft_bounce_limit,
                                              deps.erased_contacts)
    except usecases.BounceRejected as exc:
        headers = {"Retry-After": "60"} if exc.status == 503 else None
        return _json_error(exc.status, exc.code, exc.message, headers)
    body = {"result": outcome.result, "job_id": outcome.job_id, "event_id": outcome.event_id}
    if outcome.reason:
        body["reason"] = outcome.reason
    return jsonify(body), 202


def _json_error(status: int, code: str, message: str, headers=None):
    response = jsonify({"error": {"code": code, "message": message, "details": {}}})
    response.status_code = status
    response.headers.update(headers or {})
    return response


class Deps:
    """What the public views need, built once per app (lazily per process)."""

    def __init__(self, config, runtime, keyring: Keyring,
                 sync_producer: Callable[[], EventProducer]):
        self.config = config
        self.runtime = runtime
        self.keyring = keyring
        self.sync_producer = sync_producer

    def store(self) -> TrackingStore:
        return TrackingStore(self.runtime.db)

    @cached_property
    def erased_contacts(self) -> ErasedContacts:
        # Made on first use, in the serving process (after gunicorn's fork).
        return ErasedContacts(self.runtime.db, in_background=True)

    def of_erased_contact(self, event: Event) -> bool:
        return self.erased_contacts.erased(event.account_id, event.data.get("contact_id"))
