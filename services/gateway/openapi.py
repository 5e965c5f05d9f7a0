"""The public contract: the gateway's own OpenAPI document merged with each
service's (each falls out of that service's marshmallow schemas)."""
from __future__ import annotations

import json
import re
import time
from functools import lru_cache

from flask import Flask

from services.gateway.routes import DOCUMENTED

CACHE_SECONDS = 30
# Without a key anyone may ask for the document: while a service is down or
# slow, each ask waited for it (the upstream read timeout, 30 s), holding a
# gateway thread. Its last good document stands in, and a document still
# missing a service is kept this long before the service is asked again.
INCOMPLETE_CACHE_SECONDS = 5


def _merge_into(merged: dict, doc: dict, service: str) -> None:
    schemas = merged["components"].setdefault("schemas", {})
    incoming = doc.get("components", {}).get("schemas", {})
    renames = {}
    for name, schema in incoming.items():
        if name in schemas and schemas[name] != schema:
            renames[name] = f"{service.capitalize()}{name}"
    text = json.dumps(doc)
    for old, new in renames.items():
        text = text.replace(f'"#/components/schemas/{old}"', f'"#/components/schemas/{new}"')
    doc = json.loads(text)
    for name, schema in doc.get("components", {}).get("schemas", {}).items():
        schemas[renames.get(name, name)] = schema
    for kind in ("responses", "parameters", "securitySchemes"):
        merged["components"].setdefault(kind, {}).update(doc.get("components", {}).get(kind, {}))
    for path, operations in doc.get("paths", {}).items():
        # the first to document an operation keeps it: the gateway, merged
        # first, over a service's internal one (campaigns' /usage is not
        # the gateway's /usage, which adds contacts' figures)
        for method, operation in operations.items():
            merged["paths"].setdefault(path, {}).setdefault(method, operation)
    merged["tags"].extend(t for t in doc.get("tags", []) if t not in merged["tags"])


def merged(app: Flask) -> dict:
    cache = app.extensions.setdefault("openapi_cache", {"at": 0.0, "doc": None,
                                                        "ttl": CACHE_SECONDS, "last_good": {}})
    last_good = cache["last_good"]
    if cache["doc"] is not None and time.monotonic() - cache["at"] < cache["ttl"]:
        return cache["doc"]
    own = app.extensions["flask-smorest"]["apis"][""]["ext_obj"].spec.to_dict()
    doc = {"openapi": own.get("openapi", "3.0.3"),
           "info": {"title": "Sandesh API", "version": "v1",
                    "description": "Every path takes Authorization: Bearer <API key>, except "
                                   "POST /accounts, which takes the operator token."},
           "paths": {}, "tags": [], "components": {},
           "security": [{"bearerAuth": []}]}
    _merge_into(doc, own, "gateway")
    missing = []
    upstreams = app.extensions["upstreams"]
    for service in DOCUMENTED:
        service_doc = upstreams.openapi(service)
        if service_doc is not None:
            last_good[service] = service_doc
        service_doc = last_good.get(service)
        if service_doc is None:
            missing.append(service)
        else:
            _merge_into(doc, service_doc, service)
    doc["components"].setdefault("securitySchemes", {})["bearerAuth"] = {
        "type": "http", "scheme": "bearer"}
    if missing:
        doc["info"]["x-missing-services"] = missing
    cache.update(at=time.monotonic(), doc=doc,
                 ttl=INCOMPLETE_CACHE_SECONDS if missing else CACHE_SECONDS)
    return doc


def methods_at(app: Flask, path: str) -> list[str] | None:
    """The methods the merged document gives `path` (see methods_in)."""
    return methods_in(merged(app), path)


def methods_in(doc: dict, path: str) -> list[str] | None:
    """The methods `doc` gives `path` (HEAD beside GET, as every service
    serves it, and OPTIONS), or None when no path of the document is this
    one. A path with fewer {parameters} is the one meant where two match
    (/suppressions/check, not /suppressions/{suppression_id}), as the
    services route them."""
    matches = [(template.count("{"), operations)
               for template, operations in doc["paths"].items()
               if _pattern(template).fullmatch(path)]
    if not matches:
        return None
    operations = min(matches, key=lambda match: match[0])[1]
    methods = [method.upper() for method in operations if method != "parameters"]
    return methods + (["HEAD"] if "GET" in methods else []) + ["OPTIONS"]


@lru_cache(maxsize=512)
def _pattern(template: str) -> re.Pattern:
    """/lists/{list_id} as a pattern: a {parameter} is one path segment."""
    parts = re.split(r"\{[^}/]+\}", template)
    return re.compile("[^/]+".join(map(re.escape, parts)))
