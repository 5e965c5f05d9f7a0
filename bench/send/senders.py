"""The running stack's sender processes, for a benchmark that compares one
sender with two in the same run (bench.send.campaign --senders 1,2).

The stack started with SANDESH_SENDERS=N has the programs sender:sender-0 ..
sender:sender-<N-1>. `use(n)` restarts the first n and stops the rest, waits
for their /readyz (devstack.wait), then until the consumer group has exactly
n members, each holding partitions of send.jobs. Only then can a campaign
start without a rebalance in the middle of it.
"""
from __future__ import annotations

import subprocess
import time

from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from devstack import supervisor, wait


class Senders:
    def __init__(self, env: dict[str, str]):
        self.env = env
        self.configured = int(env.get("SANDESH_SENDERS", "1"))
        self.group = env.get("SANDESH_SENDER_GROUP", "sender")
        self.admin = AdminClient({"bootstrap.servers": env["SANDESH_KAFKA_BOOTSTRAP"]})

    def use(self, n: int, timeout: float = 120) -> None:
        if not 1 <= n <= self.configured:
            raise SystemExit(f"this stack runs {self.configured} sender(s); for {n}, start it "
                             f"with `make stop && SANDESH_SENDERS={n} make run`")
        # All stopped first, so each pass starts fresh senders: their peak
        # memory (VmHWM) is then this pass's, and no pass inherits a warm one.
        names = [f"sender:sender-{i}" for i in range(self.configured)]
        subprocess.run(supervisor.supervisorctl("stop", *names), check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(supervisor.supervisorctl("start", *names[:n]), check=True,
                       stdout=subprocess.DEVNULL)
        wait.wait_all(wait.service_checks(self.env, only="sender")[:n])  # sender-0 first
        deadline = time.monotonic() + timeout
        while not self._settled(n):
            if time.monotonic() > deadline:
                raise SystemExit(f"the {n} sender(s) did not settle into the consumer group "
                                 f"{self.group!r} within {timeout:.0f} s")
            time.sleep(0.5)

    def _settled(self, n: int) -> bool:
        """The group is stable with n members, and each holds partitions."""
        try:
            group = self.admin.describe_consumer_groups([self.group])[self.group].result(10)
        except Exception:  # the coordinator moving, or the group not created yet
            return False
        return (group.state == ConsumerGroupState.STABLE and len(group.members) == n
                and all(m.assignment and m.assignment.topic_partitions for m in group.members))

