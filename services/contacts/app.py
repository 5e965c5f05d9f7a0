from flask import Flask

from services.contacts import api
from shared.http.service import make_app

SERVICE = "contacts"


def create_app(environ=None) -> Flask:
    return make_app(SERVICE, "Sandesh contacts", [api.blp], environ=environ)
