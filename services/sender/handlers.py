"""What the sender learns from other services' events, into its own db:
campaigns (template, limits, status) and contacts' unsubscribe/suppression
state. {event type: handler}, run by shared ConsumerLoops in the worker."""
from __future__ import annotations

from services.sender import privacy
from services.sender.domain import CANCELLED, PAUSED, SENDING
from services.sender.store import CampaignStore, ContactStateStore
from shared import topics

GROUP = "sender"
TOPICS = [topics.SEND_JOBS, topics.SEND_RETRY]
CAMPAIGNS_TOPICS = [topics.CAMPAIGNS_EVENTS]
CONTACTS_TOPICS = [topics.CONTACTS_EVENTS, topics.PRIVACY_REQUESTS]


def campaign_handlers(store: CampaignStore) -> dict:
    return {
        "campaign.launched": lambda e: store.launched(e.account_id, e.data),
        "campaign.paused": lambda e: store.set_status(e.data["campaign_id"], PAUSED),
        "campaign.resumed": lambda e: store.set_status(e.data["campaign_id"], SENDING),
        "campaign.cancelled": lambda e: store.set_status(e.data["campaign_id"], CANCELLED),
    }


def contact_handlers(store: ContactStateStore) -> dict:
    def suppressed(event):
        if event.data.get("contact_id"):  # an address-only suppression names no contact
            store.suppressed(event.data["contact_id"])

    return {
        "contact.unsubscribed": lambda e: store.unsubscribed(e.data["contact_id"], e.data["list_id"]),
        "contact.subscribed": lambda e: store.subscribed(e.data["contact_id"], e.data["list_id"]),
        "contact.suppressed": suppressed,
        "contact.status_changed": lambda e: store.status(e.data["contact_id"], e.data["status"]),
        "contact.erased": lambda e: store.status(e.data["contact_id"], "erased"),
        "privacy.requested": privacy.handler_for(store.col.database),
    }
