from flask import Flask

from services.privacy import api
from shared.http.service import make_app

SERVICE = "privacy"


def create_app(environ=None) -> Flask:
    return make_app(SERVICE, "Sandesh privacy", [api.blp], environ=environ)
