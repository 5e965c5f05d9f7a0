from flask import Flask

from services.campaigns import api, store
from shared.http.service import make_app

SERVICE = "campaigns"


def create_app(environ=None) -> Flask:
    return make_app(SERVICE, "Sandesh campaigns", [api.blp], environ=environ,
                    on_start=lambda runtime: store.ensure_indexes(runtime.db))
