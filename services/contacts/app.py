from flask import Flask

from services.contacts import api, files_api
from services.contacts.settings import SETTINGS
from services.contacts.store import ensure_contacts_indexes
from shared.http.service import make_app

SERVICE = "contacts"


def create_app(environ=None) -> Flask:
    app = make_app(SERVICE, "Sandesh contacts", [api.blp, files_api.blp], settings=SETTINGS,
                   environ=environ, on_start=lambda runtime: ensure_contacts_indexes(runtime.db))
    app.request_class = files_api.UploadRequest   # uploads stream into the import directory
    return app
