"""Freezing the local stack's Kafka in a test: SIGSTOP keeps its connections
open while nothing answers, as while a partition has no leader."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess


@contextlib.contextmanager
def kafka_frozen_on_demand():
    """Yields `freeze()`: SIGSTOP to the stack's Kafka; it is thawed on the
    way out whatever happens."""
    from devstack.supervisor import supervisorctl
    kafka_pid = int(subprocess.run(supervisorctl("pid", "kafka"), check=True,
                                   capture_output=True, text=True).stdout.strip())
    try:
        yield lambda: os.kill(kafka_pid, signal.SIGSTOP)
    finally:
        os.kill(kafka_pid, signal.SIGCONT)
