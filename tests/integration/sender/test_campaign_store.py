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
