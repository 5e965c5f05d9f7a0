"""Fixtures of the sender's integration tests: an SMTP sink of the test's
own and sender processes on the test's own topics and database."""
from __future__ import annotations

import pytest

from tests.integration.sender.harness import Senders, Sink, dump_logs


@pytest.fixture
def sink(tmp_path):
    sink = Sink(tmp_path)
    yield sink
    sink.stop()


@pytest.fixture
def senders(stack_env, tmp_path, sink, unique):
    group = Senders(stack_env, tmp_path, sink, unique)
    yield group
    group.dispose()
    print(dump_logs(tmp_path))
