"""devstack.topics against the real Kafka: a topic that exists gets the
table's retention and cleanup policy, so a retention changed in
shared.topics reaches a stack created before the change."""
from kafka.admin import ConfigResource, ConfigResourceType

from devstack.topics import admin_client, ensure_topics
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
        admin = admin_client(kafka_bootstrap)
        admin.delete_topics([name])
        admin.close()
