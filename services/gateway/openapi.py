"""The public contract: the gateway's own OpenAPI document merged with each
service's (each falls out of that service's marshmallow schemas)."""
from __future__ import annotations

import json
import time

from flask import Flask

from services.gateway.routes import DOCUMENTED

CACHE_SECONDS = 30
_cache: dict = {"at": 0.0, "doc": None}


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
    merged["paths"].update(doc.get("paths", {}))
    merged["tags"].extend(t for t in doc.get("tags", []) if t not in merged["tags"])


def merged(app: Flask) -> dict:
    if _cache["doc"] is not None and time.monotonic() - _cache["at"] < CACHE_SECONDS:
        return _cache["doc"]
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
        if service_doc is None:
            missing.append(service)
        else:
            _merge_into(doc, service_doc, service)
    doc["components"].setdefault("securitySchemes", {})["bearerAuth"] = {
        "type": "http", "scheme": "bearer"}
    if missing:
        doc["info"]["x-missing-services"] = missing  # do not cache an incomplete document
        return doc
    _cache.update(at=time.monotonic(), doc=doc)
    return doc
