"""A deleted account's events that arrive after its erasure are not counted.

The erasure comes on privacy.requested, the account's delivery events on
delivery.events: Kafka does not order the two, and during a campaign the
deliveries can lag by thousands. Campaigns, tracking and privacy each erase
the account, then get one of its late delivery events through the handler
their worker uses (real FerretDB): nothing of the account comes back, while
another account's event in the same batch is counted."""
from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import pytest

from services.campaigns import privacy as campaigns_privacy
from services.campaigns.handlers import build_handlers as campaigns_handlers
from services.privacy.handlers import build_aggregate_counter
from services.privacy.store import PrivacyStore
from services.tracking import privacy as tracking_privacy
from services.tracking.handlers import build_batch_handler
from services.tracking.store import INDEXES as TRACKING_INDEXES
from shared import mongo
from shared.config import Config
from shared.erased_accounts import ErasedAccounts
from shared.events import decode, new_event
from shared.kafka.memory import InMemoryBroker
from shared.kafka.producer import EventProducer


def _sent(account_id: str, campaign_id: str):
    event = new_event("delivery.sent", source="sender", subject="j", account_id=account_id,
                      data={"job_id": uuid.uuid4().hex, "campaign_id": campaign_id,
                            "contact_id": uuid.uuid4().hex, "attempt": 0,
                            "recipient_domain": "example.com", "test": False,
                            "smtp_code": 250, "message_id": "<m@sandesh.test>",
                            "size_bytes": 100})
    return decode(json.dumps(event.to_dict()).encode())  # as the worker sees it


@pytest.fixture
def accounts():
    return SimpleNamespace(gone=uuid.uuid4().hex, kept=uuid.uuid4().hex,
                           gone_campaign=uuid.uuid4().hex, kept_campaign=uuid.uuid4().hex)


@pytest.fixture
def runtime(mongo_db):
    producer = EventProducer(InMemoryBroker().sink())
    return SimpleNamespace(db=mongo_db, producer=lambda: producer,
                           config=Config(machine_hit_seconds=10.0, machine_burst_seconds=1.0,
                                         stats_hourly_days=3))


def test_campaigns_counts_no_late_outcome_of_a_deleted_account(runtime, accounts):
    handlers = campaigns_handlers(runtime)
    campaigns_privacy.erase_account(runtime.db, accounts.gone)

    handlers["delivery.sent"](_sent(accounts.gone, accounts.gone_campaign))
    handlers["delivery.sent"](_sent(accounts.kept, accounts.kept_campaign))

    outcomes = runtime.db.job_outcomes
    assert outcomes.count_documents({"campaign_id": accounts.gone_campaign}) == 0
    assert runtime.db.progress.count_documents({"account_id": accounts.gone}) == 0
    assert outcomes.count_documents({"campaign_id": accounts.kept_campaign}) == 1


def test_tracking_records_no_late_delivery_of_a_deleted_account(runtime, accounts):
    mongo.ensure_indexes(runtime.db, TRACKING_INDEXES)
    handle_batch = build_batch_handler(runtime)
    tracking_privacy.erase_account(runtime.db, accounts.gone)

    handle_batch([_sent(accounts.gone, accounts.gone_campaign),
                  _sent(accounts.kept, accounts.kept_campaign)])

    deliveries = runtime.db.deliveries
    assert deliveries.count_documents({"account_id": accounts.gone}) == 0
    assert runtime.db.counters.count_documents({"c": accounts.gone_campaign}) == 0
    assert deliveries.count_documents({"account_id": accounts.kept}) == 1


def test_privacy_keeps_no_late_marker_of_a_deleted_account(runtime, accounts):
    count = build_aggregate_counter(runtime)
    PrivacyStore(runtime.db).forget_account(accounts.gone)

    count([_sent(accounts.gone, accounts.gone_campaign),
           _sent(accounts.kept, accounts.kept_campaign)])

    markers = runtime.db.agg_markers
    assert markers.count_documents({"account_id": accounts.gone}) == 0
    assert markers.count_documents({"account_id": accounts.kept}) == 1


def test_an_erasure_noted_by_one_process_reaches_another_within_its_cache_time(mongo_db):
    now = [100.0]
    writer, reader = ErasedAccounts(mongo_db), ErasedAccounts(mongo_db, clock=lambda: now[0])
    assert reader.among(["a", "b"]) == set()      # read, and cached for a second
    writer.mark("a")
    assert reader.among(["a"]) == set()
    now[0] += 1.0
    assert reader.among(["a", "b"]) == {"a"}
    assert [e.account_id for e in reader.drop_events(
        [SimpleNamespace(account_id="a"), SimpleNamespace(account_id="b")])] == ["b"]
