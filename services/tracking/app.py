"""The tracking service's app: public hot path in front of Flask, public
views (unsubscribe, bounces) and the signed stats API."""
from __future__ import annotations

import threading

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from services.tracking import api, public, usecases
from services.tracking.hits import HitPublisher
from services.tracking.settings import SETTINGS
from services.tracking.store import INDEXES, TrackingStore
from shared import mongo
from shared.kafka.factory import event_producer, hot_event_producer
from shared.http.service import make_app

SERVICE = "tracking"


def create_app(environ=None) -> Flask:
    app = make_app(SERVICE, "Sandesh tracking", [api.blp], settings=SETTINGS, environ=environ,
                   on_start=lambda rt: mongo.ensure_indexes(rt.db, INDEXES))
    runtime = app.extensions["runtime"]
    config = runtime.config
    keyring = config.tracking_keys
    sync = _SyncProducer(config)
    deps = public.Deps(config, runtime, keyring, sync)
    hits = HitPublisher(_HitsProducer(config), limit=config.hit_queue_limit,
                        flush_seconds=config.hit_flush_seconds,
                        relay=lambda producer: usecases.relay_parked(
                            deps.store(), producer, deps.of_erased_contact),
                        withheld=deps.of_erased_contact)
    app.extensions["tracking"] = deps
    app.extensions["tracking_hits"] = hits
    app.register_blueprint(public.public_blp)
    links = public.LinkTable(lambda: TrackingStore(runtime.db))
    app.wsgi_app = public.HotPath(app.wsgi_app, keyring, hits, links,
                                 config.tracking_hits_topic)
    if config.trusted_proxy_hops:
        # Outside the hot path, which reads REMOTE_ADDR: behind the ingress
        # the peer is the controller, so Apple's proxy went unrecognised and
        # every ip_prefix was the cluster's network.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.trusted_proxy_hops)
    return app


class _HitsProducer:
    """The background publisher's own producer, on librdkafka: kafka-python
    spent ~85 us of CPU per event under the web process's GIL, which the
    pixel's requests compete for; librdkafka sends from its own C threads
    (~5 us per event in all). Made lazily: librdkafka's threads do not
    survive gunicorn's fork."""

    def __init__(self, config):
        self._config = config
        self._producer = None

    def __call__(self):
        if self._producer is None:
            self._producer = hot_event_producer(self._config, SERVICE + "-hits",
                                                **{"linger.ms": 100})
        return self._producer


class _SyncProducer:
    """A producer of its own for what must be out before we answer
    (unsubscribes, bounce reports), with short timeouts: if Kafka does not
    take it within seconds the event is parked in MongoDB instead. One
    publish-and-flush at a time, so each caller sees its own event's fate."""

    def __init__(self, config):
        self._config = config
        self._producer = None
        self._lock = threading.Lock()

    def __call__(self) -> "_SyncProducer":
        return self

    def publish_now(self, topic, event, key) -> None:
        with self._lock:
            if self._producer is None:
                self._producer = event_producer(self._config, SERVICE + "-sync",
                                                max_block_ms=3000, request_timeout_ms=3000,
                                                delivery_timeout_ms=5000, linger_ms=0)
            self._producer.publish_now(topic, event, key)
