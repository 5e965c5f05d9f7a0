"""Freezing the local stack's Kafka in a test: SIGSTOP keeps its connections
open while nothing answers, as while a partition has no leader."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

THAW_SECONDS = 60.0


@contextlib.contextmanager
def kafka_frozen_on_demand():
    """Yields `freeze()`: SIGSTOP to the stack's Kafka; it is thawed on the
    way out whatever happens, and the block ends once the broker leads its
    partitions again. Thawed after more than its controller's session, the
    single KRaft node is fenced a moment, every partition without a leader:
    a reader made then found no broker (MetadataEmptyBrokerList), which
    failed a CI run's wait for the events the test was about."""
    from devstack.supervisor import supervisorctl
    kafka_pid = int(subprocess.run(supervisorctl("pid", "kafka"), check=True,
                                   capture_output=True, text=True).stdout.strip())
    try:
        yield lambda: os.kill(kafka_pid, signal.SIGSTOP)
    finally:
        os.kill(kafka_pid, signal.SIGCONT)
        _wait_until_kafka_leads()


def _wait_until_kafka_leads(timeout: float = THAW_SECONDS) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient
    from tests.conftest import _stack_env
    admin = AdminClient({"bootstrap.servers": _stack_env()["SANDESH_KAFKA_BOOTSTRAP"]})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            metadata = admin.list_topics(timeout=5)
            if metadata.brokers and all(partition.leader >= 0
                                        for topic in metadata.topics.values()
                                        for partition in topic.partitions.values()):
                return
        except KafkaException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"Kafka led no partition {timeout:.0f} s after it was thawed")
