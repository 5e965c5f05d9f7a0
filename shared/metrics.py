"""Prometheus metrics that work under gunicorn's several workers.

With PROMETHEUS_MULTIPROC_DIR set (the web services under gunicorn) every
worker writes its samples there and /metrics aggregates them; without it (the
single-process workers) the default registry is used. Labels carry service,
topic, route and outcome: never anything about a person.
"""
from __future__ import annotations

import os

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram,
                               generate_latest, multiprocess)

MESSAGES = Counter("sandesh_messages_total", "Messages handled by consumer loops",
                   ["service", "topic", "outcome"])
DEAD_LETTERS = Counter("sandesh_dead_letters_total", "Messages sent to the dead-letter topic",
                       ["service", "topic"])
HANDLER_RETRIES = Counter("sandesh_handler_retries_total",
                          "Transient handler failures (the message is retried)",
                          ["service", "topic"])
HTTP_REQUESTS = Counter("sandesh_http_requests_total", "HTTP requests",
                        ["service", "method", "route", "status"])
# The method label takes these only: gunicorn accepts any 3-20 letter
# method, and each new one was a series for good (a file per process under
# the multiprocess directory), for anyone who cares to send them.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in HTTP_METHODS else "other"


HTTP_LATENCY = Histogram("sandesh_http_request_seconds", "HTTP request latency",
                         ["service", "route"],
                         buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
