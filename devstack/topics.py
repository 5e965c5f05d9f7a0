"""Create the platform's Kafka topics on the local broker, idempotently.

The table (names, partitions, retention, cleanup policy) has one home:
`shared.topics.TOPICS`, which the services use too. Nothing is duplicated here.

    python -m devstack.topics        # create what is missing, list the rest
"""
from __future__ import annotations

import sys


def platform_topics() -> dict:
    """{name: TopicSpec(partitions, retention_ms, cleanup_policy)} from shared.topics."""
    from shared.topics import TOPICS

    return dict(TOPICS)


def topic_configs(spec) -> dict[str, str]:
    if hasattr(spec, "configs"):
        return dict(spec.configs())
    configs = {"retention.ms": str(spec.retention_ms)}
    if getattr(spec, "cleanup_policy", None):
        configs["cleanup.policy"] = spec.cleanup_policy
    return configs


def admin_client(bootstrap: str, timeout_ms: int = 10_000):
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sandesh-devstack",
                            request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms)


def ensure_topics(bootstrap: str, topics: dict | None = None) -> tuple[list[str], list[str]]:
    """Create the missing topics; return (created, already there)."""
    from kafka.errors import TopicAlreadyExistsError, for_code

    topics = platform_topics() if topics is None else topics
    admin = admin_client(bootstrap, 30_000)
    try:
        existing = set(admin.list_topics())
        missing = {name: spec for name, spec in topics.items() if name not in existing}
        created: list[str] = []
        if missing:
            result = admin.create_topics(
                {name: {"num_partitions": spec.partitions, "replication_factor": 1,
                        "configs": topic_configs(spec)} for name, spec in missing.items()},
                raise_errors=False)
            errors = []
            for topic in result["topics"]:
                error = for_code(topic["error_code"])
                if topic["error_code"] == 0:
                    created.append(topic["name"])
                elif error is not TopicAlreadyExistsError:  # lost a race: fine
                    errors.append(f"{topic['name']}: {error.__name__} {topic.get('error_message') or ''}")
            if errors:
                raise RuntimeError("could not create Kafka topics: " + "; ".join(errors))
            admin.wait_for_topics(list(missing), timeout_ms=30_000)
        return sorted(created), sorted(set(topics) - set(missing))
    finally:
        admin.close()


def main() -> None:
    from devstack.env import StackEnvMissing, load_stack_env

    try:
        bootstrap = load_stack_env()["SANDESH_KAFKA_BOOTSTRAP"]
    except StackEnvMissing as exc:
        sys.exit(str(exc))
    created, existing = ensure_topics(bootstrap)
    print(f"created: {', '.join(created) or '-'}\nalready there: {', '.join(existing) or '-'}")


if __name__ == "__main__":
    main()
