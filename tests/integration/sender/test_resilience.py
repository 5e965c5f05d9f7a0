"""Several senders, SIGTERM, kill -9 and rebalances while the rate limit holds
partitions, against the real stack."""
from __future__ import annotations

import collections
import signal
import time

import pytest

from tests.integration.sender.harness import (DomainRelay, Senders, by_recipient, dump_logs, hexid,
                                              recipients)

pytestmark = pytest.mark.timeout(400)


@pytest.fixture
def make_senders(stack_env, tmp_path, sink, unique):
    made = []

    def make(**overrides):
        group = Senders(stack_env, tmp_path, sink, unique, **overrides)
        made.append(group)
        return group
    yield make
    for group in made:
        group.dispose()
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


def test_two_senders_split_a_rate_limited_campaign_from_its_first_seconds(
        make_senders, sink, unique, mongo_uri):
    """Each takes its share of every window (throttle.RateLimiter): asking
    for whole windows, one of two senders once sent all of a campaign's
    first 120 messages while the other only claimed and gave back."""
    senders = make_senders()
    senders.start()
    senders.start()
    account, campaign = hexid(), hexid()
    senders.launch(account, campaign, limits={"per_second": 40})
    time.sleep(8)  # both in the group before the work arrives
    people = recipients(400, unique)
    senders.jobs(account, campaign, people)
    senders.wait(lambda: sink.count() >= 120, 180, "three seconds' worth")
    early = owners(senders, mongo_uri)
    # 60/60 in most runs; 40/80 when the first jobs came after a window's
    # middle, which then went whole to the first to ask
    assert len(early) == 2 and min(early.values()) >= sum(early.values()) // 6, early
    senders.wait(lambda: len(by_recipient(sink)) >= len(people), 180, "every recipient")
    assert all(len(m) == 1 for m in by_recipient(sink).values())


@pytest.mark.parametrize("limit", [2, 1])
def test_two_senders_keep_a_campaigns_per_domain_concurrency_between_them(
        make_senders, unique, mongo_uri, limit):
    """Each sender took the whole cap: two senders held twice as many
    transactions open to one mailbox provider as the campaign allowed. Then
    each took its share, but at least one: a limit of 1 was still 2."""
    relay = DomainRelay(slow_seconds=0.3)
    try:
        senders = make_senders(SANDESH_SMTP_PORT=relay.port)
        senders.start()
        senders.start()
        account, campaign = hexid(), hexid()
        senders.launch(account, campaign, limits={"per_domain_concurrency": limit})
        time.sleep(8)  # both in the group before the work arrives
        people = [(hexid(), f"p{n}-{unique}@slow.test", "N") for n in range(60)]
        senders.jobs(account, campaign, people)
        senders.wait(lambda: sum(relay.accepted.values()) >= len(people), 120, "every message")
        assert sorted(relay.accepted.values()) == [1] * len(people)
        assert relay.most_in_data["slow.test"] == limit, relay.most_in_data
        shares = owners(senders, mongo_uri)
        assert len(shares) == 2 and min(shares.values()) > 0, shares
    finally:
        relay.stop()


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


