"""What the privacy worker consumes: {event type: handler}."""
from shared import topics

GROUP = "privacy"
TOPICS = [topics.PRIVACY_ACKS]


def build_handlers(runtime) -> dict:
    return {}
