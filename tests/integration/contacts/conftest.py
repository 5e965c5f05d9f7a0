"""The contacts app in-process against the real FerretDB; its producer on an
in-memory broker (tests that prove events use the real Kafka say so)."""
from __future__ import annotations

import json

import pytest

from shared.http.internal_auth import Identity
from shared.kafka.memory import InMemoryBroker
from shared.kafka.producer import EventProducer
from tests.signed import signed_open

SECRET = "internal-secret-for-contacts-tests"
SALT = "salt-for-contacts-tests"


class Client:
    def __init__(self, flask_client, account_id: str):
        self.flask = flask_client
        self.account_id = account_id

    def call(self, method: str, path: str, body=None, account_id: str | None = None, **kw):
        identity = Identity(account_id or self.account_id, "key-test")
        return signed_open(self.flask, SECRET, identity, method, path, json=body, **kw)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.call("PUT", path, body, **kw)

    def patch(self, path, body=None, **kw):
        return self.call("PATCH", path, body, **kw)

    def delete(self, path, body=None, **kw):
        return self.call("DELETE", path, body, **kw)


@pytest.fixture
def broker():
    return InMemoryBroker()


@pytest.fixture
def settings(mongo_uri, kafka_bootstrap, unique, tmp_path):
    return {"SANDESH_MONGO_URI": mongo_uri, "SANDESH_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "SANDESH_INTERNAL_SECRET": SECRET, "SANDESH_MONGO_DB_PREFIX": f"test_{unique}_",
            "SANDESH_PII_SALT": SALT, "SANDESH_IMPORT_DIR": str(tmp_path / "imports"),
            "SANDESH_MAX_UPLOAD_BYTES": "200000"}


@pytest.fixture
def app(settings, mongo_uri, broker):
    from services.contacts.app import create_app
    from shared import mongo
    app = create_app(settings)
    app.extensions["runtime"]._producer = EventProducer(broker.sink())
    yield app
    mongo.client(mongo_uri).drop_database(settings["SANDESH_MONGO_DB_PREFIX"] + "contacts")


@pytest.fixture
def client(app, unique):
    return Client(app.test_client(), f"acct{unique}")


@pytest.fixture
def other(app, unique):
    return Client(app.test_client(), f"other{unique}")


def published(broker, topic="contacts.events") -> list[dict]:
    """Every envelope the app published on `topic`, decoded."""
    return [json.loads(m.value) for m in broker.messages(topic)]


@pytest.fixture
def client_factory(settings, mongo_uri, unique):
    """Clients of an app whose producer is the real Kafka one."""
    from services.contacts.app import create_app
    from shared import mongo
    app = create_app(settings)

    def make(account: str | None = None) -> Client:
        return Client(app.test_client(), account or f"acct{unique}")
    yield make
    mongo.client(mongo_uri).drop_database(settings["SANDESH_MONGO_DB_PREFIX"] + "contacts")
