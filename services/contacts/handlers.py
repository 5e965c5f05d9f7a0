"""What the contacts worker consumes: {event type: handler}."""
from shared import topics

GROUP = "contacts"
TOPICS = [topics.CAMPAIGNS_EVENTS, topics.TRACKING_EVENTS, topics.DELIVERY_EVENTS,
          topics.PRIVACY_REQUESTS]


def build_handlers(runtime) -> dict:
    return {}
