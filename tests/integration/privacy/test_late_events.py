"""A deleted account's events that arrive after its erasure are not counted,
and an erased contact's are not recorded under its id.

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
from services.tracking.store import TrackingStore
from shared import mongo
from shared.config import Config
from shared.erased_accounts import ErasedAccounts
from shared.erased_contacts import ErasedContacts
from shared.events import decode, new_event
from shared.kafka.memory import InMemoryBroker
from shared.kafka.producer import EventProducer


def _sent(account_id: str, campaign_id: str, contact_id: str | None = None):
    event = new_event("delivery.sent", source="sender", subject="j", account_id=account_id,
                      data={"job_id": uuid.uuid4().hex, "campaign_id": campaign_id,
                            "contact_id": contact_id or uuid.uuid4().hex, "attempt": 0,
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


def _opened(account_id: str, campaign_id: str, contact_id: str, job_id: str):
    event = new_event("tracking.opened", source="tracking", subject=campaign_id,
                      account_id=account_id,
                      data={"campaign_id": campaign_id, "contact_id": contact_id,
                            "job_id": job_id, "machine": False, "user_agent_family": "chrome",
                            "ip_prefix": "203.0.113.0/24"})
    return decode(json.dumps(event.to_dict()).encode())


def _everything(db) -> str:
    return json.dumps({name: list(db[name].find()) for name in db.list_collection_names()
                       if name != "erased_contacts"}, default=str)


def test_tracking_counts_an_erased_contacts_late_delivery_under_a_pseudonym_and_none_of_its_hits(
        runtime, accounts):
    """The delivery was in flight at the erasure, the open comes from the
    mail the person still has: neither may put the id back."""
    mongo.ensure_indexes(runtime.db, TRACKING_INDEXES)
    handle_batch = build_batch_handler(runtime)
    erased, kept = uuid.uuid4().hex, uuid.uuid4().hex
    tracking_privacy.erase(runtime.db, accounts.kept, erased)

    late = _sent(accounts.kept, accounts.kept_campaign, erased)
    handle_batch([late, _sent(accounts.kept, accounts.kept_campaign, kept)])
    handle_batch([_opened(accounts.kept, accounts.kept_campaign, erased, late.data["job_id"])])

    assert erased not in _everything(runtime.db)
    assert runtime.db.deliveries.find_one({"_id": late.data["job_id"]})["contact_id"] \
        .startswith("erased-")
    counts = TrackingStore(runtime.db).counters(accounts.kept_campaign)
    assert counts.get("sent") == 2 and not counts.get("opens_total_human")
    assert kept in _everything(runtime.db)


def test_privacy_counts_an_erased_contacts_late_delivery_under_a_pseudonym(runtime, accounts):
    count = build_aggregate_counter(runtime)
    erased = uuid.uuid4().hex
    PrivacyStore(runtime.db).forget_contacts(accounts.kept, [erased])

    count([_sent(accounts.kept, accounts.kept_campaign, erased)])

    markers = list(runtime.db.agg_markers.find({"account_id": accounts.kept}))
    assert len(markers) == 1 and erased not in json.dumps(markers, default=str)


def test_an_erased_contact_noted_by_one_process_reaches_another_within_its_refresh_time(mongo_db):
    now = [100.0]
    writer = ErasedContacts(mongo_db)
    reader = ErasedContacts(mongo_db, clock=lambda: now[0])
    assert not reader.erased("acct", "c1")          # read, and kept for a second
    writer.mark("acct", ["c1"])
    assert not reader.erased("acct", "c1")
    now[0] += 1.0
    assert reader.erased("acct", "c1") and not reader.erased("other-acct", "c1")
    writer.mark("acct", ["c2"])                     # read incrementally from then on
    now[0] += 1.0
    assert reader.erased("acct", "c2")
    writer.forget_account("acct")
    assert mongo_db.erased_contacts.count_documents({}) == 0


def test_a_delivery_screened_before_the_erasure_was_seen_is_renamed_after_it_is_written(
        runtime, accounts):
    """The worker screened its batch from a set read a moment before the
    erasure (another process's), and wrote it after the erasure renamed
    what it found: the batch's record is renamed after it is written."""
    mongo.ensure_indexes(runtime.db, TRACKING_INDEXES)
    handle_batch = build_batch_handler(runtime)
    handle_batch([_sent(accounts.kept, accounts.kept_campaign)])  # its set is read now
    erased = uuid.uuid4().hex
    tracking_privacy.erase(runtime.db, accounts.kept, erased)     # elsewhere, a moment later
    late = _sent(accounts.kept, accounts.kept_campaign, erased)
    handle_batch([late])
    assert erased not in _everything(runtime.db)
    assert runtime.db.deliveries.find_one({"_id": late.data["job_id"]})["contact_id"] \
        .startswith("erased-")


def test_privacy_deletes_a_marker_written_after_the_erasure_it_did_not_see(runtime, accounts):
    count = build_aggregate_counter(runtime)
    count([_sent(accounts.kept, accounts.kept_campaign)])                # its set is read now
    erased = uuid.uuid4().hex
    PrivacyStore(runtime.db).forget_contacts(accounts.kept, [erased])   # elsewhere
    count([_sent(accounts.kept, accounts.kept_campaign, erased)])
    assert runtime.db.agg_markers.count_documents({"contact_id": erased}) == 0
