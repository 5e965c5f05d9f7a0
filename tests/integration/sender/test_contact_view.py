"""A re-consent the sender's contact-state loop has not applied yet does not
cost the contact its message (services/sender/contact_view.py), on the real
Kafka, FerretDB, sink and sender process.

The lag is made certain, not hoped for: the sender runs without its state
loops (SANDESH_SENDER_STATE_CONSUMERS=false) and the test runs the very same
loops (worker.state_loops) in its own process, stopping them while the
re-consent is published and the job is queued, as a loop under load would
fall behind."""
from __future__ import annotations

import threading
import time

import pytest
from kafka.partitioner.default import murmur2

from services.sender import worker
from services.sender.settings import SETTINGS
from shared import mongo, topics
from shared.config import load_common
from tests.integration.sender.harness import Senders, by_recipient, hexid, recipients


class StateLoops:
    """The sender's campaigns and contact-state loops, run by the test."""

    def __init__(self, senders: Senders):
        self.config = load_common(SETTINGS, senders.env)
        self.db = mongo.database(self.config.mongo_uri, senders.db_name)
        self.running: list[tuple] = []

    def start(self) -> None:
        for loop in worker.state_loops(self.config, self.db):
            thread = threading.Thread(target=loop.run, daemon=True)
            thread.start()
            self.running.append((loop, thread))

    def stop(self) -> None:
        for loop, thread in self.running:
            loop.stop()
        for loop, thread in self.running:
            thread.join(30)  # the loop commits what it applied as it stops
        self.running = []


@pytest.fixture
def lagging(stack_env, tmp_path, sink, unique):
    # A view that waited out its patience would miss every wait below.
    senders = Senders(stack_env, tmp_path, sink, unique,
                      SANDESH_SENDER_STATE_CONSUMERS="false",
                      SANDESH_SENDER_CONTACT_VIEW_PATIENCE_SECONDS=120)
    loops = StateLoops(senders)
    yield senders, loops
    loops.stop()
    senders.dispose()


def ids_on_two_partitions() -> list[str]:
    """Two job ids (send.jobs keys) on different partitions of the test's
    six, as the producer's partitioner places them: a job held in one
    partition holds the jobs behind it in that partition."""
    first = hexid()
    while True:
        second = hexid()
        if partition(second) != partition(first):
            return [first, second]


def partition(key: str) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % 6


def launch_then_fall_behind(senders: Senders, loops: StateLoops, account: str, campaign: str,
                            applied=lambda: True) -> None:
    """The launch and what was published before it applied by the state
    loops, which then stop: what comes next, they have not seen."""
    loops.start()
    senders.launch(account, campaign)
    senders.wait(lambda: senders.campaign_status(campaign) and applied(), 60,
                 "the launch and the states before it applied")
    loops.stop()


def delivery_outcomes(senders: Senders, job_ids: list[str]) -> dict[str, str]:
    return {e.data["job_id"]: e.type for e in senders.events(idle=1)
            if e.data.get("job_id") in job_ids and e.type != "delivery.attempted"}


def test_a_job_blocked_by_a_lift_the_state_loop_has_not_applied_waits_for_it_and_is_sent(
        lagging, sink, unique):
    senders, loops = lagging
    account, campaign, list_id = hexid(), hexid(), hexid()
    people = recipients(2, unique)
    (returning, returning_email, _), (_, control_email, _) = people

    senders.publish(topics.CONTACTS_EVENTS, "contact.unsubscribed", account, returning,
                    {"contact_id": returning, "list_id": list_id, "via": "link"})
    launch_then_fall_behind(senders, loops, account, campaign, lambda: (
        senders.recorded("contacts", returning) or {}).get("lists") == [list_id])

    # The re-consent, then the campaign's jobs: the loop has not seen it.
    senders.publish(topics.CONTACTS_EVENTS, "contact.subscribed", account, returning,
                    {"contact_id": returning, "list_id": list_id, "via": "form"})
    job_ids = senders.jobs(account, campaign, people, list_id=list_id,
                           job_ids=ids_on_two_partitions())
    senders.start()
    senders.wait(lambda: sink.count() >= 1, 60, "the control's message")
    time.sleep(3)
    assert list(by_recipient(sink)) == [control_email]
    assert delivery_outcomes(senders, job_ids) == {job_ids[1]: "delivery.sent"}  # no skip

    loops.start()
    senders.wait(lambda: sink.count() >= 2, 60, "the returning contact's message")
    received = by_recipient(sink)
    assert sorted(received) == sorted([returning_email, control_email])
    assert all(len(copies) == 1 for copies in received.values())
    assert delivery_outcomes(senders, job_ids) == {job_id: "delivery.sent" for job_id in job_ids}


def test_a_block_still_in_force_once_the_loop_caught_up_skips_the_job(lagging, sink, unique):
    senders, loops = lagging
    account, campaign, list_id = hexid(), hexid(), hexid()
    people = recipients(2, unique)
    (leaving, _, _), (_, control_email, _) = people

    launch_then_fall_behind(senders, loops, account, campaign)

    senders.publish(topics.CONTACTS_EVENTS, "contact.subscribed", account, leaving,
                    {"contact_id": leaving, "list_id": list_id, "via": "form"})
    senders.publish(topics.CONTACTS_EVENTS, "contact.unsubscribed", account, leaving,
                    {"contact_id": leaving, "list_id": list_id, "via": "link"})
    loops.start()
    senders.wait(lambda: (senders.recorded("contacts", leaving) or {}).get("lists") == [list_id],
                 60, "the unsubscribe applied")
    job_ids = senders.jobs(account, campaign, people, list_id=list_id)
    senders.start()
    outcomes = senders.wait(  # within the patience: the loop had caught up
        lambda: (lambda got: got if len(got) == 2 else None)(delivery_outcomes(senders, job_ids)),
        60, "both outcomes")
    assert outcomes == {job_ids[0]: "delivery.skipped", job_ids[1]: "delivery.sent"}
    assert list(by_recipient(sink)) == [control_email]


def test_the_group_progress_is_read_from_the_broker(kafka_bootstrap, unique):
    """KafkaGroupProgress on the real Kafka: end offsets of the partitions
    with something in them, and what the group committed, whoever did."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from services.sender.contact_view import KafkaGroupProgress, reached
    from shared.kafka.admin import delete_topics, ensure_topics
    from shared.topics import TopicSpec

    topic, group = f"test.{unique}.contacts.events", f"test-{unique}-contacts"
    ensure_topics(kafka_bootstrap, {topic: TopicSpec(3, 3_600_000)})
    try:
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for n in range(2):
            producer.produce(topic, value=b"x", partition=1)
        producer.flush(10)
        progress = KafkaGroupProgress(kafka_bootstrap, group,
                                      [topic, f"test.{unique}.missing"], "test")
        mark = progress.ends()
        assert mark == {(topic, 1): 2}
        assert progress.applied() == {} and not reached(mark, progress.applied())

        member = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group,
                           "enable.auto.commit": False})
        member.commit(offsets=[TopicPartition(topic, 1, 2)], asynchronous=False)
        member.close()
        assert progress.applied() == {(topic, 1): 2} and reached(mark, progress.applied())
    finally:
        delete_topics(kafka_bootstrap, [topic])
