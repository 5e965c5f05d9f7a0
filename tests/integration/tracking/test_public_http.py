"""The public endpoints in-process (the app as gunicorn runs it, hot path
included) against the real FerretDB and Kafka: what they answer and what they
put on tracking.events."""
from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from gunicorn.http import wsgi as gunicorn_wsgi

from services.tracking import privacy as tracking_privacy
from services.tracking import usecases
from services.tracking.app import create_app
from services.tracking.store import TrackingStore
from shared import mongo, topics
from shared.erased_accounts import ErasedAccounts
from shared import tracking_tokens as tt
from tests.e2e.tracking_helpers import poll
from tests.kafka_reader import TopicReader
from tests.tampering import with_end_replaced
from tests.unit.tracking import samples

KEYS = "k2:" + base64.b64encode(b"k" * 32).decode() + ",k1:" + base64.b64encode(b"o" * 32).decode()
RING = tt.Keyring.from_env(KEYS)
OLD_RING = tt.Keyring.from_env("k1:" + base64.b64encode(b"o" * 32).decode())
WEBHOOK = "hook-secret-for-tests"
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/124.0 Safari/537.36")
LINKS = ["https://shop.example/sale?a=1", "https://shop.example/about", "javascript:alert(1)",
         "https://shop.example/me?id={{ fields.id }}"]


@pytest.fixture
def app(mongo_uri, kafka_bootstrap, unique, request):
    prefix = f"test_{unique}_"
    application = create_app({
        "SANDESH_MONGO_URI": mongo_uri, "SANDESH_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "SANDESH_MONGO_DB_PREFIX": prefix, "SANDESH_TRACKING_KEYS": KEYS,
        "SANDESH_BOUNCE_WEBHOOK_TOKEN": WEBHOOK, "SANDESH_SOFT_BOUNCE_LIMIT": "2",
        "SANDESH_INTERNAL_SECRET": "s", **getattr(request, "param", {})})
    yield application
    mongo.client(mongo_uri).drop_database(prefix + "tracking")


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def store(app):
    return TrackingStore(app.extensions["runtime"].db)


@pytest.fixture
def ctx(store):
    c = tt.LinkContext(*(uuid.uuid4().hex for _ in range(4)))
    store.save_campaign(c.campaign_id, c.account_id, LINKS, datetime.now(timezone.utc))
    return c


@pytest.fixture
def tail(kafka_bootstrap):
    t = TopicReader(kafka_bootstrap, topics.TRACKING_EVENTS, since="now")
    yield t
    t.close()


def of(ctx, type_):
    return lambda e: e["type"] == type_ and e["data"].get("job_id") == ctx.job_id


def assert_pseudonymous(events, *forbidden):
    text = json.dumps(events)
    assert "@" not in text
    for word in forbidden:
        assert word not in text


# ------------------------------------------------------------------ open

def test_open_pixel_answers_a_gif_and_emits_a_pseudonymous_event(client, ctx, tail):
    ua = CHROME + " (jane.doe@example.com Jane Doe)"  # a UA must never leak as such
    response = client.get(f"/t/o/{tt.open_token(RING, ctx)}",
                          headers={"User-Agent": ua}, environ_base={"REMOTE_ADDR": "203.0.113.77"})
    assert response.status_code == 200
    assert response.mimetype == "image/gif" and response.data.startswith(b"GIF89a")
    assert "no-store" in response.headers["Cache-Control"]
    [event] = tail.wait_for(of(ctx, "tracking.opened"))
    assert event["accountid"] == ctx.account_id
    assert event["data"] == {"campaign_id": ctx.campaign_id, "contact_id": ctx.contact_id,
                             "job_id": ctx.job_id, "machine": False,
                             "user_agent_family": "chrome", "ip_prefix": "203.0.113.0/24"}
    assert_pseudonymous([event], "Jane", "Doe", "203.0.113.77")


@pytest.mark.parametrize("app", [{"SANDESH_TRUSTED_PROXY_HOPS": "1"}], indirect=True)
def test_behind_the_ingress_the_client_is_read_from_x_forwarded_for(client, ctx, tail):
    """The peer is the ingress controller: Apple's privacy proxy went
    unrecognised (its opens counted as people) and every ip_prefix was the
    cluster's network."""
    client.get(f"/t/o/{tt.open_token(RING, ctx)}",
               headers={"User-Agent": "Mozilla/5.0", "X-Forwarded-For": "198.51.100.9, 17.58.101.3"},
               environ_base={"REMOTE_ADDR": "10.244.2.5"})
    [event] = tail.wait_for(of(ctx, "tracking.opened"))
    assert event["data"]["ip_prefix"] == "17.58.101.0/24"  # the hop the ingress added
    assert event["data"]["machine_reason"] == "apple-privacy-proxy"


