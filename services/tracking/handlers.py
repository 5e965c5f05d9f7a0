"""What the tracking worker consumes: {event type: handler}."""
from shared import topics

GROUP = "tracking"
TOPICS = [topics.DELIVERY_EVENTS]


def build_handlers(runtime) -> dict:
    return {}
