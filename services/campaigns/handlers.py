"""What the campaigns worker consumes: {event type: handler}.

Delivery outcomes and the audience size become campaign progress, counted
once per job however often Kafka redelivers them (see store.JobStateStore).
An account's erasure request deletes its templates and campaigns (privacy.py).
"""
import os
import socket
import uuid

from services.campaigns import privacy, usecases
from services.campaigns.store import CampaignStore, JobStateStore, ProgressStore, TemplateStore
from shared import topics
from shared.erased_accounts import ErasedAccounts

GROUP = "campaigns"
# tracking.events for its bounces: a bounce arrives after acceptance, as a
# DSN to the tracking webhook, which announces it as tracking.bounced. The
# senders announce none (a refusal at SMTP time is delivery.failed), so the
# progress's bounce count stayed 0. Opens and clicks are passed over by
# their type header, undecoded.
TOPICS = [topics.DELIVERY_EVENTS, topics.CONTACTS_EVENTS, topics.PRIVACY_REQUESTS,
          topics.TRACKING_EVENTS]

DELIVERY_TYPES = ("delivery.sent", "delivery.deferred", "delivery.failed", "delivery.bounced",
                  "delivery.skipped", "tracking.bounced")


def ports_for(runtime, writer: str | None = None) -> usecases.Ports:
    """`writer` names this process's progress documents (one writer each)."""
    db = runtime.db
    writer = writer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return usecases.Ports(TemplateStore(db), CampaignStore(db), JobStateStore(db),
                          ProgressStore(db, writer), runtime.producer())


def build_handlers(runtime, ports: usecases.Ports | None = None) -> dict:
    """With `ports` given, delivery outcomes are buffered in it: the caller
    must run usecases.flush_progress(ports) before committing offsets (the
    worker does). Without, each event is written at once."""
    buffered = ports is not None
    ports = ports or ports_for(runtime)
    erased = ErasedAccounts(runtime.db)

    def unless_erased(handle):  # a deleted account's late events must not count again
        return lambda event: None if erased.among([event.account_id]) else handle(event)

    handlers = {t: unless_erased(lambda e: usecases.record_delivery(ports, e, flush=not buffered))
                for t in DELIVERY_TYPES}
    handlers["audience.ready"] = unless_erased(lambda e: usecases.record_audience(ports, e))

    def on_privacy_request(event) -> None:
        usecases.flush_progress(ports)   # no buffered count outlives an erased campaign
        privacy.handle_privacy_request(runtime.db, ports.producer, event)
    handlers["privacy.requested"] = on_privacy_request
    return handlers
