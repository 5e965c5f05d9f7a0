"""bench/send/senders.py: when the campaign benchmark may start after it
changed how many senders run."""
from types import SimpleNamespace

import pytest
from confluent_kafka import ConsumerGroupState

from bench.send.cpu import peak_rss_mb
from bench.send.senders import Senders

ENV = {"SANDESH_SENDERS": "2", "SANDESH_KAFKA_BOOTSTRAP": "127.0.0.1:1"}


def member(*partitions):
    return SimpleNamespace(assignment=SimpleNamespace(topic_partitions=list(partitions)))


class Admin:
    """Answers describe_consumer_groups with a fixed description."""

    def __init__(self, description):
        self.description = description

    def describe_consumer_groups(self, groups):
        return {groups[0]: SimpleNamespace(result=lambda timeout: self.description)}


def senders_seeing(state, members):
    senders = Senders(ENV)
    senders.admin = Admin(SimpleNamespace(state=state, members=members))
    return senders


def test_the_group_is_settled_when_stable_with_that_many_members_each_holding_partitions():
    assert senders_seeing(ConsumerGroupState.STABLE, [member("p0"), member("p1")])._settled(2)


@pytest.mark.parametrize("state, members", [
    (ConsumerGroupState.PREPARING_REBALANCING, [member("p0"), member("p1")]),
    (ConsumerGroupState.STABLE, [member("p0")]),                  # the second has not joined
    (ConsumerGroupState.STABLE, [member("p0", "p1"), member()]),  # one holds nothing yet
])
def test_a_rebalancing_or_partial_group_is_not_settled(state, members):
    assert not senders_seeing(state, members)._settled(2)


def test_asking_for_more_senders_than_the_stack_runs_says_how_to_start_them():
    with pytest.raises(SystemExit, match="SANDESH_SENDERS=3"):
        Senders(ENV).use(3)


def test_peak_rss_is_read_from_each_process_and_a_gone_one_is_left_out():
    import os
    [mine] = peak_rss_mb([os.getpid(), 2 ** 22 + 1])
    assert 5 < mine < 10_000