def test_without_trusted_proxies_a_forwarded_for_header_is_ignored(client, ctx, tail):
    client.get(f"/t/o/{tt.open_token(RING, ctx)}",
               headers={"User-Agent": CHROME, "X-Forwarded-For": "17.58.101.3"},
               environ_base={"REMOTE_ADDR": "203.0.113.77"})
    [event] = tail.wait_for(of(ctx, "tracking.opened"))
    assert event["data"]["ip_prefix"] == "203.0.113.0/24" and event["data"]["machine"] is False


def test_open_pixel_with_a_bad_token_still_answers_but_records_nothing(client, ctx, tail):
    token = tt.open_token(RING, ctx)
    response = client.get(f"/t/o/{with_end_replaced(token, 3)}")
    assert response.status_code == 200 and response.mimetype == "image/gif"
    client.get(f"/t/o/{tt.open_token(RING, ctx)}", headers={"User-Agent": CHROME})
    events = tail.wait_for(of(ctx, "tracking.opened"))
    assert len(events) == 1  # only the genuine one


def test_made_up_methods_share_one_metrics_label(client, ctx):
    """gunicorn takes any 3-20 letter method; each one was a series for good."""
    from prometheus_client import REGISTRY
    token = tt.open_token(RING, ctx)
    for method in ("BREWA", "BREWB", "BREWC"):
        assert client.open(f"/t/o/{token}", method=method).status_code == 405
    client.open("/healthz", method="BREWD")  # a Flask route (shared/http/app.py)
    labels = {s.labels["method"] for metric in REGISTRY.collect()
              if metric.name == "sandesh_http_requests" for s in metric.samples}
    assert "other" in labels and not {m for m in labels if m.startswith("BREW")}


def test_head_and_scanner_hits_are_machine(client, ctx, tail):
    client.head(f"/t/o/{tt.open_token(RING, ctx)}", headers={"User-Agent": CHROME})
    client.get(f"/t/c/{tt.click_token(RING, ctx, 0)}",
               headers={"User-Agent": "Barracuda Sentinel (EE)"})
    events = tail.wait_for(lambda e: e["data"].get("job_id") == ctx.job_id, count=2)
    reasons = sorted(e["data"]["machine_reason"] for e in events)
    assert reasons == ["head-request", "scanner:barracuda"]
    assert all(e["data"]["machine"] for e in events)


# ----------------------------------------------------------------- click

def test_click_redirects_to_the_stored_url_and_emits_the_link_index(client, ctx, tail):
    response = client.get(f"/t/c/{tt.click_token(RING, ctx, 1)}", headers={"User-Agent": CHROME})
    assert response.status_code == 302
    assert response.headers["Location"] == LINKS[1]
    assert response.headers["Referrer-Policy"] == "no-referrer"
    [event] = tail.wait_for(of(ctx, "tracking.clicked"))
    assert event["data"]["link_index"] == 1 and event["data"]["machine"] is False


def test_a_personal_link_redirects_to_the_url_its_token_carries(client, ctx, tail):
    timed = tt.LinkContext(ctx.account_id, ctx.campaign_id, ctx.contact_id, ctx.job_id,
                           sent_at=int(datetime.now(timezone.utc).timestamp()) - 3600)
    mine = "https://shop.example/me?id=c-41&utm_source=mail"
    response = client.get(f"/t/c/{tt.click_token(RING, timed, 3, mine)}",
                          headers={"User-Agent": CHROME})
    assert (response.status_code, response.headers["Location"]) == (302, mine)
    [event] = tail.wait_for(of(ctx, "tracking.clicked"))
    assert event["data"]["link_index"] == 3 and "shop.example" not in json.dumps(event)
    # The campaign's list decides where a link that is not personal goes.
    stray = client.get(f"/t/c/{tt.click_token(RING, timed, 1, 'https://evil.example/')}")
    assert (stray.status_code, stray.headers["Location"]) == (302, LINKS[1])
    # A URL signed by a key tracking does not hold goes nowhere.
    other_ring = tt.Keyring.from_env("k2:" + base64.b64encode(b"z" * 32).decode())
    forged = client.get(f"/t/c/{tt.click_token(other_ring, timed, 3, 'https://evil.example/')}")
    assert forged.status_code == 404 and "Location" not in forged.headers


