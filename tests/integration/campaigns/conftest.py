"""The campaigns app in-process against the real FerretDB, its producer on
an in-memory broker so a test reads exactly what the service published."""
from __future__ import annotations

import json

import pytest

from shared.http.internal_auth import Identity
from shared.kafka.memory import InMemoryBroker
from shared.kafka.producer import EventProducer
from tests.signed import signed_open

SECRET = "internal-secret-for-campaigns-tests"


class Client:
    def __init__(self, flask_client, account_id: str):
        self.flask = flask_client
        self.account_id = account_id

    def call(self, method: str, path: str, body=None, account_id: str | None = None,
             principal: str = "key-test"):
        identity = Identity(account_id or self.account_id, principal)
        return signed_open(self.flask, SECRET, identity, method, path, json=body)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body, **kw)

    def patch(self, path, body=None, **kw):
        return self.call("PATCH", path, body, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)


@pytest.fixture
def broker():
    return InMemoryBroker()


@pytest.fixture
def app(mongo_uri, kafka_bootstrap, unique, broker):
    from services.campaigns.app import create_app
    from shared import mongo
    prefix = f"test_{unique}_"
    app = create_app({"SANDESH_MONGO_URI": mongo_uri, "SANDESH_KAFKA_BOOTSTRAP": kafka_bootstrap,
                      "SANDESH_INTERNAL_SECRET": SECRET, "SANDESH_MONGO_DB_PREFIX": prefix})
    runtime = app.extensions["runtime"]
    runtime._producer = EventProducer(broker.sink())
    yield app
    mongo.client(mongo_uri).drop_database(prefix + "campaigns")


@pytest.fixture
def client(app, unique):
    return Client(app.test_client(), f"acct-{unique}")


@pytest.fixture
def ports(app):
    from services.campaigns.handlers import ports_for
    return ports_for(app.extensions["runtime"])


def published(broker, topic):
    return [json.loads(record.value) for record in broker.messages(topic)]
