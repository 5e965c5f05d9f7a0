"""A contact corrected while its campaign's job waits (paused, parked) gets
the message as it is now: the corrected address and not the old one, the
corrected name in the subject; through the API and through a privacy
rectification alike. Nobody else's message changes, and nobody gets two."""
import time
import uuid

from tests.e2e.test_privacy_erasure import request_and_wait
from tests.e2e.test_send_path import (addresses, by_recipient, find_contact,  # noqa: F401
                                      gateway, paused_campaign, received, wait_for)


def test_corrections_made_while_a_campaign_is_paused_are_what_goes_out(gateway,  # noqa: F811
                                                                       stack_env):
    marker = uuid.uuid4().hex[:10]
    rows = [(a, "Before") for a in addresses(marker, 300)]
    campaign_id, _ = paused_campaign(gateway, stack_env, marker, "corrected", rows)
    time.sleep(5)  # what was in flight at the pause lands
    landed = by_recipient(received(stack_env, marker))
    waiting = [a for a, _ in rows if a not in landed]
    assert len(waiting) > 100
    moved, renamed, rectified = waiting[-1], waiting[-2], waiting[-3]
    new_address = f"moved.{marker}@e2e.example.com"
    gateway.call("PATCH", f"/contacts/{find_contact(gateway, moved)['id']}",
                 json={"email": new_address})
    gateway.call("PATCH", f"/contacts/{find_contact(gateway, renamed)['id']}",
                 json={"name": "After"})
    request_and_wait(gateway, {"kind": "rectification", "subject": {"email": rectified},
                               "changes": {"name": "Rectified"}})

    gateway.call("POST", f"/campaigns/{campaign_id}/resume", json=None)
    done = wait_for(gateway, campaign_id, timeout=300)
    got = by_recipient(received(stack_env, marker))
    assert moved not in got
    assert [m["Subject"] for m in got[new_address]] == ["Hello Before"]
    assert [m["Subject"] for m in got[renamed]] == ["Hello After"]
    assert [m["Subject"] for m in got[rectified]] == ["Hello Rectified"]
    others = {a for a, _ in rows} - {moved}
    assert set(got) == others | {new_address}
    assert all(len(messages) == 1 for messages in got.values())
    assert done["progress"]["sent"] == len(rows)
