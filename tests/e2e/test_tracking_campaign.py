"""Tracking with a real campaign: the links people act on are the ones the
stack's sender put in the messages the SMTP sink received, and the
actions go over HTTP to the running tracking service."""
from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
import requests

from shared import topics
from tests.e2e.test_send_path import gateway  # noqa: F401  (a fresh account's API)
from tests.e2e.test_send_path import received
from tests.e2e.tracking_helpers import (Replay, one_click_url, poll, send_and_wait,
                                        sent_campaign, tracking_urls)
from tests.unit.tracking import samples

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
BROWSER = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/124.0 Safari/537.36")
# The second is a personal link: one index, each reader's own URL.
LINKS = ["https://shop.example/spring", "https://shop.example/about?reader={{ email }}"]


def list_status(gw, address: str, list_id: str) -> str | None:
    found = gw.call("GET", "/contacts", params={"email_prefix": address})["items"]
    return found[0]["lists"].get(list_id, {}).get("status") if found else None


def test_one_click_unsubscribe_over_http_stops_the_next_campaign_for_that_contact_only(
        gateway, stack_env):  # noqa: F811
    list_id, _, inbox = sent_campaign(gateway, stack_env, 5)
    people = sorted(inbox)
    leaver = people[0]

    # What a mailbox provider does for RFC 8058: POST to the header's URL,
    # no cookie, no page, no JavaScript.
    answer = requests.post(one_click_url(inbox[leaver]), data=ONE_CLICK,
                           allow_redirects=False, timeout=30)
    assert answer.status_code == 200, answer.text
    assert "Set-Cookie" not in answer.headers
    status = poll(lambda: list_status(gateway, leaver, list_id),
                  lambda s: s == "unsubscribed", timeout=120)
    assert status == "unsubscribed"
    assert all(list_status(gateway, a, list_id) == "subscribed" for a in people[1:])

    second = send_and_wait(gateway, stack_env, list_id)
    assert gateway.call("GET", f"/campaigns/{second}")["progress"]["sent"] == len(people) - 1
    later = {message["X-Sink-Rcpt-To"].strip() for address in people
             for message in received(stack_env, address)
             if message["Feedback-ID"].startswith(second + ":")}
    assert later == set(people[1:])
    assert len(received(stack_env, leaver)) == 1  # the first campaign's message, nothing more


def stats_of(gw, campaign_id: str) -> dict:
    return gw.call("GET", f"/campaigns/{campaign_id}/stats", expect=(200, 404)) or {}


def event_time(record) -> float:
    return datetime.fromisoformat(json.loads(record.value)["time"].replace("Z", "+00:00")).timestamp()


def test_stats_equal_the_sink_and_the_actions_and_stay_so_after_every_event_is_redelivered(
        gateway, stack_env, kafka_bootstrap):  # noqa: F811
    template = gateway.call("POST", "/templates", json={
        "name": "Two links", "subject": "Spring",
        "html": "".join(f'<p><a href="{url}">link {i}</a></p>' for i, url in enumerate(LINKS))})
    replay = Replay(kafka_bootstrap, [topics.DELIVERY_EVENTS, topics.TRACKING_EVENTS])
    try:
        _, campaign_id, inbox = sent_campaign(gateway, stack_env, 6, template_id=template["id"])

        def ours(event):
            return event["data"].get("campaign_id") == campaign_id

        # Hits within SANDESH_MACHINE_HIT_SECONDS of delivery are a scanner's
        # (rule 5): the people below act after that, as people do.
        delivered_at = max(event_time(r) for r in replay.records(ours))
        settle = float(stack_env.get("SANDESH_MACHINE_HIT_SECONDS", "10")) + 1
        time.sleep(max(0.0, delivered_at + settle - time.time()))

        web = requests.Session()
        web.headers["User-Agent"] = BROWSER
        opener, clicker, scanned, leaver, bounced, complainer = sorted(inbox)
        for address in (opener, opener, clicker):
            [pixel] = tracking_urls(inbox[address], "/t/o/")
            assert web.get(pixel, timeout=30).status_code == 200
        [pixel] = tracking_urls(inbox[scanned], "/t/o/")
        assert web.head(pixel, timeout=30).status_code == 200       # a scanner's HEAD
        for address, index in ((opener, 0), (clicker, 1)):
            link = tracking_urls(inbox[address], "/t/c/")[index]
            click = web.get(link, allow_redirects=False, timeout=30)
            assert (click.status_code, click.headers.get("Location")) == \
                (302, LINKS[index].replace("{{ email }}", address))
        assert requests.post(one_click_url(inbox[leaver]), data=ONE_CLICK,
                             timeout=30).status_code == 200
        hook = {"Authorization": f"Bearer {stack_env['SANDESH_BOUNCE_WEBHOOK_TOKEN']}",
                "Content-Type": "message/rfc822"}
        for address, report in ((bounced, samples.outlook_hard_bounce),
                                (complainer, samples.yahoo_arf_complaint)):
            message = inbox[address]
            raw = report(message["X-Sink-Mail-From"].strip(), one_click_url(message))
            answer = requests.post(f"{stack_env['SANDESH_PUBLIC_TRACKING_URL']}/t/bounces",
                                   data=raw, headers=hook, timeout=30)
            assert answer.status_code == 202, answer.text

        expected = {
            "sent": len(inbox), "delivered": len(inbox) - 1, "failed": 0,
            "bounced": {"hard": 1, "soft": 0, "total": 1},
            "opens": {"unique_human": 2, "total_human": 3, "unique_machine": 1,
                      "total_machine": 1},
            "clicks": {"unique_human": 2, "total_human": 2, "unique_machine": 0,
                       "total_machine": 0},
            "unsubscribes": 1, "complaints": 1}
        person = {"unique_human": 1, "total_human": 1, "unique_machine": 0, "total_machine": 0}
        expected_links = [{"index": i, "url": url, **person} for i, url in enumerate(LINKS)]

        hourly_expected = {"sent": len(inbox), "bounced_hard": 1, "opens_total_human": 3,
                           "opens_total_machine": 1, "clicks_total_human": 2,
                           "unsubscribes": 1, "complaints": 1}

        def counted(body):
            # The totals and the hourly series are separate writes of one
            # batch: wait until both show every action, so that `before` is
            # not read between them.
            hourly = {name: sum(h.get(name, 0) for h in body.get("hourly", []))
                      for name in hourly_expected}
            return {name: body.get(name) for name in expected} == expected \
                and hourly == hourly_expected

        before = poll(lambda: stats_of(gateway, campaign_id), counted, timeout=180)
        assert {name: before.get(name) for name in expected} == expected
        assert before["links"] == expected_links

        # Every event of the campaign, on both streams, delivered once more.
        events = replay.records(ours)
        assert {json.loads(r.value)["type"] for r in events} >= {
            "delivery.sent", "tracking.opened", "tracking.clicked", "tracking.unsubscribed",
            "tracking.bounced", "tracking.complained"}
        replay.wait_consumed("tracking", replay.publish_again(events))

        assert stats_of(gateway, campaign_id) == before
    finally:
        replay.close()
