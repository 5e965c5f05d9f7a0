"""What the tracking worker consumes: {event type: handler}.

Beyond the architecture table's `delivery.events`, tracking also reads
`tracking.events` (the hits its web processes produced, to count them) and
`campaigns.events` (launched: the link table of the frozen template, so a
click token's link index finds its URL). See docs/tracking.md.
"""
from services.tracking import privacy
from services.tracking.counting import CountingRules, StatsCounter
from services.tracking.settings import SETTINGS
from services.tracking.store import TrackingStore
from shared import topics

GROUP = "tracking"
TOPICS = [topics.DELIVERY_EVENTS, topics.TRACKING_EVENTS, topics.CAMPAIGNS_EVENTS,
          topics.PRIVACY_REQUESTS]
EXTRA_SETTINGS = SETTINGS


def build_handlers(runtime) -> dict:
    config = runtime.config
    counter = StatsCounter(TrackingStore(runtime.db), CountingRules(
        machine_hit_seconds=config.machine_hit_seconds,
        machine_burst_seconds=config.machine_burst_seconds,
        hourly_days=config.stats_hourly_days))
    return {
        "campaign.launched": counter.campaign_launched,
        "delivery.sent": counter.delivery_sent,
        "delivery.failed": counter.delivery_failed,
        "delivery.bounced": counter.bounced,
        "tracking.bounced": counter.bounced,
        "tracking.opened": counter.opened,
        "tracking.clicked": counter.clicked,
        "tracking.unsubscribed": counter.unsubscribed,
        "tracking.complained": counter.complained,
        "privacy.requested": lambda event: privacy.handle_privacy_request(runtime, event),
    }
