"""Tracking with a real campaign: the links people act on are the ones the
stack's sender put in the messages the SMTP sink received, and the
actions go over HTTP to the running tracking service.

Uses the send path's helpers (fresh account, list, CSV import, campaign,
the sink's Maildir) from test_send_path.py.
"""
from __future__ import annotations

import re
import uuid

import pytest
import requests

from tests.e2e.test_send_path import (addresses, gateway, import_contacts,  # noqa: F401
                                      make_campaign, make_list, received, wait_for)
from tests.e2e.tracking_helpers import poll

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def campaign_messages(stack_env, marker: str, campaign_id: str) -> dict[str, list]:
    """The sink's messages of one campaign (its Feedback-ID), by recipient."""
    found: dict[str, list] = {}
    for message in received(stack_env, marker):
        if (message["Feedback-ID"] or "").startswith(campaign_id + ":"):
            found.setdefault(message["X-Sink-Rcpt-To"].strip(), []).append(message)
    return found


def one_click_url(message) -> str:
    """The http(s) URL of List-Unsubscribe (the other one is mailto:)."""
    [url] = re.findall(r"<(https?://[^>]+)>", message["List-Unsubscribe"])
    return url


def list_status(gw, address: str, list_id: str) -> str | None:
    found = gw.call("GET", "/contacts", params={"email_prefix": address})["items"]
    return found[0]["lists"].get(list_id, {}).get("status") if found else None


def test_one_click_unsubscribe_over_http_stops_the_next_campaign_for_that_contact_only(
        gateway, stack_env):  # noqa: F811
    marker = uuid.uuid4().hex[:10]
    people = addresses(marker, 5)
    leaver = people[0]
    list_id = make_list(gateway, "one-click")
    import_contacts(gateway, list_id, [(address, "Reader") for address in people])

    first = make_campaign(gateway, stack_env, [list_id])
    gateway.call("POST", f"/campaigns/{first}/send")
    wait_for(gateway, first, timeout=300)
    inbox = campaign_messages(stack_env, marker, first)
    assert set(inbox) == set(people)

    # What a mailbox provider does for RFC 8058: POST to the header's URL,
    # no cookie, no page, no JavaScript.
    url = one_click_url(inbox[leaver][0])
    answer = requests.post(url, data=ONE_CLICK, allow_redirects=False, timeout=30)
    assert answer.status_code == 200, answer.text
    assert "Set-Cookie" not in answer.headers
    status = poll(lambda: list_status(gateway, leaver, list_id),
                  lambda s: s == "unsubscribed", timeout=120)
    assert status == "unsubscribed"
    assert all(list_status(gateway, a, list_id) == "subscribed" for a in people[1:])

    second = make_campaign(gateway, stack_env, [list_id])
    gateway.call("POST", f"/campaigns/{second}/send")
    done = wait_for(gateway, second, timeout=300)
    assert done["progress"]["sent"] == len(people) - 1
    later = campaign_messages(stack_env, marker, second)
    assert set(later) == set(people[1:])
    assert all(len(copies) == 1 for copies in later.values())
    assert leaver not in later
    assert len(received(stack_env, leaver)) == 1  # the first campaign's message, nothing more
