"""The sender's view of campaigns, written by its campaigns.events handlers,
against the real FerretDB."""
from __future__ import annotations

from services.sender import handlers
from services.sender.store import CampaignStore
from shared.events import new_event

ACCOUNT, CAMPAIGN = "a" * 32, "c" * 32


def _launched() -> object:
    data = {"campaign_id": CAMPAIGN, "name": "Launch order",
            "template": {"version": 1, "subject": "Hi", "html": "<p>Hi</p>", "text": "Hi",
                         "links": []},
            "sender": {"from_email": "news@sandesh.test", "sending_domain": "sandesh.test"},
            "audience": {"list_ids": []}, "limits": {}, "tracking": True,
            "postal_address": "1 Test Street", "kind": "marketing"}
    return new_event("campaign.launched", source="campaigns", subject=CAMPAIGN,
                     account_id=ACCOUNT, data=data)


def test_a_campaign_looked_up_before_its_launch_is_known_once_the_launch_is_written(mongo_db):
    # Its jobs can come before campaign.launched (Kafka keeps no order across
    # topics): "not known" must not be remembered, or they wait out the cache.
    store = CampaignStore(mongo_db, cache_seconds=3600)
    assert store.get_many([CAMPAIGN]) == {CAMPAIGN: None}
    handlers.campaign_handlers(store)["campaign.launched"](_launched())
    campaign = store.get_many([CAMPAIGN])[CAMPAIGN]
    assert campaign is not None and campaign.account_id == ACCOUNT
    assert campaign.status == "sending"


def test_a_known_campaign_is_cached_for_its_time(mongo_db):
    store = CampaignStore(mongo_db, cache_seconds=3600)
    table = handlers.campaign_handlers(store)
    table["campaign.launched"](_launched())
    assert store.get_many([CAMPAIGN])[CAMPAIGN].status == "sending"
    table["campaign.paused"](new_event("campaign.paused", source="campaigns", subject=CAMPAIGN,
                                       account_id=ACCOUNT, data={"campaign_id": CAMPAIGN}))
    assert store.get_many([CAMPAIGN])[CAMPAIGN].status == "sending"   # the cached view
    assert CampaignStore(mongo_db).get_many([CAMPAIGN])[CAMPAIGN].status == "paused"


def _control(kind: str, version: int | None) -> object:
    data = {"campaign_id": CAMPAIGN, **({"version": version} if version else {})}
    return new_event(f"campaign.{kind}", source="campaigns", subject=CAMPAIGN,
                     account_id=ACCOUNT, data=data)


def test_a_pause_or_resume_older_than_the_last_applied_is_dropped(mongo_db):
    """The campaigns sweep publishes a staged pause again (its first flush
    failed) after the user has resumed: applied as it came, the senders
    parked every job of a campaign that says "sending", for good."""
    table = handlers.campaign_handlers(CampaignStore(mongo_db))

    def status() -> str:
        return CampaignStore(mongo_db).get_many([CAMPAIGN])[CAMPAIGN].status

    table["campaign.launched"](_launched())
    table["campaign.paused"](_control("paused", 1))
    table["campaign.resumed"](_control("resumed", 2))
    table["campaign.paused"](_control("paused", 1))      # the sweep's copy, late
    assert status() == "sending"
    table["campaign.paused"](_control("paused", 3))
    table["campaign.resumed"](_control("resumed", 2))    # late again
    assert status() == "paused"
    table["campaign.resumed"](_control("resumed", None))  # published before versions
    assert status() == "sending"
    table["campaign.cancelled"](_control("cancelled", None))
    table["campaign.resumed"](_control("resumed", 9))
    assert status() == "cancelled"


def test_a_pause_before_the_launch_keeps_its_version(mongo_db):
    table = handlers.campaign_handlers(CampaignStore(mongo_db))
    table["campaign.paused"](_control("paused", 3))
    table["campaign.launched"](_launched())              # published again, late
    table["campaign.resumed"](_control("resumed", 2))
    assert CampaignStore(mongo_db).get_many([CAMPAIGN])[CAMPAIGN].status == "paused"
