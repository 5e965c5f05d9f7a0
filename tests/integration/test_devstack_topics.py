"""devstack.topics against the real Kafka: a topic that exists gets the
table's retention and cleanup policy, so a retention changed in
shared.topics reaches a stack created before the change; the throwaway
topics of tests and benchmarks are deleted, and only those."""
import time

from kafka.admin import ConfigResource, ConfigResourceType

from devstack.topics import admin_client, ensure_topics, sweep_leftovers
from shared.kafka.admin import delete_topics
from shared.topics import TopicSpec


def _configs(bootstrap: str, name: str) -> dict[str, str]:
    admin = admin_client(bootstrap)
    try:
        described = admin.describe_configs([ConfigResource(
            ConfigResourceType.TOPIC, name, {"retention.ms": None, "cleanup.policy": None})],
            config_filter="all")["topic"][name]
        return {key: described[key]["value"] for key in ("retention.ms", "cleanup.policy")}
    finally:
        admin.close()


def test_existing_topics_get_the_tables_retention_and_cleanup_policy(kafka_bootstrap, unique):
    name = f"test.{unique}.retention"
    try:
        assert ensure_topics(kafka_bootstrap, {name: TopicSpec(1, 3_600_000)}) == ([name], [], [])
        assert _configs(kafka_bootstrap, name) == {"retention.ms": "3600000",
                                                   "cleanup.policy": "delete"}

        shorter = {name: TopicSpec(1, 1_800_000, "compact,delete")}
        assert ensure_topics(kafka_bootstrap, shorter) == ([], [name], [name])
        configs = _configs(kafka_bootstrap, name)
        assert configs["retention.ms"] == "1800000"
        assert sorted(configs["cleanup.policy"].split(",")) == ["compact", "delete"]

        assert ensure_topics(kafka_bootstrap, shorter) == ([], [name], [])  # already aligned
    finally:
        delete_topics(kafka_bootstrap, [name])


def _names(bootstrap: str) -> set[str]:
    admin = admin_client(bootstrap)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def _wait_gone(bootstrap: str, names: set[str], timeout: float = 30) -> set[str]:
    """The names still listed after up to `timeout` seconds (deletion is asynchronous)."""
    deadline = time.monotonic() + timeout
    while (left := names & _names(bootstrap)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def test_delete_topics_removes_them_and_tolerates_one_already_gone(kafka_bootstrap, unique):
    names = {f"test.{unique}.a", f"test.{unique}.b"}
    ensure_topics(kafka_bootstrap, {name: TopicSpec(2, 3_600_000) for name in names})
    assert names <= _names(kafka_bootstrap)
    delete_topics(kafka_bootstrap, sorted(names) + [f"test.{unique}.never-made"])
    assert _wait_gone(kafka_bootstrap, names) == set()


def test_delete_topics_with_the_broker_away_only_warns(caplog):
    delete_topics("127.0.0.1:1", ["test.nowhere.t"], timeout_ms=2_000)
    assert "could not delete 1 topics" in caplog.text


def test_the_sweep_deletes_throwaway_topics_and_nothing_else(kafka_bootstrap, unique):
    throwaway = {f"test.{unique}.x.send.jobs", f"test.{unique}.x.delivery.events"}
    kept = f"keep.{unique}.t"
    ensure_topics(kafka_bootstrap, {name: TopicSpec(1, 3_600_000) for name in throwaway | {kept}})
    try:
        # the test's own prefix stands for "test." and "bench.": the real ones
        # would take other tests' topics with them
        swept = sweep_leftovers(kafka_bootstrap, prefixes=(f"test.{unique}.x.", f"keep.{unique}.none"))
        assert set(swept) == throwaway
        assert _wait_gone(kafka_bootstrap, throwaway) == set()
        assert kept in _names(kafka_bootstrap)
    finally:
        delete_topics(kafka_bootstrap, [kept])


def test_the_kubernetes_topics_job_aligns_existing_topics_and_takes_a_replication_factor(
        kafka_bootstrap, unique, monkeypatch):
    """`python -m shared.kafka.admin` (the topics Job) only created what was
    missing, with a replication factor of 1 written in the code: a shortened
    retention never reached a cluster, and a cluster requiring 3 refused it."""
    from shared import topics
    from shared.kafka import admin
    old, new = f"test.{unique}.old", f"test.{unique}.new"
    monkeypatch.setenv("SANDESH_KAFKA_BOOTSTRAP", kafka_bootstrap)
    try:
        assert ensure_topics(kafka_bootstrap, {old: TopicSpec(1, 3_600_000)}) == ([old], [], [])
        monkeypatch.setattr(topics, "TOPICS", {old: TopicSpec(1, 1_800_000),
                                               new: TopicSpec(1, 1_800_000)})
        monkeypatch.setenv("SANDESH_KAFKA_REPLICATION_FACTOR", "2")  # one broker here
        try:
            admin.main()
        except Exception as exc:  # the broker was asked for two replicas
            assert "eplication" in f"{type(exc).__name__} {exc}", exc
        else:
            raise AssertionError("a replication factor of 2 was not asked of the broker")
        monkeypatch.setenv("SANDESH_KAFKA_REPLICATION_FACTOR", "1")
        admin.main()
        assert _configs(kafka_bootstrap, old)["retention.ms"] == "1800000"
        assert _configs(kafka_bootstrap, new)["retention.ms"] == "1800000"
    finally:
        delete_topics(kafka_bootstrap, [old, new])
