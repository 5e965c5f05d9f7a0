"""The campaigns service's answer to data-subject requests (privacy.requested).

Campaigns holds nothing about a contact (job states by job id; test-send
addresses are never stored), so contact and user requests are not its
business and get no answer: the privacy service does not wait for one.
An account's erasure is: its templates (every version), campaigns,
progress counters, counted job outcomes, leases and staged events are deleted.
"""
from __future__ import annotations

from shared.erased_accounts import ErasedAccounts
from shared.mongo import delete_all
from shared.privacy_answers import answer

SERVICE = "campaigns"
LEASED_STEPS = ("launch", "complete", "expire", "control")  # usecases: take_lease(f"{campaign id}:{step}")


def erase_account(db, account_id: str) -> int:
    """Everything the account wrote or sent from here; returns how many
    campaigns went. The account is noted first: its delivery events still
    in flight are not counted (see shared/erased_accounts.py)."""
    ErasedAccounts(db).mark(account_id)
    campaign_ids = [c["_id"] for c in db["campaigns"].find({"account_id": account_id}, {"_id": 1})]
    if campaign_ids:
        delete_all(db["job_outcomes"], {"campaign_id": {"$in": campaign_ids}})
        delete_all(db["progress"], {"campaign_id": {"$in": campaign_ids}})
        leases = [f"{campaign_id}:{step}" for campaign_id in campaign_ids
                  for step in LEASED_STEPS]
        # Era leases (store.take_lease), and those written by _id before them.
        delete_all(db["leases"], {"$or": [{"lease": {"$in": leases}},
                                          {"_id": {"$in": leases}}]})
    delete_all(db["outbox"], {"account_id": account_id})  # events staged, not yet published
    delete_all(db["test_sends"], {"account_id": account_id})
    delete_all(db["progress"], {"account_id": account_id})
    delete_all(db["template_versions"], {"account_id": account_id})
    delete_all(db["templates"], {"account_id": account_id})
    delete_all(db["campaigns"], {"account_id": account_id})
    return len(campaign_ids)


def handle_privacy_request(db, producer, event) -> None:
    data = event.data
    if data["subject"]["kind"] != "account" or data["kind"] != "erasure":
        return
    erased = erase_account(db, event.account_id)
    answer(producer, event, SERVICE, "done", detail=f"{erased} campaign(s) and every template deleted")
