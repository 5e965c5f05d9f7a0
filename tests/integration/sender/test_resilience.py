"""Several senders, SIGTERM and kill -9, against the real stack."""
from __future__ import annotations

import collections
import signal
import time

import pytest

from tests.integration.sender.harness import Senders, Sink, dump_logs, hexid
from tests.integration.sender.test_send_path import by_recipient, recipients

pytestmark = pytest.mark.timeout(400)


@pytest.fixture
def sink(tmp_path):
    sink = Sink(tmp_path)
    yield sink
    sink.stop()


@pytest.fixture
def make_senders(stack_env, tmp_path, sink, unique, mongo_uri):
    made = []

    def make(**overrides):
        group = Senders(stack_env, tmp_path, sink, unique, **overrides)
        made.append(group)
        return group
    yield make
    for group in made:
        group.terminate_all()
        from shared import mongo
        mongo.client(mongo_uri).drop_database(group.db_name)
    print(dump_logs(tmp_path))


def owners(senders: Senders, mongo_uri: str) -> collections.Counter:
    from shared import mongo
    db = mongo.database(mongo_uri, senders.db_name)
    return collections.Counter(d["owner"] for d in db["deliveries"].find({"state": "sent"}))


def test_two_senders_share_the_work_and_sigterm_drains_quickly(make_senders, sink, unique,
                                                               mongo_uri):
    senders = make_senders(SANDESH_SEND_BATCH=50)
    senders.start()
    senders.start()
    account, campaign = hexid(), hexid()
    senders.launch(account, campaign)
    time.sleep(8)  # both in the group before the work arrives
    people = recipients(600, unique)
    senders.jobs(account, campaign, people)
    senders.wait(lambda: sink.count() >= len(people), 180, "every message")
    received = by_recipient(sink)
    assert len(received) == len(people) and all(len(m) == 1 for m in received.values())
    shares = owners(senders, mongo_uri)
    assert len(shares) == 2 and min(shares.values()) > 0, shares
    assert all(took < 30 for took in senders.terminate_all())


def test_kill_9_mid_campaign_loses_nobody_and_duplicates_keep_their_message_id(
        make_senders, sink, unique, mongo_uri):
    senders = make_senders(SANDESH_SEND_CLAIM_LEASE_SECONDS=8)
    victim = senders.start()
    account, campaign = hexid(), hexid()
    senders.launch(account, campaign)
    people = recipients(1500, unique)
    senders.jobs(account, campaign, people)
    senders.wait(lambda: sink.count() >= 200, 120, "the campaign under way")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    victim.returncode = -9  # expected death, not a failure
    at_kill = sink.count()
    senders.start()
    senders.wait(lambda: len(by_recipient(sink)) >= len(people), 240, "every recipient")
    received = by_recipient(sink)
    assert len(received) == len(people)
    duplicates = {rcpt: msgs for rcpt, msgs in received.items() if len(msgs) > 1}
    for msgs in duplicates.values():
        assert len({m["Message-ID"] for m in msgs}) == 1
    # only what was in flight (sent, not yet recorded) when it died: one
    # record's worth (32), as many sent ahead of it (32), one per connection
    assert len(duplicates) <= 32 + 32 + 4, (len(duplicates), at_kill)
    print(f"kill -9 after {at_kill} messages: {len(duplicates)} duplicates")


def test_sigterm_mid_campaign_exits_in_time_and_a_second_sender_finishes_without_duplicates(
        make_senders, sink, unique, mongo_uri):
    """SIGTERM while a batch is being sent: the sender finishes the messages
    on the wire, gives back the rest of its claims, records, commits and
    exits; the next sender sends everyone else, nobody twice."""
    senders = make_senders(SANDESH_SEND_BATCH=500)
    first = senders.start()
    account, campaign = hexid(), hexid()
    senders.launch(account, campaign)
    people = recipients(1500, unique)
    job_ids = senders.jobs(account, campaign, people)
    senders.wait(lambda: sink.count() >= 100, 120, "the campaign under way")
    started = time.monotonic()
    first.send_signal(signal.SIGTERM)
    first.wait(60)
    took = time.monotonic() - started
    at_stop = sink.count()
    assert first.returncode == 0, dump_logs(senders.root)
    assert took < 30, took
    assert at_stop < len(people)  # it was stopped mid-campaign
    senders.start()
    senders.wait(lambda: len(by_recipient(sink)) >= len(people), 240, "every recipient")
    senders.terminate_all()  # drained: whatever it would have sent twice is in the sink now
    received = by_recipient(sink)
    assert len(received) == len(people)
    duplicates = {rcpt: msgs for rcpt, msgs in received.items() if len(msgs) > 1}
    assert not duplicates, {rcpt: [m["Message-ID"] for m in msgs]
                            for rcpt, msgs in duplicates.items()}
    sent = {e.data["job_id"] for e in senders.events() if e.type == "delivery.sent"}
    assert sent == set(job_ids)
    shares = owners(senders, mongo_uri)
    assert len(shares) == 2, shares  # both senders recorded part of the campaign
    print(f"SIGTERM after {at_stop} messages, exited in {took:.1f} s; shares {dict(shares)}")
