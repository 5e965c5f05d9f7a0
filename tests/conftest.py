"""Fixtures shared by every tier.

Integration and end-to-end tests run against the real local stack: its
addresses and secrets come from run/stack.env (written by `make run`);
SANDESH_* variables in the environment override them. Every test isolates
itself (a unique topic, consumer group, database or account), so the suite
can run against a stack that is already up.
"""
from __future__ import annotations

import os
import uuid

import pytest


def _stack_env() -> dict[str, str]:
    env: dict[str, str] = {}
    try:
        from devstack.env import StackEnvMissing, load_stack_env
        try:
            env.update(load_stack_env())
        except StackEnvMissing:
            pass
    except ImportError:
        pass
    env.update({k: v for k, v in os.environ.items() if k.startswith("SANDESH_")})
    return env


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    env = _stack_env()
    if "SANDESH_KAFKA_BOOTSTRAP" not in env or "SANDESH_MONGO_URI" not in env:
        pytest.fail("no local stack: run `make test` (it starts the stack) or `make run` first")
    return env


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_env) -> str:
    return stack_env["SANDESH_KAFKA_BOOTSTRAP"]


@pytest.fixture(scope="session")
def mongo_uri(stack_env) -> str:
    return stack_env["SANDESH_MONGO_URI"]


@pytest.fixture
def mongo_db(mongo_uri, unique):
    from shared import mongo
    db = mongo.database(mongo_uri, f"test_{unique}")
    yield db
    mongo.client(mongo_uri).drop_database(db.name)


@pytest.fixture
def make_topic(kafka_bootstrap, unique):
    """Create a fresh topic for this test: make_topic('in', partitions=3)."""
    from shared.kafka.admin import delete_topics, ensure_topics
    from shared.topics import TopicSpec

    made = []

    def create(suffix: str = "t", partitions: int = 3) -> str:
        name = f"test.{unique}.{suffix}"
        ensure_topics(kafka_bootstrap, {name: TopicSpec(partitions, 3_600_000)})
        made.append(name)
        return name
    yield create
    delete_topics(kafka_bootstrap, made)
