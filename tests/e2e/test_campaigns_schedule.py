"""A scheduled campaign fires once with two campaigns worker processes."""
import time
import uuid
from datetime import datetime, timedelta, timezone

from shared import topics
from shared.events import decode
from tests.e2e.test_send_path import (addresses, by_recipient,  # noqa: F401
                                      extra_campaigns_worker, gateway, import_contacts,
                                      make_campaign, make_list, received, wait_for)
from tests.kafka_reader import TopicReader


def events_keyed(bootstrap: str, topic: str, key: str, timeout: float = 120) -> list:
    """Every event on `topic` with this key, from the beginning up to the end
    offsets as they are now."""
    with TopicReader(bootstrap, topic, decode=lambda value: value) as reader:
        reader.read(timeout=timeout)
        return [decode(r.value) for r in reader.records if r.key == key.encode()]


def test_a_schedule_fires_once_with_two_workers(gateway, stack_env):  # noqa: F811
    with extra_campaigns_worker(stack_env):
        marker = uuid.uuid4().hex[:10]
        rows = [(a, "S") for a in addresses(marker, 50)]
        list_id = make_list(gateway, "scheduled")
        import_contacts(gateway, list_id, rows)
        campaign_id = make_campaign(gateway, stack_env, [list_id])
        send_at = (datetime.now(timezone.utc) + timedelta(seconds=8)).astimezone()
        scheduled = gateway.call("POST", f"/campaigns/{campaign_id}/schedule",
                                 json={"send_at": send_at.isoformat()})
        assert scheduled["status"] == "scheduled"
        done = wait_for(gateway, campaign_id, timeout=300)
        assert done["progress"]["audience_size"] == len(rows)
        # The job-id dedup downstream would hide a second launch: count the
        # launches themselves (an outbox re-publish keeps its event id).
        launches = [e for e in events_keyed(stack_env["SANDESH_KAFKA_BOOTSTRAP"],
                                            topics.CAMPAIGNS_EVENTS, campaign_id)
                    if e.type == "campaign.launched"]
        assert len({e.id for e in launches}) == 1, [(e.id, e.source, e.time) for e in launches]
        time.sleep(3)
        got = by_recipient(received(stack_env, marker))
        assert set(got) == {a for a, _ in rows} and all(len(v) == 1 for v in got.values())
