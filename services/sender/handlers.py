"""What the sender consumes: {event type: handler}."""
from shared import topics

GROUP = "sender"
TOPICS = [topics.SEND_JOBS, topics.SEND_RETRY]


def build_handlers(runtime) -> dict:
    return {}