def unread_jobs(senders: Senders) -> dict[int, int]:
    """send.jobs partition -> messages past the group's committed offset."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
    topic = senders.prefix + "send.jobs"
    admin = KafkaAdminClient(bootstrap_servers=senders.bootstrap, client_id=f"lag-{hexid()}")
    consumer = KafkaConsumer(bootstrap_servers=senders.bootstrap, client_id=f"lag-{hexid()}")
    group = senders.env["SANDESH_SENDER_GROUP"]
    try:
        committed = admin.list_group_offsets({group: None})[group]
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        ends = consumer.end_offsets(partitions)
    finally:
        admin.close()
        consumer.close()
    return {tp.partition: ends[tp] - max(0, committed[tp].offset if tp in committed else 0)
            for tp in partitions}


@pytest.mark.parametrize("rebalance", ["sigterm one of two", "a second joins"])
def test_a_rebalance_while_the_rate_limit_holds_partitions_leaves_none_behind(
        make_senders, sink, unique, mongo_uri, rebalance):
    """With a rate limit, partitions are paused by holds most of the time, so
    a rebalance catches some paused: the sender that keeps or gets them must
    read them again (it once stopped at 1,007 of 1,500 jobs for good)."""
    senders = make_senders(SANDESH_SEND_BATCH=500)
    first = senders.start()
    if rebalance == "sigterm one of two":
        senders.start()
    account, campaign = hexid(), hexid()
    senders.launch(account, campaign, limits={"per_second": 50})
    people = recipients(1500, unique)
    job_ids = senders.jobs(account, campaign, people)
    if rebalance == "sigterm one of two":
        senders.wait(lambda: len(owners(senders, mongo_uri)) == 2 and sink.count() >= 200, 180,
                     "both senders under way")
        first.send_signal(signal.SIGTERM)
        first.wait(60)
        assert first.returncode == 0, dump_logs(senders.root)
    else:
        senders.wait(lambda: sink.count() >= 200, 180, "the campaign under way")
        senders.start()
    at_rebalance = sink.count()
    assert at_rebalance < len(people)  # the rebalance came mid-campaign
    senders.wait(lambda: len(by_recipient(sink)) >= len(people), 300, "every recipient")
    senders.wait(lambda: not any(unread_jobs(senders).values()), 60, "every job committed")
    senders.terminate_all()
    received = by_recipient(sink)
    assert len(received) == len(people)
    assert all(len(msgs) == 1 for msgs in received.values()), \
        {rcpt: len(msgs) for rcpt, msgs in received.items() if len(msgs) > 1}
    sent = {e.data["job_id"] for e in senders.events() if e.type == "delivery.sent"}
    assert sent == set(job_ids)  # every job accounted for: the campaign completes
    assert len(owners(senders, mongo_uri)) == 2  # both took part: the rebalance was mid-campaign
    print(f"{rebalance}: rebalanced after {at_rebalance} messages")


def outage_mid_campaign(senders: Senders, sink, unique: str, cut, restore,
                        seconds: float = 8) -> tuple[int, int]:
    """A 1,000-recipient campaign under way, then `cut()` for `seconds`, then
    `restore()`: every recipient gets the message once and the senders keep
    running. Returns (messages before the cut, messages during it)."""
    senders.start()
    account, campaign = hexid(), hexid()
    senders.launch(account, campaign)
    people = recipients(1000, unique)
    senders.jobs(account, campaign, people)
    senders.wait(lambda: sink.count() >= 150, 120, "the campaign under way")
    cut()
    try:
        cut_at = sink.count()
        time.sleep(seconds)
        during = sink.count() - cut_at
    finally:
        restore()
    senders.wait(lambda: len(by_recipient(sink)) >= len(people), 240, "every recipient")
    received = by_recipient(sink)
    assert len(received) == len(people)
    assert sum(len(m) - 1 for m in received.values()) == 0  # no duplicate
    senders.assert_running()
    return cut_at, during


def test_a_database_outage_mid_campaign_delays_the_work_and_loses_nobody(
        make_senders, sink, unique, mongo_uri):
    """FerretDB unreachable for 8 s mid-campaign (every connection dropped,
    new ones refused): the sender waits and goes on. Everybody gets the
    message once: the outcomes of messages already sent are recorded when
    the database is back (it waits up to 10 s for it), not sent again."""
    from urllib.parse import urlsplit

    from tests.integration.cuttable_proxy import CuttableProxy
    address = urlsplit(mongo_uri)
    proxy = CuttableProxy(address.hostname, address.port or 27017)
    try:
        senders = make_senders(SANDESH_MONGO_URI=f"mongodb://127.0.0.1:{proxy.port}/",
                               SANDESH_SEND_CLAIM_LEASE_SECONDS=8)
        cut_at, during = outage_mid_campaign(senders, sink, unique, proxy.cut, proxy.restore)
    finally:
        proxy.close()
    print(f"outage after {cut_at} messages: {during} more arrived during it, no duplicate")


def test_a_broker_outage_mid_campaign_delays_the_work_and_loses_nobody(
        make_senders, sink, unique):
    """Kafka frozen for 8 s mid-campaign (SIGSTOP: connections stay open,
    nothing answers): the sender, whose jobs come in and whose delivery
    events go out on librdkafka, waits and goes on. Everybody gets the
    message once."""
    import os
    import subprocess

    from devstack.supervisor import supervisorctl
    kafka_pid = int(subprocess.run(supervisorctl("pid", "kafka"), check=True,
                                   capture_output=True, text=True).stdout.strip())
    frozen_at, during = outage_mid_campaign(
        make_senders(), sink, unique, cut=lambda: os.kill(kafka_pid, signal.SIGSTOP),
        restore=lambda: os.kill(kafka_pid, signal.SIGCONT))
    print(f"broker frozen after {frozen_at} messages: {during} more arrived meanwhile")
