"""What the sender learns from other services' events, into its own db:
campaigns (template, limits, status) and contacts' unsubscribe/suppression
state. {event type: handler}, run by shared ConsumerLoops in the worker.

Unsubscribes and complaints are taken straight from tracking.events as well
as from contacts.events, so they stop the next job after one hop, not two
(tracking -> contacts -> sender)."""
from __future__ import annotations

from datetime import datetime

from services.sender import privacy
from services.sender.domain import CANCELLED, PAUSED, SENDING, parse_time
from services.sender.store import CampaignStore, ContactStateStore
from shared import topics
from shared.erased_accounts import ErasedAccounts

GROUP = "sender"
TOPICS = [topics.SEND_JOBS, topics.SEND_RETRY]
CAMPAIGNS_TOPICS = [topics.CAMPAIGNS_EVENTS]
CONTACTS_TOPICS = [topics.CONTACTS_EVENTS, topics.TRACKING_EVENTS, topics.PRIVACY_REQUESTS]


def campaign_handlers(store: CampaignStore) -> dict:
    return {
        "campaign.launched": lambda e: store.launched(e.account_id, e.data),
        "campaign.paused": lambda e: store.set_status(e.data["campaign_id"], PAUSED,
                                                      e.data.get("version")),
        "campaign.resumed": lambda e: store.set_status(e.data["campaign_id"], SENDING,
                                                       e.data.get("version")),
        "campaign.cancelled": lambda e: store.set_status(e.data["campaign_id"], CANCELLED),
    }


def _time(event) -> datetime | None:
    """When the change happened (orders the two topics' copies); None if unreadable."""
    try:
        return parse_time(event.time)
    except (TypeError, ValueError):
        return None


def contact_handlers(store: ContactStateStore, erased: ErasedAccounts | None = None) -> dict:
    """`erased`: shared with this loop's privacy handler, which marks an
    erased account in it, so its cache knows at once."""
    def suppressed(event):
        data = event.data
        if data.get("email_hash"):  # absent from events older than the field
            account_id = event.account_id if data["scope"] == "account" else None
            store.address_suppressed(data["email_hash"], account_id, data["reason"])
        if data.get("contact_id"):  # an address-only suppression names no contact
            store.suppressed(event.account_id, data["contact_id"])

    def unsuppressed(event):
        data = event.data
        store.address_unsuppressed(data["email_hash"], event.account_id)
        if data.get("contact_id"):
            store.unsuppressed(event.account_id, data["contact_id"])

    def unsubscribed(event):
        # list_id null: every list of the account, as contacts reads it
        data = event.data
        store.unsubscribed(event.account_id, data["contact_id"], data.get("list_id"), _time(event))

    def subscribed(event):
        data = event.data
        store.subscribed(event.account_id, data["contact_id"], data["list_id"], _time(event))

    def revised(event):
        data = event.data
        if data.get("revision"):  # absent from events older than the field
            store.revised(event.account_id, data["contact_id"], data["revision"])

    def status_is(status):
        return lambda e: store.status(e.account_id, e.data["contact_id"], status, _time(e))

    erased = erased or ErasedAccounts(store.col.database)

    def unless_erased(handler):
        """An erased account's late events are dropped: its state is gone, and
        one of them would bring a piece of it back (privacy.erase_account)."""
        def handle(event):
            if not (event.account_id and erased.among([event.account_id])):
                handler(event)
        return handle

    table = {
        "contact.unsubscribed": unsubscribed,
        "contact.subscribed": subscribed,
        "contact.suppressed": suppressed,
        "contact.unsuppressed": unsuppressed,
        "contact.status_changed":
            lambda e: store.status(e.account_id, e.data["contact_id"], e.data["status"], _time(e)),
        "contact.erased": status_is("erased"),
        "contact.updated": revised,
        "tracking.unsubscribed": unsubscribed,
        "tracking.complained": status_is("complained"),
    }
    return {**{kind: unless_erased(handler) for kind, handler in table.items()},
            "privacy.requested": privacy.handler_for(store.col.database, erased)}
