"""A campaign left paused past the pause limit is cancelled, and the jobs the
senders parked for it (which hold the recipients' addresses) are released as
skipped: nothing more is sent and nothing stays parked."""
import uuid

from pymongo import MongoClient

from tests.e2e.test_send_path import (addresses, extra_campaigns_worker,  # noqa: F401
                                      gateway, paused_campaign, received, wait_for)

LIMIT_HOURS = 0.003  # about 11 s


def test_a_campaign_paused_past_the_limit_is_cancelled_and_its_parked_jobs_released(  # noqa: F811
        gateway, stack_env):
    # The stack's own worker keeps the default limit (7 days); this one
    # applies a short one to every paused campaign.
    with extra_campaigns_worker(stack_env,
                                SANDESH_CAMPAIGNS_PAUSE_LIMIT_HOURS=str(LIMIT_HOURS)):
        marker = uuid.uuid4().hex[:10]
        rows = [(a, "L") for a in addresses(marker, 300)]
        campaign_id, paused = paused_campaign(gateway, stack_env, marker, "pause-limit", rows)
        assert paused["status"] == "paused" and paused["paused_at"]

        done = wait_for(gateway, campaign_id, ("cancelled",),
                        until=lambda c: c["progress"]["audience_size"] is not None
                        and c["progress"]["queued"] == 0, timeout=300)
        assert done["cancel_reason"] == f"paused past the {LIMIT_HOURS:g}-hour limit"
        progress = done["progress"]
        assert progress["skipped"] > 0
        assert progress["sent"] + progress["skipped"] == len(rows), progress
        assert len(received(stack_env, marker)) == progress["sent"] < len(rows)
        with MongoClient(stack_env["SANDESH_MONGO_URI"]) as client:
            sender_db = client[stack_env.get("SANDESH_MONGO_DB_PREFIX", "sandesh_") + "sender"]
            assert sender_db.parked_jobs.count_documents({"campaign_id": campaign_id}) == 0
