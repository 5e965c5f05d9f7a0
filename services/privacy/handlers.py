"""What the privacy worker consumes: {event type: handler}.

- privacy.answered (privacy.acks): a service's answer to a request.
- delivery.* (delivery.events): counted into the k-anonymous aggregates.
- audit.recorded (audit.events): other services' audit entries.
"""
from functools import partial

from services.privacy import aggregates, usecases
from services.privacy.store import PrivacyStore
from shared import topics

GROUP = "privacy"
TOPICS = [topics.PRIVACY_ACKS, topics.DELIVERY_EVENTS, topics.AUDIT_EVENTS]


def build_handlers(runtime, requests_topic: str = topics.PRIVACY_REQUESTS) -> dict:
    store = PrivacyStore(runtime.db)
    count = partial(aggregates.count_delivery, store)

    def on_answer(event) -> None:
        usecases.record_answer(store, event.account_id, event.data,
                               producer=runtime.producer(), topic=requests_topic)

    return {
        "privacy.answered": on_answer,
        "delivery.sent": count,
        "delivery.bounced": count,
        "delivery.failed": count,
        "audit.recorded": partial(usecases.record_audit_event, store),
    }
