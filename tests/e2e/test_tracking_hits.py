"""Through the real stack: the public tracking service (gunicorn, port 8081),
Kafka, the tracking worker, FerretDB, and the stats through the gateway.

The first test's hits use tokens signed with the stack's keys for a fresh
account and a campaign tracking has not seen (tokens carry the whole context,
so a hit is recorded before anything else is known); the tampering test uses
a campaign really sent, whose link table tracking has."""
from __future__ import annotations

import base64
import dataclasses
import json
import uuid

import pytest
import requests

from shared import topics
from shared import tracking_tokens as tt
from tests.e2e.test_send_path import gateway  # noqa: F401  (a fresh account's API)
from tests.e2e.tracking_helpers import (new_account, one_click_url, operator_token, poll,
                                        sent_campaign, tracking_urls)
from tests.kafka_reader import TopicReader
from tests.tampering import with_end_replaced
from tests.unit.tracking import samples

pytestmark = pytest.mark.stack
CHROME = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.4 Safari/605.1.15")
OFFER = "https://example.com/offer"  # the one link of test_send_path's template


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
    tail = TopicReader(kafka_bootstrap, topics.TRACKING_EVENTS, since="now")
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


def flipped_tokens(token: str):
    """The token with each of its bytes flipped in turn (base64url, canonical)."""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for position in range(len(raw)):
        forged = bytearray(raw)
        forged[position] ^= 0x01
        yield base64.urlsafe_b64encode(bytes(forged)).rstrip(b"=").decode()


def cut(token: str) -> list[str]:
    """Truncated, extended, or with its MAC's end replaced."""
    return [with_end_replaced(token, 4), token[:60], "x", token + "A", token[:-1]]


def test_tampered_links_are_plain_404s_never_redirects(stack, gateway, stack_env):
    # A campaign tracking knows (its link table came with campaign.launched),
    # so a 404 below is the token's fault, not an unknown campaign's.
    _, _, inbox = sent_campaign(gateway, stack_env, 1)
    [message] = inbox.values()
    [click] = tracking_urls(message, "/t/c/")
    base, good = click.rsplit("/", 1)
    genuine = requests.get(click + "?next=https://evil.example", allow_redirects=False,
                           timeout=10)
    assert (genuine.status_code, genuine.headers.get("Location")) == (302, OFFER)
    unsubscribe_base, good_unsubscribe = one_click_url(message).rsplit("/", 1)
    assert requests.get(f"{unsubscribe_base}/{good_unsubscribe}", timeout=10).status_code == 200

    ctx = tt.verify(stack["ring"], good).context
    signed_but_wrong = [  # a link index the template lacks; another account's campaign
        tt.click_token(stack["ring"], ctx, 1),
        tt.click_token(stack["ring"], dataclasses.replace(ctx, account_id=uuid.uuid4().hex), 0),
    ]
    for token in [*flipped_tokens(good), *cut(good), *signed_but_wrong]:
        response = requests.get(f"{base}/{token}?next=https://evil.example",
                                allow_redirects=False, timeout=10)
        assert response.status_code == 404 and "Location" not in response.headers, token
        assert response.headers["Content-Type"].startswith("text/html")
    # a click token is not an unsubscribe token either
    for token in [*flipped_tokens(good_unsubscribe), *cut(good_unsubscribe), good]:
        page = requests.get(f"{unsubscribe_base}/{token}", allow_redirects=False, timeout=10)
        assert page.status_code == 404 and "Location" not in page.headers, token
