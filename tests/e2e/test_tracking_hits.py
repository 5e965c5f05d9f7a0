"""Through the real stack: the public tracking service (gunicorn, port 8081),
Kafka, the tracking worker, FerretDB, and the stats through the gateway.

Hits use tokens signed with the stack's keys for a fresh account and a
campaign tracking has not seen (tokens carry the whole context, so a hit is
recorded before anything else is known)."""
from __future__ import annotations

import json
import uuid

import pytest
import requests

from shared import topics
from shared import tracking_tokens as tt
from tests.e2e.tracking_helpers import new_account, operator_token, poll
from tests.integration.tracking.tail import Tail
from tests.unit.tracking import samples

pytestmark = pytest.mark.stack
CHROME = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.4 Safari/605.1.15")


@pytest.fixture
def stack(stack_env):
    return {"gateway": stack_env["SANDESH_GATEWAY_URL"],
            "tracking": stack_env.get("SANDESH_PUBLIC_TRACKING_URL", "http://127.0.0.1:8081"),
            "ring": tt.Keyring.from_env(stack_env["SANDESH_TRACKING_KEYS"]),
            "webhook": stack_env.get("SANDESH_BOUNCE_WEBHOOK_TOKEN", ""),
            "operator": operator_token(stack_env)}


def test_hits_unsubscribe_and_bounce_become_stats_and_pseudonymous_events(stack, kafka_bootstrap):
    account, key = new_account(stack["gateway"], stack["operator"], "tracking e2e")
    campaign = uuid.uuid4().hex
    people = [tt.LinkContext(account, campaign, uuid.uuid4().hex, uuid.uuid4().hex)
              for _ in range(3)]
    ring, base = stack["ring"], stack["tracking"]
    tail = Tail(kafka_bootstrap, topics.TRACKING_EVENTS)
    try:
        session = requests.Session()
        # person 0 opens twice, person 1 once; a security scanner HEADs person 2's pixel
        for ctx in (people[0], people[0], people[1]):
            pixel = session.get(tt.open_url(base, ring, ctx), headers={"User-Agent": CHROME})
            assert pixel.status_code == 200 and pixel.headers["Content-Type"] == "image/gif"
        session.head(tt.open_url(base, ring, people[2]), headers={"User-Agent": CHROME})
        # person 1 unsubscribes in one click (RFC 8058), twice: idempotent
        for _ in range(2):
            one_click = session.post(tt.unsubscribe_url(base, ring, people[1]),
                                     data={"List-Unsubscribe": "One-Click"})
            assert one_click.status_code == 200 and "Set-Cookie" not in one_click.headers
        # person 2's mailbox does not exist (a DSN quoting the original headers)
        if stack["webhook"]:
            bounce = session.post(
                f"{base}/t/bounces",
                data=samples.outlook_hard_bounce(tt.verp_address(ring, people[2], "b.example"),
                                                 tt.unsubscribe_url(base, ring, people[2])),
                headers={"Authorization": f"Bearer {stack['webhook']}",
                         "Content-Type": "message/rfc822"})
            assert bounce.status_code == 202, bounce.text

        def stats():
            response = requests.get(f"{stack['gateway']}/api/v1/campaigns/{campaign}/stats",
                                    headers={"Authorization": f"Bearer {key}"}, timeout=20)
            return response.json() if response.status_code == 200 else {}

        expected_bounces = 1 if stack["webhook"] else 0
        body = poll(stats, lambda s: s.get("unsubscribes") == 1
                    and s.get("opens", {}).get("total_machine") == 1
                    and s.get("opens", {}).get("total_human") == 3
                    and s.get("bounced", {}).get("hard") == expected_bounces)
        assert body["opens"] == {"unique_human": 2, "total_human": 3, "unique_machine": 1,
                                 "total_machine": 1}
        assert body["unsubscribes"] == 1
        assert body["bounced"]["hard"] == expected_bounces

        # Another account cannot read these stats.
        _, other_key = new_account(stack["gateway"], stack["operator"], "someone else")
        other = requests.get(f"{stack['gateway']}/api/v1/campaigns/{campaign}/stats",
                             headers={"Authorization": f"Bearer {other_key}"}, timeout=20)
        assert other.status_code == 404

        # What tracking produced for analytics: ids, UA family, /24 at most.
        mine = tail.wait_for(lambda e: e["data"].get("campaign_id") == campaign,
                             count=5 + expected_bounces)
        assert {e["type"] for e in mine} >= {"tracking.opened", "tracking.unsubscribed"}
        text = json.dumps(mine)
        assert "@" not in text and "gone.person" not in text and "Safari/605" not in text
    finally:
        tail.close()


def test_tampered_links_are_plain_404s_never_redirects(stack):
    ctx = tt.LinkContext(*(uuid.uuid4().hex for _ in range(4)))
    good = tt.click_token(stack["ring"], ctx, 0)
    for token in (good[:-4] + "AAAA", good[:60], "x", good + "A"):
        response = requests.get(f"{stack['tracking']}/t/c/{token}?next=https://evil.example",
                                allow_redirects=False, timeout=10)
        assert response.status_code == 404 and "Location" not in response.headers
        page = requests.get(f"{stack['tracking']}/u/{token}", allow_redirects=False, timeout=10)
        assert page.status_code == 404 and "Location" not in page.headers
