"""What the privacy worker consumes: {event type: handler}.

- privacy.requested (privacy.requests): the privacy service's own part of
  an erasure (its markers, exports and acknowledgements of the subject).
- privacy.answered (privacy.acks): a service's answer to a request.
- delivery.* (delivery.events): counted into the k-anonymous aggregates.
- audit.recorded (audit.events): other services' audit entries.
"""
from functools import partial

from services.privacy import aggregates, usecases
from services.privacy.store import PrivacyStore
from shared import topics
from shared.erased_accounts import ErasedAccounts
from shared.erased_contacts import ErasedContacts

GROUP = "privacy"
TOPICS = [topics.PRIVACY_REQUESTS, topics.PRIVACY_ACKS, topics.AUDIT_EVENTS]
# Its own group: a backlog of deliveries never delays an answer.
AGGREGATES_GROUP = "privacy-aggregates"
AGGREGATES_TOPICS = [topics.DELIVERY_EVENTS]
AGGREGATES_TYPES = tuple(aggregates.OUTCOMES)


def build_handlers(runtime, requests_topic: str = topics.PRIVACY_REQUESTS) -> dict:
    store = PrivacyStore(runtime.db)

    def on_answer(event) -> None:
        usecases.record_answer(store, event.account_id, event.data,
                               producer=runtime.producer(), topic=requests_topic)

    return {
        "privacy.requested": partial(usecases.forget_own_data, store),
        "privacy.answered": on_answer,
        "audit.recorded": partial(usecases.record_audit_event, store),
    }


def build_aggregate_counter(runtime):
    """The aggregates loop's batch handler: a poll's deliveries counted with
    one insert (one insert per event cost FerretDB ~1 ms apiece, the largest
    share of its work during a campaign)."""
    store = PrivacyStore(runtime.db)
    erased, contacts = ErasedAccounts(runtime.db), ErasedContacts(runtime.db)

    def count(events):
        # An erased contact's late deliveries count under a pseudonym: its
        # markers, with its id, were deleted.
        screened = contacts.screen(erased.drop_events(events))
        aggregates.count_deliveries(store, screened)
        # Erased while this batch was counted: its markers may have been
        # deleted before these were written (shared/erased_contacts.py).
        for account_id, contact_id in contacts.erased_since(screened):
            store.forget_contacts(account_id, [contact_id])
    return count
