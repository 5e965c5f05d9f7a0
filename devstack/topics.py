"""Create the platform's Kafka topics on the local broker, idempotently.

The table (names, partitions, retention, cleanup policy) has one home:
`shared.topics.TOPICS`, which the services use too. Nothing is duplicated here.

    python -m devstack.topics        # create what is missing, align the rest

Topics that exist get the table's retention and cleanup policy too: a
retention shortened in shared.topics (it bounds how long personal data
lives in Kafka) must reach a stack created before the change.
"""
from __future__ import annotations

import sys

from shared.kafka.admin import align_configs, topic_configs


def platform_topics() -> dict:
    """{name: TopicSpec(partitions, retention_ms, cleanup_policy)} from shared.topics."""
    from shared.topics import TOPICS

    return dict(TOPICS)


def admin_client(bootstrap: str, timeout_ms: int = 10_000):
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sandesh-devstack",
                            request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms)


def ensure_topics(bootstrap: str, topics: dict | None = None
                  ) -> tuple[list[str], list[str], list[str]]:
    """Create the missing topics and align the configs of the others;
    return (created, already there, of those the ones whose configs
    changed)."""
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
        present = {name: spec for name, spec in topics.items() if name not in missing}
        altered = align_configs(admin, present)
        return sorted(created), sorted(present), altered
    finally:
        admin.close()


# Prefixes of the throwaway topics tests and benchmarks make for themselves.
THROWAWAY_PREFIXES = ("test.", "bench.")


def sweep_leftovers(bootstrap: str, prefixes: tuple[str, ...] = THROWAWAY_PREFIXES) -> list[str]:
    """Delete the throwaway topics earlier test and benchmark runs left
    (killed before their clean-up, or run by older code). Only for a broker
    just started: no run can be using them then. Returns the names."""
    from shared.kafka.admin import delete_topics

    admin = admin_client(bootstrap, 30_000)
    try:
        leftovers = sorted(n for n in admin.list_topics() if n.startswith(prefixes))
    finally:
        admin.close()
    for start in range(0, len(leftovers), 500):  # bounded requests
        delete_topics(bootstrap, leftovers[start:start + 500])
    return leftovers


def main() -> None:
    from devstack.env import StackEnvMissing, load_stack_env

    try:
        bootstrap = load_stack_env()["SANDESH_KAFKA_BOOTSTRAP"]
    except StackEnvMissing as exc:
        sys.exit(str(exc))
    created, existing, altered = ensure_topics(bootstrap)
    print(f"created: {', '.join(created) or '-'}\nalready there: {', '.join(existing) or '-'}\n"
          f"configs aligned: {', '.join(altered) or '-'}")


if __name__ == "__main__":
    main()
