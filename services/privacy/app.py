from datetime import timedelta

from flask import Flask, request

from services.privacy import api, domain
from services.privacy import metrics as privacy_metrics
from services.privacy.settings import SETTINGS
from services.privacy.store import INDEXES, PrivacyStore, now
from shared.http.service import make_app, runtime
from shared.mongo import ensure_indexes

SERVICE = "privacy"


def refresh_gauges(store: PrivacyStore, silent_after: timedelta) -> None:
    """What the overdue alert watches, read from the database (the truth)
    rather than counted in one of several processes."""
    at = now()
    open_requests = store.open_requests()
    privacy_metrics.OVERDUE.set(sum(domain.is_overdue(r, at, silent_after) for r in open_requests))
    silent: dict[str, int] = {}
    for r in open_requests:
        for service in domain.silent_services(r, at, silent_after):
            silent[service] = silent.get(service, 0) + 1
    for service in set(silent) | set(runtime().config.privacy_responders):
        privacy_metrics.SILENT.labels(service).set(silent.get(service, 0))


def create_app(environ=None) -> Flask:
    app = make_app(SERVICE, "Sandesh privacy", [api.blp], settings=SETTINGS, environ=environ,
                   on_start=lambda rt: ensure_indexes(rt.db, INDEXES))

    @app.before_request
    def _gauges_before_scrape():
        if request.path == "/metrics":
            config = runtime().config
            refresh_gauges(PrivacyStore(runtime().db),
                           timedelta(hours=config.privacy_silent_after_hours))

    return app
