from __future__ import annotations

import logging

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from shared.topics import TopicSpec

log = logging.getLogger(__name__)


def ensure_topics(bootstrap: str, specs: dict[str, TopicSpec], timeout_ms: int = 30_000,
                  replication_factor: int = 1) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sandesh-admin",
                             request_timeout_ms=timeout_ms)
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, spec.partitions, replication_factor,
                            topic_configs=spec.configs())
                   for name, spec in specs.items() if name not in existing]
        if missing:
            try:
                admin.create_topics(missing, timeout_ms=timeout_ms)
            except TopicAlreadyExistsError:
                pass  # created concurrently by another process
        return [t.name for t in missing]
    finally:
        admin.close()


def delete_topics(bootstrap: str, names: list[str], timeout_ms: int = 30_000) -> None:
    """Delete throwaway topics (a test's or a benchmark's own), best effort.

    Every topic left behind stays on the broker for good: with ~11,000
    partitions from earlier runs, the local Kafka used 0.30-0.57 ms of CPU
    per message in the send benchmark, 0.14-0.28 once they were gone. A
    topic this misses (the broker away, the run killed) is swept at the
    next fresh `make run` (devstack.topics.sweep_leftovers)."""
    if not names:
        return
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sandesh-admin",
                                 request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms)
    except KafkaError as exc:
        log.warning("could not delete %d topics: %s", len(names), exc)
        return
    try:
        admin.delete_topics(names, timeout_ms=timeout_ms)
    except UnknownTopicOrPartitionError:
        pass  # gone already
    except KafkaError as exc:
        log.warning("could not delete %d topics: %s", len(names), exc)
    finally:
        admin.close()


def topic_configs(spec) -> dict[str, str]:
    if hasattr(spec, "configs"):
        return dict(spec.configs())
    configs = {"retention.ms": str(spec.retention_ms)}
    if getattr(spec, "cleanup_policy", None):
        configs["cleanup.policy"] = spec.cleanup_policy
    return configs


def _normalised(key: str, value: str | None) -> str | None:
    if key == "cleanup.policy" and value:
        return ",".join(sorted(part.strip() for part in value.split(",")))
    return value


def align_configs(admin: KafkaAdminClient, topics: dict) -> list[str]:
    """Set the table's configs (retention, cleanup policy) on existing
    topics where the broker holds something else; returns the names
    changed. Only the differing keys are set: other settings of the topic
    stay. A retention shortened in shared.topics bounds how long personal
    data lives in Kafka: it must reach topics created before the change."""
    from kafka.admin import ConfigResource, ConfigResourceType

    if not topics:
        return []
    wanted = {name: topic_configs(spec) for name, spec in topics.items()}
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, dict.fromkeys(configs))
         for name, configs in wanted.items()], config_filter="all")["topic"]
    changes = {}
    for name, configs in wanted.items():
        held = described.get(name) or {}
        differ = {key: value for key, value in configs.items()
                  if _normalised(key, (held.get(key) or {}).get("value")) != _normalised(key, value)}
        if differ:
            changes[name] = differ
    if not changes:
        return []
    result = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs)
                                  for name, configs in changes.items()])["topic"]
    errors = [f"{name}: {outcome}" for name, outcome in result.items() if outcome != "OK"]
    if errors:
        raise RuntimeError("could not set Kafka topic configs: " + "; ".join(errors))
    return sorted(changes)


def main() -> None:
    """Create every platform topic and align the configs of those already
    there: `python -m shared.kafka.admin` (the Kubernetes topics Job).
    SANDESH_KAFKA_REPLICATION_FACTOR (1) for the topics it creates: 3 on a
    production cluster (a broker lost loses nothing, and a cluster with
    min.insync.replicas=2 takes acks=all writes at all)."""
    from shared.config import POSITIVE_INT, Setting, load_common
    from shared.topics import TOPICS

    config = load_common([Setting("SANDESH_KAFKA_REPLICATION_FACTOR", POSITIVE_INT, default=1)])
    created = ensure_topics(config.kafka_bootstrap, TOPICS,
                            replication_factor=config.kafka_replication_factor)
    admin = KafkaAdminClient(bootstrap_servers=config.kafka_bootstrap,
                             client_id="sandesh-admin", request_timeout_ms=30_000)
    try:
        aligned = align_configs(admin, {n: s for n, s in TOPICS.items() if n not in created})
    finally:
        admin.close()
    print(f"topics: {len(TOPICS)} declared, created {created or 'none'}, "
          f"configs aligned {aligned or 'none'}")


if __name__ == "__main__":
    main()
