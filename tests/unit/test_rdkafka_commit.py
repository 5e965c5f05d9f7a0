"""RdKafkaSource.commit: librdkafka's synchronous commit, waited for at most
`commit_wait_seconds` (the integration test freezes the real Kafka under a
commit; these pin the outcomes with a stand-in consumer)."""
import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from shared.kafka.rdkafka_impl import CommitTimedOut, RdKafkaSource


class StandInConsumer:
    def __init__(self, commit):
        self._commit = commit
        self.committed = []

    def commit(self, offsets, asynchronous):
        assert asynchronous is False
        self._commit()
        self.committed.append({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def close(self):
        pass


def source_with(commit, wait=0.5) -> RdKafkaSource:
    source = RdKafkaSource(["t"], "g", "127.0.0.1:1", "test", commit_wait_seconds=wait)
    source._consumer.close()
    source._consumer = StandInConsumer(commit)
    return source


def test_a_commit_that_returns_is_done_when_commit_returns():
    source = source_with(lambda: None)
    source.commit({("t", 0): 5, ("t", 1): 7})
    assert source._consumer.committed == [{("t", 0): 5, ("t", 1): 7}]


def test_a_commit_that_fails_raises_its_error_at_once():
    def refuse():
        raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
    source = source_with(refuse, wait=30)
    began = time.monotonic()
    with pytest.raises(KafkaException):
        source.commit({("t", 0): 5})
    assert time.monotonic() - began < 5


def test_a_commit_that_never_returns_is_given_up_on_after_the_wait():
    never = threading.Event()
    source = source_with(never.wait, wait=0.5)
    began = time.monotonic()
    with pytest.raises(CommitTimedOut):
        source.commit({("t", 0): 5})
    assert 0.5 <= time.monotonic() - began < 5
    never.set()  # the abandoned commit's thread ends


def test_nothing_to_commit_commits_nothing():
    source = source_with(lambda: pytest.fail("committed"))
    source.commit({})
