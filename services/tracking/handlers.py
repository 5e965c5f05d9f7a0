"""What the tracking worker consumes.

Beyond the architecture table's `delivery.events`, tracking also reads
`tracking.events` (the hits its web processes produced, to count them) and
`campaigns.events` (launched: the link table of the frozen template, so a
click token's link index finds its URL). See docs/tracking.md.

Counted events go to the stats counter a whole poll at a time (a few bulk
writes per batch instead of ~5 writes per event); privacy requests are
handled one at a time.
"""
from services.tracking import privacy
from services.tracking.counting import CountingRules, StatsCounter
from services.tracking.settings import SETTINGS
from services.tracking.store import TrackingStore
from shared import topics
from shared.erased_accounts import ErasedAccounts
from shared.erased_contacts import ErasedContacts

GROUP = "tracking"
TOPICS = [topics.DELIVERY_EVENTS, topics.TRACKING_EVENTS, topics.CAMPAIGNS_EVENTS,
          topics.PRIVACY_REQUESTS]
EXTRA_SETTINGS = SETTINGS
COUNTED_TYPES = frozenset({
    "campaign.launched", "delivery.sent", "delivery.failed", "delivery.bounced",
    "tracking.bounced", "tracking.opened", "tracking.clicked", "tracking.unsubscribed",
    "tracking.complained"})


def build_counter(runtime) -> StatsCounter:
    config = runtime.config
    return StatsCounter(TrackingStore(runtime.db), CountingRules(
        machine_hit_seconds=config.machine_hit_seconds,
        machine_burst_seconds=config.machine_burst_seconds,
        hourly_days=config.stats_hourly_days))


def build_batch_handler(runtime):
    """The counter's handle_batch, without a deleted account's late events,
    and with an erased contact's screened (counting them as they come would
    bring back what the erasure deleted)."""
    counter, erased = build_counter(runtime), ErasedAccounts(runtime.db)
    contacts = ErasedContacts(runtime.db)

    def handle_batch(events):
        screened = contacts.screen(erased.drop_events(events))
        counter.handle_batch(screened)
        # Erased while this batch was counted: its renaming may have run
        # before these writes, so it runs again (shared/erased_contacts.py).
        for account_id, contact_id in contacts.erased_since(screened):
            privacy.erase(runtime.db, account_id, contact_id)
    return handle_batch


def build_handlers(runtime) -> dict:
    """The handlers of events taken one at a time: {event type: handler}."""
    return {
        "privacy.requested": lambda event: privacy.handle_privacy_request(runtime, event),
    }
