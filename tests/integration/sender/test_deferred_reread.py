"""A job deferred in a batch whose partition is read again (a job before it
was released at the batch deadline) is not tried again at once: its retry
is on send.retry already, and a second try would ignore the backoff and put
a second copy of the retry there."""
from __future__ import annotations

import uuid

import pytest
from kafka.partitioner.default import murmur2

from shared import topics
from tests.integration.sender.harness import DomainRelay, Senders, hexid

pytestmark = pytest.mark.timeout(200)


@pytest.fixture
def relay():
    relay = DomainRelay(slow_seconds=8)  # past the batch deadline (half the harness's 10 s lease)
    yield relay
    relay.stop()


def ids_in_one_partition(count: int, partitions: int = 6) -> list[str]:
    """Job ids that the producer's partitioner (murmur2 of the key) puts
    in one partition, so they are read in the order they are published."""
    ids: list[str] = []
    while len(ids) < count:
        job_id = uuid.uuid4().hex
        if (murmur2(job_id.encode()) & 0x7FFFFFFF) % partitions == 0:
            ids.append(job_id)
    return ids


def test_a_deferred_job_read_again_behind_a_released_one_is_not_tried_again_early(
        stack_env, tmp_path, sink, unique, relay):
    senders = Senders(stack_env, tmp_path, sink, unique, SANDESH_SMTP_PORT=relay.port,
                      SANDESH_SMTP_CONNECTIONS=2, SANDESH_SEND_RETRY_BASE_SECONDS=600)
    try:
        senders.start()
        account, campaign = hexid(), hexid()
        senders.launch(account, campaign, limits={"per_domain_concurrency": 1})
        # slow-1 holds slow.test's one connection past the deadline, so
        # slow-2 is released unsent; busy-1, after them, is deferred meanwhile.
        addresses = ["slow-1@slow.test", "slow-2@slow.test", "busy-1@busy.test"]
        job_ids = ids_in_one_partition(len(addresses))
        for job_id, address in zip(job_ids, addresses):
            senders.publish(topics.SEND_JOBS, "send.job", account, job_id, {
                "job_id": job_id, "campaign_id": campaign, "contact_id": hexid(),
                "list_id": None, "attempt": 0,
                "recipient": {"email": address, "name": "N", "fields": {}}})
        # slow-2 goes once its partition is read again, with busy-1 behind it
        senders.wait(lambda: relay.accepted["slow-2@slow.test"] == 1, 120,
                     "the released job to be sent when its partition is read again")
        assert relay.accepted["slow-1@slow.test"] == 1
        assert relay.rcpts["busy-1@busy.test"] == 1   # tried once, not again on the re-read
        retries = [e for e in senders.events(topics.SEND_RETRY) if e.data["job_id"] == job_ids[2]]
        assert [e.data["attempt"] for e in retries] == [1]
        deferrals = [e for e in senders.events() if e.type == "delivery.deferred"]
        assert [e.data["job_id"] for e in deferrals] == [job_ids[2]]
    finally:
        senders.dispose()
