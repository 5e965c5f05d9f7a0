from flask import Flask

from services.tracking import api
from shared.http.service import make_app

SERVICE = "tracking"


def create_app(environ=None) -> Flask:
    return make_app(SERVICE, "Sandesh tracking", [api.blp], environ=environ)
