from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from shared.topics import TopicSpec


def ensure_topics(bootstrap: str, specs: dict[str, TopicSpec], timeout_ms: int = 30_000) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sandesh-admin",
                             request_timeout_ms=timeout_ms)
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, spec.partitions, 1, topic_configs=spec.configs())
                   for name, spec in specs.items() if name not in existing]
        if missing:
            try:
                admin.create_topics(missing, timeout_ms=timeout_ms)
            except TopicAlreadyExistsError:
                pass  # created concurrently by another process
        return [t.name for t in missing]
    finally:
        admin.close()


def main() -> None:
    """Create every platform topic: `python -m shared.kafka.admin` (the
    Kubernetes topics Job and the local stack both run this)."""
    from shared.config import load_common
    from shared.topics import TOPICS

    config = load_common()
    created = ensure_topics(config.kafka_bootstrap, TOPICS)
    print(f"topics: {len(TOPICS)} declared, created {created or 'none'}")


if __name__ == "__main__":
    main()