def test_a_personal_link_whose_host_was_merge_data_redirects_nowhere(client, store):
    """A list frozen before such links went untracked: a region of
    "evil.example/?" had made a signed link to evil.example, valid for good."""
    ctx = tt.LinkContext(*(uuid.uuid4().hex for _ in range(4)),
                         sent_at=int(datetime.now(timezone.utc).timestamp()))
    store.save_campaign(ctx.campaign_id, ctx.account_id,
                        ["https://{{ fields.region }}.shop.example/deals"], datetime.now(timezone.utc))
    token = tt.click_token(RING, ctx, 0, "https://evil.example/?.shop.example/deals")
    answer = client.get(f"/t/c/{token}", headers={"User-Agent": CHROME})
    assert answer.status_code == 404 and "Location" not in answer.headers


def sent_now(**ids) -> tt.LinkContext:
    fresh = {name: uuid.uuid4().hex for name in ("account_id", "campaign_id", "contact_id", "job_id")}
    return tt.LinkContext(**{**fresh, **ids}, sent_at=int(time.time()))


def test_a_click_before_tracking_has_the_link_table_comes_back_and_then_redirects(
        client, store, tail):
    """The worker stores a campaign's links when it reads campaign.launched;
    a reader quicker than that (or a worker down) used to get a 404."""
    early = sent_now()
    token = tt.click_token(RING, early, 1)
    waiting = client.get(f"/t/c/{token}", headers={"User-Agent": CHROME})
    assert waiting.status_code == 503 and "Location" not in waiting.headers
    assert waiting.headers["Retry-After"] == "3" and waiting.headers["Cache-Control"] == "no-store"
    assert '<meta http-equiv="refresh" content="3">' in waiting.text
    assert client.head(f"/t/c/{token}").status_code == 503
    store.save_campaign(early.campaign_id, early.account_id, LINKS, datetime.now(timezone.utc))
    later = poll(lambda: client.get(f"/t/c/{token}", headers={"User-Agent": CHROME}),
                 lambda r: r.status_code != 503, timeout=10)
    assert (later.status_code, later.headers["Location"]) == (302, LINKS[1])
    # Hits keep their order on the campaign's partition: had the 503s been
    # recorded, they would be here before this one.
    [event] = tail.wait_for(of(early, "tracking.clicked"))
    assert event["data"]["link_index"] == 1


def test_a_missing_link_table_is_a_404_for_old_mail_and_deleted_accounts(client, app, ctx):
    day_old = tt.LinkContext(*(uuid.uuid4().hex for _ in range(4)),
                             sent_at=int(time.time()) - 25 * 3600)
    untimed = tt.LinkContext(*(uuid.uuid4().hex for _ in range(4)))   # version 1, before sent_at
    deleted = sent_now()
    ErasedAccounts(app.extensions["runtime"].db).mark(deleted.account_id)
    other_account = sent_now(campaign_id=ctx.campaign_id)   # tracking knows the campaign: not theirs
    for context in (day_old, untimed, deleted, other_account):
        answer = client.get(f"/t/c/{tt.click_token(RING, context, 0)}")
        assert answer.status_code == 404, context
    assert client.get(f"/t/c/{tt.click_token(RING, sent_now(), 0)}").status_code == 503


def test_link_sent_before_a_key_rotation_still_works(client, ctx):
    response = client.get(f"/t/c/{tt.click_token(OLD_RING, ctx, 0)}")
    assert response.status_code == 302 and response.headers["Location"] == LINKS[0]


