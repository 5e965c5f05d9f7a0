"""Every Kafka topic of the platform, with the partitions and retention the
project chooses. The local stack creates these; the AsyncAPI document and
the Kubernetes topic manifests describe the same table."""
from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    partitions: int
    retention_ms: int
    cleanup_policy: str = "delete"
    key: str = ""

    def configs(self) -> dict[str, str]:
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}


CONTACTS_EVENTS = "contacts.events"
CAMPAIGNS_EVENTS = "campaigns.events"
SEND_JOBS = "send.jobs"
SEND_RETRY = "send.retry"
SEND_DLQ = "send.dlq"
DELIVERY_EVENTS = "delivery.events"
TRACKING_EVENTS = "tracking.events"
PRIVACY_REQUESTS = "privacy.requests"
PRIVACY_ACKS = "privacy.acks"
DEAD_LETTERS = "dead.letters"
AUDIT_EVENTS = "audit.events"

# Retention is also how long personal data can live in Kafka: send jobs carry
# the recipient's address, so send.* topics keep 7 days at most.
TOPICS: dict[str, TopicSpec] = {
    CONTACTS_EVENTS: TopicSpec(12, 7 * DAY_MS, "compact,delete", "contact id"),
    CAMPAIGNS_EVENTS: TopicSpec(6, 30 * DAY_MS, key="campaign id"),
    SEND_JOBS: TopicSpec(24, 7 * DAY_MS, key="job id"),
    SEND_RETRY: TopicSpec(12, 7 * DAY_MS, key="job id"),
    SEND_DLQ: TopicSpec(6, 7 * DAY_MS, key="job id"),
    DELIVERY_EVENTS: TopicSpec(12, 7 * DAY_MS, key="job id"),
    TRACKING_EVENTS: TopicSpec(12, 7 * DAY_MS, key="campaign id"),
    PRIVACY_REQUESTS: TopicSpec(6, 30 * DAY_MS, key="request id"),
    PRIVACY_ACKS: TopicSpec(6, 30 * DAY_MS, key="request id"),
    DEAD_LETTERS: TopicSpec(6, 7 * DAY_MS, key="original key"),
    # Who accessed, exported or erased personal data (ids only), for the
    # privacy service's append-only audit log.
    AUDIT_EVENTS: TopicSpec(3, 30 * DAY_MS, key="account id"),
}
