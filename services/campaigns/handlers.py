"""What the campaigns worker consumes: {event type: handler}."""
from shared import topics

GROUP = "campaigns"
TOPICS = [topics.DELIVERY_EVENTS, topics.CONTACTS_EVENTS]


def build_handlers(runtime) -> dict:
    return {}