def test_no_open_redirect(client, ctx, store):
    token = tt.click_token(RING, ctx, 0)
    raw = bytearray(base64.urlsafe_b64decode(token + "=="))
    forged = []
    for position in range(0, len(raw), 7):  # a byte flipped anywhere
        flipped = bytearray(raw)
        flipped[position] ^= 0x5A
        forged.append(base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=").decode())
    other = tt.LinkContext(uuid.uuid4().hex, ctx.campaign_id, ctx.contact_id, ctx.job_id)
    bad = forged + [
        token[:-1], token[:50], "", "https:%2F%2Fevil.example",
        tt.click_token(RING, ctx, 2),            # a javascript: link is never followed
        tt.click_token(RING, ctx, 4),            # no such link
        tt.click_token(RING, ctx, 3),            # a personal link's token without its URL
        tt.click_token(RING, other, 0),          # another account's campaign
        tt.open_token(RING, ctx),                # an open token is not a click token
        tt.click_token(tt.Keyring.from_env("k9:" + base64.b64encode(b"z" * 32).decode()), ctx, 0),
    ]
    for candidate in bad:
        response = client.get(f"/t/c/{candidate}?url=https://evil.example/")
        assert response.status_code == 404, candidate
        assert "Location" not in response.headers
        assert b"evil" not in response.data and response.mimetype == "text/html"


def gunicorn_sends(headers) -> bool:
    """Whether gunicorn sends these response headers as plain ASCII (it
    answers 500 for a control character, and sends others as raw bytes)."""
    request = SimpleNamespace(version=(1, 1), method="GET", headers=[], should_close=lambda: False)
    response = gunicorn_wsgi.Response(request, None, {})
    response.process_headers(list(headers))   # raises on a control character
    wire = "".join(f"{name}: {value}\r\n" for name, value in response.headers).encode("latin-1")
    return wire.isascii()   # no raw 8-bit byte either


def test_a_link_is_sent_as_the_url_a_browser_would_request(client, ctx, store, tail):
    """campaigns stores a link as the template wrote it: a wrapped attribute
    kept its line break (gunicorn refused the Location: a 500) and a
    non-ASCII character went out as a raw 8-bit byte."""
    links = ["https://shop.example/spring\n-sale", "https://example.jp/\u30bb\u30fc\u30eb",
             "https://shop.example/caf\u00e9", "https://a..\u4f8b.example/"]   # no IDNA name
    wrapped = tt.LinkContext(ctx.account_id, uuid.uuid4().hex, ctx.contact_id, ctx.job_id)
    store.save_campaign(wrapped.campaign_id, wrapped.account_id, links, datetime.now(timezone.utc))
    nowhere = client.get(f"/t/c/{tt.click_token(RING, wrapped, 3)}", headers={"User-Agent": CHROME})
    assert nowhere.status_code == 404 and "Location" not in nowhere.headers
    expected = ["https://shop.example/spring-sale",
                "https://example.jp/%E3%82%BB%E3%83%BC%E3%83%AB",
                "https://shop.example/caf%C3%A9"]
    for index, location in enumerate(expected):
        response = client.get(f"/t/c/{tt.click_token(RING, wrapped, index)}",
                              headers={"User-Agent": CHROME})
        assert (response.status_code, response.headers["Location"]) == (302, location)
        assert gunicorn_sends(response.headers.to_wsgi_list())
    events = tail.wait_for(lambda e: e["data"].get("campaign_id") == wrapped.campaign_id, count=3)
    assert sorted(e["data"]["link_index"] for e in events) == [0, 1, 2]   # none for the 404


# ----------------------------------------------------------- unsubscribe

def test_unsubscribe_page_is_a_plain_form(client, ctx):
    list_id = uuid.uuid4().hex
    response = client.get(f"/u/{tt.unsubscribe_token(RING, ctx, list_id)}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert '<form method="post"' in page and 'name="scope" value="list"' in page
    assert "<script" not in page.lower() and 'lang="en"' in page
    assert "Set-Cookie" not in response.headers


def test_tampered_unsubscribe_token_is_a_plain_404(client, ctx):
    token = tt.unsubscribe_token(RING, ctx)
    for method in (client.get, client.post):
        response = method(f"/u/{with_end_replaced(token, 2)}", data={"List-Unsubscribe": "One-Click"})
        assert response.status_code == 404 and "Location" not in response.headers


def test_one_click_unsubscribe_is_published_before_the_answer_and_idempotent(client, ctx, tail):
    url = f"/u/{tt.unsubscribe_token(RING, ctx)}"
    first = client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert first.status_code == 200 and "Set-Cookie" not in first.headers
    # Flushed before the 200: it is on the topic (tail polls, but the event is there).
    [event] = tail.wait_for(of(ctx, "tracking.unsubscribed"))
    assert event["data"]["list_id"] is None and event["data"]["method"] == "one-click"
    again = client.post(url, data={"List-Unsubscribe": "One-Click"},
                        content_type="multipart/form-data")
    assert again.status_code == 200
    events = tail.wait_for(of(ctx, "tracking.unsubscribed"), count=2)
    assert len({e["id"] for e in events}) == 1  # the same fact, the same event id
    assert_pseudonymous(events)


def test_a_test_sends_unsubscribe_link_works_and_unsubscribes_and_counts_nothing(client, ctx,
                                                                                  tail):
    """A test send goes to up to five addresses as "test-1".."test-5"; its
    unsubscribe was published and counted in the campaign's stats."""
    tester = tt.LinkContext(ctx.account_id, ctx.campaign_id, tt.stand_in_id("test-1"),
                            uuid.uuid4().hex)
    url = f"/u/{tt.unsubscribe_token(RING, tester)}"
    assert client.get(url).status_code == 200
    assert client.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    real = client.post(f"/u/{tt.unsubscribe_token(RING, ctx)}", data={"List-Unsubscribe": "One-Click"})
    assert real.status_code == 200
    tail.wait_for(of(ctx, "tracking.unsubscribed"))  # published after the tester's
    assert not [e for e in tail.events if e["data"].get("job_id") == tester.job_id]


def test_page_form_unsubscribes_from_one_list_or_everything(client, ctx, tail):
    list_id = uuid.uuid4().hex
    url = f"/u/{tt.unsubscribe_token(RING, ctx, list_id)}"
    assert client.post(url, data={"scope": "list"}).status_code == 200
    assert client.post(url, data={"scope": "all"}).status_code == 200
    events = tail.wait_for(of(ctx, "tracking.unsubscribed"), count=2)
    assert sorted(str(e["data"]["list_id"]) for e in events) == sorted([list_id, "None"])


class _KafkaRefuses:
    """The app's synchronous producer when Kafka does not take the event."""

    def __call__(self):
        return self

    def publish_now(self, topic, event, key):
        raise ConnectionError("broker unreachable")


def test_an_unsubscribe_kafka_refuses_is_parked_and_relayed_by_this_process(app, client, ctx,
                                                                            store, tail):
    """Even a process that has served no pixel or click yet (so its
    publisher thread was never started by a hit) relays what it parked."""
    app.extensions["tracking"].sync_producer = _KafkaRefuses()
    answer = client.post(f"/u/{tt.unsubscribe_token(RING, ctx)}",
                         data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    [relayed] = tail.wait_for(of(ctx, "tracking.unsubscribed"), timeout=60)
    assert relayed["data"]["method"] == "one-click"
    assert poll(store.parked_events, lambda parked: parked == []) == []


# --------------------------------------------------------------- bounces

def post_report(client, raw, token=WEBHOOK):
    return client.post("/t/bounces", data=raw, content_type="message/rfc822",
                       headers={"Authorization": f"Bearer {token}"})


def test_a_mail_to_the_mailto_unsubscribe_address_unsubscribes(client, ctx, tail):
    """List-Unsubscribe offers mailto:unsubscribe@<bounce domain>?subject=
    unsubscribe <token>; the MTA pipes it to this webhook, which dismissed
    it as no report: the recipient stayed subscribed."""
    list_id = uuid.uuid4().hex
    token = tt.unsubscribe_token(RING, ctx, list_id)
    mail = (f"From: Jane <jane@example.net>\r\nTo: unsubscribe@b.example\r\n"
            f"Subject: unsubscribe {token}\r\n\r\n").encode()
    answer = post_report(client, mail)
    assert answer.status_code == 202 and answer.get_json()["result"] == "unsubscribe"
    [event] = tail.wait_for(of(ctx, "tracking.unsubscribed"))
    assert (event["data"]["method"], event["data"]["list_id"]) == ("mail", list_id)
    assert answer.get_json()["event_id"] == event["id"]
    assert_pseudonymous([event], "jane")
    forged = mail.replace(token.encode(), with_end_replaced(token, 4).encode())
    assert post_report(client, forged).get_json()["result"] == "ignored"
    # webmail encodes many a subject (RFC 2047): read as written, it went unread
    import base64 as b64
    encoded = b64.b64encode(f"unsubscribe {token}".encode()).decode()
    again = mail.replace(f"Subject: unsubscribe {token}".encode(),
                         f"Subject: =?UTF-8?B?{encoded}?=".encode())
    assert post_report(client, again).get_json()["result"] == "unsubscribe"


def test_bounce_webhook_needs_its_token(client, ctx):
    raw = samples.gmail_hard_bounce(tt.verp_address(RING, ctx, "b.example"), "x")
    assert post_report(client, raw, token="wrong").status_code == 401
    assert client.post("/t/bounces", data=raw).status_code == 401


def test_a_json_post_to_the_bounce_webhook_is_a_415(client):
    """A relay's JSON notification was read as a message, found empty and
    answered 202 "ignored": nothing said it was never going to work."""
    auth = {"Authorization": f"Bearer {WEBHOOK}"}
    for content_type in ("application/json", "application/vnd.relay+json"):
        answer = client.post("/t/bounces", data=b'{"a": 1}', content_type=content_type,
                             headers=auth)
        assert answer.status_code == 415 and answer.get_json()["error"]["code"] == \
            "unsupported_media_type", content_type
    # A message piped with curl --data-binary goes as a form: still read.
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        answer = client.post("/t/bounces", data=b"Subject: hi\r\n\r\nx",
                             content_type=content_type, headers=auth)
        assert answer.status_code == 202, content_type


def test_gmail_dsn_becomes_a_hard_bounce(client, ctx, store, tail):
    store.save_delivery(ctx.job_id, ctx.account_id, ctx.campaign_id, ctx.contact_id,
                        datetime.now(timezone.utc), contact_revision=0)
    verp = tt.verp_address(RING, ctx, "bounces.example.com")
    response = post_report(client, samples.gmail_hard_bounce(verp, "https://t.example/u/none"))
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["result"] == "hard_bounce"
    [event] = tail.wait_for(of(ctx, "tracking.bounced"))
    assert event["data"]["bounce_type"] == "hard" and event["data"]["status"] == "5.1.1"
    # the revision the message went with, even 0: contacts suppresses that address
    assert event["data"]["contact_revision"] == 0
    assert_pseudonymous([event], "nobody.here")


def test_outlook_dsn_resolves_through_the_quoted_list_unsubscribe(client, ctx, tail):
    # tracking has not seen delivery.sent: the original message's signed link names the job
    raw = samples.outlook_hard_bounce(tt.verp_address(RING, ctx, "b.example"),
                                      tt.unsubscribe_url("https://t.example", RING, ctx))
    assert post_report(client, raw).get_json()["result"] == "hard_bounce"
    assert tail.wait_for(of(ctx, "tracking.bounced"))


def test_soft_bounces_become_hard_after_the_limit(client, store):
    contact, account, campaign = (uuid.uuid4().hex for _ in range(3))
    results = []
    for _ in range(2):  # SANDESH_SOFT_BOUNCE_LIMIT=2 in this app
        c = tt.LinkContext(account, campaign, contact, uuid.uuid4().hex)
        store.save_delivery(c.job_id, account, campaign, contact, datetime.now(timezone.utc))
        raw = samples.yahoo_soft_bounce(tt.verp_address(RING, c, "b.example"))
        results.append(post_report(client, raw).get_json()["result"])
        results.append(post_report(client, raw).get_json()["result"])  # a retried webhook
    assert results == ["soft_bounce", "soft_bounce", "hard_bounce", "hard_bounce"]


def test_arf_complaint(client, ctx, tail):
    raw = samples.yahoo_arf_complaint(tt.verp_address(RING, ctx, "b.example"),
                                      tt.unsubscribe_url("https://t.example", RING, ctx))
    response = post_report(client, raw)
    assert response.status_code == 202 and response.get_json()["result"] == "complaint"
    [event] = tail.wait_for(of(ctx, "tracking.complained"))
    assert event["data"]["feedback_type"] == "abuse"
    assert_pseudonymous([event], "annoyed")


def test_reports_that_name_no_known_message(client, ctx):
    verp = tt.verp_address(RING, ctx, "b.example")  # signed, but never delivered
    unknown = post_report(client, samples.yahoo_soft_bounce(verp))
    assert unknown.status_code == 503 and unknown.headers["Retry-After"]
    assert post_report(client, samples.plain_text_bounce("b+forged@b.example")).status_code == 422
    assert post_report(client, samples.delayed_notice(verp)).get_json()["result"] == "ignored"
    assert post_report(client, b"").status_code == 400


def test_a_report_with_raw_utf8_headers_is_read_not_a_500(client, ctx, store):
    """compat32 gives a raw 8-bit header as a Header object, which has no
    .lower() or .split(): every such report was a 500."""
    store.save_delivery(ctx.job_id, ctx.account_id, ctx.campaign_id, ctx.contact_id,
                        datetime.now(timezone.utc))
    verp = tt.verp_address(RING, ctx, "b.example")
    bounce = samples.plain_text_bounce(verp).replace(
        b"From: MAILER-DAEMON@old.example.org\r\nTo:",
        "From: Système <MAILER-DAEMON@old.example.org>\r\nTo:".encode()).replace(
        b"Subject: failure notice", "Subject: Unzustellbar: Grüße".encode())
    answer = post_report(client, bounce)
    assert answer.status_code == 202, answer.get_json()
    assert answer.get_json()["result"] == "hard_bounce"
    away = samples.out_of_office(verp, "Bin bis Montag nicht im Büro.",
                                 "Abwesenheitsnotiz: Frühlingsangebot", "").replace(
        b"Jane Doe", "Jürgen Müller".encode())
    answer = post_report(client, away)
    assert answer.status_code == 202
    assert answer.get_json()["result"] == "ignored"
    assert answer.get_json()["reason"] == "an automatic reply, not a bounce"


def test_a_header_the_default_parser_chokes_on_is_a_report_not_a_500(client, ctx):
    """Anyone can mail the bounce domain, and the MTA pipes it here: a
    parameter like "charset*" with no value raised in the mailed-unsubscribe
    check, a 500 (and a real bounce so written was retried, then lost)."""
    raw = samples.plain_text_bounce(tt.verp_address(RING, ctx, "b.example")).replace(
        b"Subject: failure notice", b"Subject: failure notice\r\nContent-Type: text/plain; charset*")
    answer = post_report(client, raw)
    assert answer.status_code in (202, 503), answer.get_json()   # 503: not delivered yet
    assert answer.get_json().get("error", {}).get("code") != "internal_error"


def test_a_test_sends_bounce_and_complaint_count_nowhere(client, ctx, tail):
    """Test jobs carry the real campaign id: a bounce of one was published
    and counted in the campaign's figures."""
    tester = tt.LinkContext(ctx.account_id, ctx.campaign_id, tt.stand_in_id("test-2"),
                            uuid.uuid4().hex)
    unsubscribe = tt.unsubscribe_url("https://t.example", RING, tester)
    for raw in (samples.outlook_hard_bounce(tt.verp_address(RING, tester, "b.example"),
                                            unsubscribe),
                samples.yahoo_arf_complaint(tt.verp_address(RING, tester, "b.example"),
                                            unsubscribe)):
        answer = post_report(client, raw)
        assert answer.status_code == 202 and answer.get_json()["result"] == "ignored"
    real = samples.outlook_hard_bounce(tt.verp_address(RING, ctx, "b.example"),
                                       tt.unsubscribe_url("https://t.example", RING, ctx))
    assert post_report(client, real).get_json()["result"] == "hard_bounce"
    tail.wait_for(of(ctx, "tracking.bounced"))   # published after the tester's
    assert not [e for e in tail.events if e["data"].get("job_id") == tester.job_id]


def test_a_soft_then_a_hard_bounce_of_one_message_are_two_events(client, ctx, store, tail):
    """They shared one event id, and a consumer that drops repeated ids
    dropped the hard bounce."""
    store.save_delivery(ctx.job_id, ctx.account_id, ctx.campaign_id, ctx.contact_id,
                        datetime.now(timezone.utc))
    verp = tt.verp_address(RING, ctx, "b.example")
    soft = post_report(client, samples.yahoo_soft_bounce(verp)).get_json()
    hard = post_report(client, samples.gmail_hard_bounce(verp, "https://t.example/u/x")).get_json()
    assert (soft["result"], hard["result"]) == ("soft_bounce", "hard_bounce")
    assert soft["event_id"] != hard["event_id"]
    events = tail.wait_for(lambda e: of(ctx, "tracking.bounced")(e) and
                           e["data"]["bounce_type"] == "hard")
    assert events[0]["id"] == hard["event_id"]


def test_a_not_spam_report_suppresses_nobody(client, ctx, tail):
    """Every feedback report was a complaint, which suppresses the address
    on every account: "not-spam" says the recipient wants the mail."""
    raw = samples.yahoo_arf_complaint(tt.verp_address(RING, ctx, "b.example"),
                                      tt.unsubscribe_url("https://t.example", RING, ctx))
    answer = post_report(client, raw.replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam"))
    assert answer.status_code == 202 and answer.get_json()["result"] == "ignored"
    assert "not-spam" in answer.get_json()["reason"]
    assert post_report(client, raw).get_json()["result"] == "complaint"
    [event] = tail.wait_for(of(ctx, "tracking.complained"))
    assert event["data"]["feedback_type"] == "abuse"


# ----------------------------------------------------- an erased contact

def test_an_erased_contacts_hits_and_unsubscribe_are_not_published_and_its_bounces_are_pseudonymous(
        app, client, ctx, store, tail):
    """The mail the person still has keeps working (the pixel answers, the
    link redirects, the unsubscribe page thanks them), but nothing it sends
    back puts the erased id on tracking.events or in tracking's records."""
    store.save_delivery(ctx.job_id, ctx.account_id, ctx.campaign_id, ctx.contact_id,
                        datetime.now(timezone.utc))
    tracking_privacy.erase(store.db, ctx.account_id, ctx.contact_id)
    assert client.get(f"/t/o/{tt.open_token(RING, ctx)}",
                      headers={"User-Agent": CHROME}).status_code == 200
    click = client.get(f"/t/c/{tt.click_token(RING, ctx, 1)}", headers={"User-Agent": CHROME})
    assert click.status_code == 302 and click.headers["Location"] == LINKS[1]
    assert client.post(f"/u/{tt.unsubscribe_token(RING, ctx)}",
                       data={"List-Unsubscribe": "One-Click"}).status_code == 200
    # A soft bounce found through the (renamed) delivery record, and a hard
    # one of another message found through the link it quotes, which names
    # the contact as it was.
    soft = post_report(client, samples.yahoo_soft_bounce(tt.verp_address(RING, ctx, "b.example")))
    assert soft.get_json()["result"] == "soft_bounce"
    quoted = tt.LinkContext(ctx.account_id, ctx.campaign_id, ctx.contact_id, uuid.uuid4().hex)
    hard = post_report(client, samples.outlook_hard_bounce(
        tt.verp_address(RING, quoted, "b.example"),
        tt.unsubscribe_url("https://t.example", RING, quoted)))
    assert hard.get_json()["result"] == "hard_bounce"
    complaint = post_report(client, samples.yahoo_arf_complaint(
        tt.verp_address(RING, quoted, "b.example"),
        tt.unsubscribe_url("https://t.example", RING, quoted)))
    assert complaint.get_json()["result"] == "ignored"   # per contact: not counted, not told
    # Someone else's open of the same campaign, after them on its partition.
    other = tt.LinkContext(ctx.account_id, ctx.campaign_id, uuid.uuid4().hex, uuid.uuid4().hex)
    client.get(f"/t/o/{tt.open_token(RING, other)}", headers={"User-Agent": CHROME})
    tail.wait_for(of(other, "tracking.opened"))
    bounces = tail.wait_for(lambda e: e["type"] == "tracking.bounced"
                            and e["data"]["job_id"] in (ctx.job_id, quoted.job_id), count=2)
    assert all(e["data"]["contact_id"].startswith("erased-") for e in bounces)
    assert not [e for e in tail.events if e["type"] == "tracking.complained"
                and e["data"]["job_id"] == quoted.job_id]
    assert not [e for e in tail.events if e["data"].get("contact_id") == ctx.contact_id]
    assert ctx.contact_id not in json.dumps(list(store.db.soft_bounces.find()), default=str)


def test_an_unsubscribe_parked_before_the_erasure_is_not_relayed_after_it(app, ctx, store):
    """Parked while Kafka was away, relayed once it is back: by then the
    contact may be erased, and the relay must not put its id on the topic."""
    from shared.kafka.memory import InMemoryBroker
    from shared.kafka.producer import EventProducer
    claims = tt.Claims(kind="unsubscribe", context=ctx, link_index=None, list_id=None)
    event = usecases.unsubscribe_event(claims, True, "one-click")
    store.park_event(event.id, topics.TRACKING_EVENTS, event.subject, event.to_dict())
    tracking_privacy.erase(store.db, ctx.account_id, ctx.contact_id)
    broker = InMemoryBroker()
    deps = app.extensions["tracking"]
    assert usecases.relay_parked(store, EventProducer(broker.sink()), deps.of_erased_contact) == 1
    assert broker.messages(topics.TRACKING_EVENTS) == [] and store.parked_events() == []
