"""One recipient's message from a campaign: links, pixel, unsubscribe,
preheader, tracking off, header injection through merge data."""
from __future__ import annotations

import re
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.utils import format_datetime
from urllib.parse import unquote

import pytest

from services.sender import dkim
from services.sender.compose import ComposeError, Composer, ComposeSettings
from services.sender.domain import Campaign, Job
from shared.html_body import without_comments
from shared.tracking_tokens import Keyring, verify

KEYRING = Keyring.from_env("k1:" + "A" * 43 + "=")
HTML = ('<html><body><p>Hi {{ name }}</p><a href="https://example.com/a">A</a>'
        '<a href="https://example.com/b">B</a></body></html>')


@pytest.fixture(scope="module")
def signer(tmp_path_factory):
    key_dir = tmp_path_factory.mktemp("dkim")
    dkim.ensure_key(key_dir, "sandesh.test", "s", "ed25519")
    return dkim.Signer(dkim.load_keys(key_dir))


def compose(signer, *, tracking=True, html=HTML, name="Jane", kind="marketing", subject="Hi {{ name }}",
            postal="1 Main St"):
    composer, job = composer_and_job(signer, tracking=tracking, html=html, name=name, kind=kind,
                                     subject=subject, postal=postal)
    out = composer.compose(job)
    return out, message_from_bytes(out.message, policy=policy.default), job


def composer_and_job(signer, *, tracking=True, html=HTML, name="Jane", kind="marketing",
                     subject="Hi {{ name }}", postal="1 Main St", links=None, text="Hi {{ name }}"):
    template = {"version": 1, "subject": subject, "preheader": "Peek {{ name }}", "html": html,
                "text": text}
    if links is not None:
        template["links"] = links
    campaign = Campaign.from_launched(uuid.uuid4().hex, {
        "campaign_id": uuid.uuid4().hex,
        "template": template,
        "sender": {"from_email": "news@sandesh.test"}, "tracking": tracking,
        "postal_address": postal, "kind": kind})
    job = Job(uuid.uuid4().hex, campaign.campaign_id, uuid.uuid4().hex, campaign.account_id,
              uuid.uuid4().hex, "jane@example.com", name, {}, 0, None, False, None)
    composer = Composer(campaign, ComposeSettings(KEYRING, "https://t.example", "sandesh.test"), signer)
    return composer, job


def test_links_are_signed_tracking_links_in_order_and_a_pixel_closes_the_body(signer):
    out, msg, job = compose(signer)
    html = msg.get_body(("html",)).get_content()
    assert "https://example.com/a" not in html and html.count("https://t.example/t/c/") == 2
    tokens = [part.split('"')[0] for part in html.split("https://t.example/t/c/")[1:]]
    claims = [verify(KEYRING, t) for t in tokens]
    assert [c.link_index for c in claims] == [0, 1] and claims[0].context.job_id == job.job_id
    assert html.index("/t/o/") > html.index("/t/c/") and html.rstrip().endswith("</body></html>")
    assert "Peek Jane" in html.split("<p>")[0]  # preheader first, hidden
    assert out.message_id == f"<{job.job_id}@sandesh.test>" == msg["Message-ID"]
    assert verify(KEYRING, out.mail_from.split("+")[1].split("@")[0]).job_id == job.job_id


def click_claims(html: str) -> list:
    return [verify(KEYRING, token) for token in re.findall(r"https://t\.example/t/c/([\w-]+)", html)]


def test_a_personal_link_is_tracked_to_the_url_each_recipient_was_sent(signer):
    """One link index, every recipient's own URL, carried in the signed
    token; a loop makes one link per item, each going where it was written."""
    html = ('<html><body><a href="https://example.com/u?n={{ name }}&amp;k=1">Mine</a>'
            '<a href="https://example.com/a">A</a>'
            '{% for p in fields.goods %}<a href=\'https://example.com/p/{{ p }}\'>{{ p }}</a>'
            '{% endfor %}</body></html>')
    composer, job = composer_and_job(signer, html=html, name="Zoë Ann")
    job = replace(job, fields={"goods": ["sku-1", "a\"b"]})
    msg = message_from_bytes(composer.compose(job).message, policy=policy.default)
    body = msg.get_body(("html",)).get_content()
    assert "example.com/" not in body.replace("https://example.com/a", "")  # all tracked
    claims = click_claims(body)
    assert [(c.link_index, c.url) for c in claims] == [
        (0, "https://example.com/u?n=Zo%C3%AB%20Ann&k=1"), (1, None),
        (2, "https://example.com/p/sku-1"), (2, "https://example.com/p/a%22b")]
    assert all(c.context.job_id == job.job_id for c in claims)


def test_a_personal_link_that_renders_to_no_web_link_stays_as_rendered(signer):
    html = ('<html><body><a href="https://example.com/{{ fields.path }}">Mine</a>'
            '<a href="https://shop.example/{{ fields.host }}">host</a></body></html>')
    composer, job = composer_and_job(signer, html=html)
    job = replace(job, fields={"path": "x" * 3000, "host": "\r\nSet-Cookie: a=b"})
    body = message_from_bytes(composer.compose(job).message,
                              policy=policy.default).get_body(("html",)).get_content()
    assert 'href="https://example.com/' + "x" * 3000 + '"' in body  # too long for a token
    [claims] = click_claims(body)
    assert claims.url == "https://shop.example/Set-Cookie:%20a=b"  # as a browser drops CR/LF
    assert "sandesh-link-" not in body


def test_merge_data_cannot_make_a_tracked_link_of_its_own(signer):
    html = '<html><body><p>{{ fields.note }}</p><a href="https://example.com/{{ name }}">M</a></body></html>'
    composer, job = composer_and_job(signer, html=html)
    forged = f'<a href="{composer._personal_mark}0:https://evil.example/">'
    job = replace(job, fields={"note": forged})
    body = message_from_bytes(composer.compose(job).message,
                              policy=policy.default).get_body(("html",)).get_content()
    assert [c.url for c in click_claims(body)] == ["https://example.com/Jane"]


def test_a_personal_link_a_template_froze_untracked_stays_untracked(signer):
    """Link lists saved before personal links were tracked leave them out:
    the indexes the tracking service holds must keep their meaning."""
    html = ('<html><body><a href="https://example.com/u?n={{ name }}">Mine</a>'
            '<a href="https://example.com/a">A</a></body></html>')
    composer, job = composer_and_job(signer, html=html, links=["https://example.com/a"])
    body = message_from_bytes(composer.compose(job).message,
                              policy=policy.default).get_body(("html",)).get_content()
    assert 'href="https://example.com/u?n=Jane"' in body
    assert [(c.link_index, c.url) for c in click_claims(body)] == [(0, None)]
    composer, job = composer_and_job(signer, html=html.replace("https://example.com/a", "#a"),
                                     links=[])
    body = message_from_bytes(composer.compose(job).message,
                              policy=policy.default).get_body(("html",)).get_content()
    assert 'href="https://example.com/u?n=Jane"' in body and click_claims(body) == []


def test_a_derived_text_part_keeps_no_blank_lines_where_template_tags_were(signer):
    from services.campaigns.htmltext import html_to_text
    html = ('<html><body>{% set first = name|default("there") %}\n<p>Hi {{ first }}</p>\n'
            '{% if fields.vip %}\n<p>A VIP offer</p>\n{% endif %}\n<p>See you</p></body></html>')
    composer, job = composer_and_job(signer, html=html, text=html_to_text(html))
    msg = message_from_bytes(composer.compose(job).message, policy=policy.default)
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.startswith("Hi Jane\n\nSee you\n") and "\n\n\n" not in text


def test_tracking_off_keeps_links_and_unsubscribe_but_no_pixel(signer):
    _, msg, _ = compose(signer, tracking=False)
    html = msg.get_body(("html",)).get_content()
    assert "https://example.com/a" in html and "/t/c/" not in html and "/t/o/" not in html
    assert "https://t.example/u/" in msg["List-Unsubscribe"]
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_a_template_without_unsubscribe_link_gets_one_with_the_postal_address(signer):
    _, msg, _ = compose(signer)
    for part in ("html", "plain"):
        body = msg.get_body((part,)).get_content()
        assert "https://t.example/u/" in body and "1 Main St" in body


@pytest.mark.parametrize("html", [
    "<html><body><p>Hi</p>{# unsubscribe_url postal_address: TODO #}</body></html>",
    '<html><body><p>Hi</p><a href="{{ fields.unsubscribe_url }}">Leave</a></body></html>',
    "<html><body><p>Hi</p>{% if fields.vip %}<a href=\"{{ unsubscribe_url }}\">x</a>"
    "{{ postal_address }}</body></html>{% endif %}",
    # In a comment, the link and the address are in the source and in what
    # is rendered, and no reader sees them: the footer went into it too.
    '<html><body><p>Hi</p><!-- <a href="{{ unsubscribe_url }}">x</a> {{ postal_address }} -->'
    "</body></html><!-- old footer </body> -->",
])
def test_marketing_mail_carries_its_unsubscribe_link_and_address_whatever_the_template(
        signer, html):
    """Each of these sent mail with neither: the check was whether the
    source held the placeholder's name."""
    out, msg, job = compose(signer, html=html)
    unsubscribe = msg["List-Unsubscribe"].split("<", 1)[1].split(">", 1)[0]
    body = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    for part in (without_comments(body), text):
        assert unsubscribe in part and "1 Main St" in part


def test_a_postal_address_with_quotes_gets_its_footer_once(signer):
    """The rendered check looked for the address as html.escape writes it
    (&#x27;), the template engine writes &#39;: every message with an
    apostrophe in the address got a second footer."""
    html = ('<html><body><p>Hi</p><a href="{{ unsubscribe_url }}">Leave</a> '
            "{{ postal_address }}</body></html>")
    _, msg, _ = compose(signer, html=html, postal="O'Brien & \"Sons\", 1 Main St")
    body = msg.get_body(("html",)).get_content()
    assert body.count("Brien") == 1 and body.count("/u/") == 1


def test_a_line_break_from_merge_data_never_reaches_a_header(signer):
    with pytest.raises(ComposeError):
        compose(signer, name="Jane\r\nBcc: everyone@example.com")
    with pytest.raises(ComposeError):
        compose(signer, subject="Hi\n{{ name }}")


def test_why_a_message_could_not_be_composed_quotes_none_of_the_contacts_data(signer):
    """The reason is recorded with the job; an error's own text quoted the
    merge data ("'Jane Secret' is not in list")."""
    html = "<html><body><p>{{ name|wordwrap(name) }}</p></body></html>"  # int(width)
    with pytest.raises(ComposeError) as failed:
        compose(signer, html=html, name="Jane Secret")
    assert "Secret" not in str(failed.value)
    assert str(failed.value) == "cannot render: ValueError at template line 1"
    with pytest.raises(ComposeError) as failed:
        compose(signer, name="Jane Secret\r\nBcc: x@example.com")
    assert "Secret" not in str(failed.value) and "line break" in str(failed.value)
    with pytest.raises(ComposeError) as failed:  # one of our bounds: says which
        compose(signer, html="<p>{{ ('x' * 10000 * 30)|length }}</p>")
    assert str(failed.value) == "cannot render: builds over 250000 characters in one render"


def test_the_mailto_unsubscribe_subject_carries_a_token_for_the_job(signer):
    _, msg, job = compose(signer)
    mailto = msg["List-Unsubscribe"].split("<mailto:")[1].rstrip(">")
    word, token = unquote(mailto.split("?subject=")[1]).split(" ")
    assert word == "unsubscribe"
    claims = verify(KEYRING, token)
    assert claims.kind == "unsubscribe" and claims.context.job_id == job.job_id


def test_the_date_header_is_the_time_of_composing_to_the_second(signer):
    composer, job = composer_and_job(signer)
    start = datetime(2026, 12, 2, 9, 30, 15, 100_000, tzinfo=timezone.utc)

    def date_at(moment):
        return message_from_bytes(composer.compose(job, now=moment).message,
                                  policy=policy.default)["Date"]

    for moment in (start, start + timedelta(milliseconds=800), start + timedelta(seconds=1),
                   start + timedelta(hours=2, seconds=1), start):
        assert date_at(moment) == format_datetime(moment.replace(microsecond=0))


def test_every_tracking_token_carries_the_time_of_composing(signer):
    """Tracking judges a fetch on arrival (a scanner's) by it."""
    composer, job = composer_and_job(signer)
    moment = datetime(2026, 12, 6, 1, 2, 3, 900_000, tzinfo=timezone.utc)
    msg = message_from_bytes(composer.compose(job, now=moment).message, policy=policy.default)
    html = msg.get_body(("html",)).get_content()
    tokens = [part.split('"')[0] for marker in ("https://t.example/t/c/", "https://t.example/t/o/",
                                                "https://t.example/u/")
              for part in html.split(marker)[1:]]
    assert len(tokens) >= 3
    assert {verify(KEYRING, t).context.sent_at for t in tokens} == {int(moment.timestamp())}


def test_a_domains_keys_sign_only_the_campaigns_of_the_accounts_it_belongs_to(tmp_path):
    """A signature with d=<domain> is what makes a receiver take the mail as
    the domain's own (DMARC). Before owners.txt, any account that put
    another's domain in its From got that domain's signature."""
    import dkim as dkimpy
    key_dir = tmp_path / "keys"
    for domain in ("sandesh.test", "shop-b.example"):
        dkim.ensure_key(key_dir, domain, "s", "ed25519")
    owner, intruder = uuid.uuid4().hex, uuid.uuid4().hex
    (key_dir / dkim.OWNERS_FILE).write_text(f"# domain  accounts\nShop-B.example {owner}\n")
    signer = dkim.Signer(dkim.load_keys(key_dir), owners=dkim.load_owners(key_dir))

    def signed_as(account_id: str) -> str:
        campaign = Campaign.from_launched(account_id, {
            "campaign_id": uuid.uuid4().hex,
            "template": {"version": 1, "subject": "Sale", "html": "<p>Sale</p>"},
            "sender": {"from_email": "news@shop-b.example", "sending_domain": "shop-b.example"},
            "tracking": False, "postal_address": "1 Main St", "kind": "marketing"})
        job = Job(uuid.uuid4().hex, campaign.campaign_id, uuid.uuid4().hex, account_id, None,
                  "jane@example.com", "Jane", {}, 0, None, False, None)
        message = Composer(campaign, ComposeSettings(KEYRING, "https://t.example", "sandesh.test"),
                           signer).compose(job).message
        assert dkimpy.verify(message, dnsfunc=dkim.txt_record_lookup(key_dir))
        return message_from_bytes(message, policy=policy.default)["DKIM-Signature"]

    assert " d=shop-b.example;" in signed_as(owner)
    assert " d=sandesh.test;" in signed_as(intruder)


def test_a_key_dir_from_before_owners_txt_is_refused_rather_than_signed_as_the_platform(tmp_path):
    """Upgrading with customers' keys and no owners.txt would sign their mail
    with the platform's domain from the next send on: the sender refuses to
    start instead, and says what to write."""
    for domain in ("sandesh.test", "shop-b.example", "shop-c.example"):
        dkim.ensure_key(tmp_path, domain, "s", "ed25519")
    keys = dkim.load_keys(tmp_path)
    with pytest.raises(ValueError, match="shop-b.example"):
        dkim.unowned_domains(tmp_path, keys, {}, "sandesh.test")
    # the platform's own key alone needs no owners.txt (the local stack's case)
    platform_key = [k for k in keys if k.domain == "sandesh.test"]
    assert dkim.unowned_domains(tmp_path, platform_key, {}, "sandesh.test") == []
    (tmp_path / dkim.OWNERS_FILE).write_text("shop-b.example acct-b\n")
    owners = dkim.load_owners(tmp_path)
    assert dkim.unowned_domains(tmp_path, keys, owners, "sandesh.test") == ["shop-c.example"]


def test_a_key_dir_where_no_key_can_be_made_is_a_clear_refusal(tmp_path):
    """As on Kubernetes without the sandesh-dkim Secret (a read-only root
    filesystem): the sender crash-looped on a bare OSError. Here the
    directory cannot be made because a file stands in its path, which
    refuses root too."""
    from types import SimpleNamespace
    from services.sender.worker import make_signer
    (tmp_path / "not-a-dir").write_text("")
    config = SimpleNamespace(dkim_key_dir=str(tmp_path / "not-a-dir" / "keys"),
                             default_sending_domain="mail.example.com", dkim_selector="sandesh")
    with pytest.raises(ValueError, match="sandesh-dkim"):
        make_signer(config)


def test_a_campaign_edited_without_a_new_template_version_gets_a_composer_of_its_own(signer):
    """Cached by (campaign, version, tracking), a draft's test sends kept the
    old From name, and a tracking-off launch reused a test's composer."""
    from services.sender.worker import ComposerCache
    cache = ComposerCache(ComposeSettings(KEYRING, "https://t.example", "sandesh.test"), signer)
    launched = {"campaign_id": "c" * 32, "template": {"version": 1, "subject": "s", "html": "<p>h</p>"},
                "sender": {"from_email": "news@sandesh.test", "from_name": "Acme Typo"},
                "tracking": False, "postal_address": "1 Old Rd", "kind": "marketing"}
    first = cache(Campaign.from_launched("a" * 32, launched))
    for change in ({"sender": {**launched["sender"], "from_name": "Acme Shop"}},
                   {"postal_address": "2 New St"}, {"kind": "system"}):
        assert cache(Campaign.from_launched("a" * 32, {**launched, **change})) is not first
    assert cache(Campaign.from_launched("a" * 32, dict(launched))) is first


def test_an_idn_sending_domain_goes_out_in_its_ascii_form_signed_and_without_smtputf8(tmp_path):
    """bücher.example as typed went raw into Message-ID and the VERP
    address, and MAIL FROM could not be encoded: every message of the
    campaign failed. Its A-labels go everywhere a domain goes, and the key
    made for it signs as d=xn--bcher-kva.example."""
    import dkim as dkimpy
    key_dir = tmp_path / "keys"
    account = uuid.uuid4().hex
    dkim.ensure_key(key_dir, "sandesh.test", "s", "ed25519")
    dkim.ensure_key(key_dir, "Bücher.example", "s", "rsa")
    (key_dir / dkim.OWNERS_FILE).write_text(f"bücher.example {account}\n")
    signer = dkim.Signer(dkim.load_keys(key_dir), owners=dkim.load_owners(key_dir))
    campaign = Campaign.from_launched(account, {
        "campaign_id": uuid.uuid4().hex,
        "template": {"version": 1, "subject": "Sale", "html": "<p>Sale</p>"},
        "sender": {"from_email": "news@bücher.example", "from_name": "Bücher",
                   "reply_to": "help@bücher.example"},
        "tracking": True, "postal_address": "1 Main St", "kind": "marketing"})
    job = Job(uuid.uuid4().hex, campaign.campaign_id, uuid.uuid4().hex, account, None,
              "jose@münchen.de", "José", {}, 0, None, False, None)
    out = Composer(campaign, ComposeSettings(KEYRING, "https://t.example", "sandesh.test"),
                   signer).compose(job)
    head = out.message.split(b"\r\n\r\n")[0]
    assert head.isascii() and not out.smtputf8
    msg = message_from_bytes(out.message, policy=policy.default)
    assert msg["From"].addresses[0].addr_spec == "news@xn--bcher-kva.example"
    assert msg["Reply-To"] == "help@xn--bcher-kva.example"
    assert msg["To"].addresses[0].addr_spec == out.recipient == "jose@xn--mnchen-3ya.de"
    assert msg["Message-ID"].endswith("@xn--bcher-kva.example>")
    assert msg["List-Id"].endswith(".list-id.xn--bcher-kva.example>")
    assert out.mail_from.endswith("@xn--bcher-kva.example")
    assert " d=xn--bcher-kva.example;" in msg["DKIM-Signature"]
    assert dkimpy.verify(out.message, dnsfunc=dkim.txt_record_lookup(key_dir))


@pytest.mark.parametrize("sender, to, smtputf8", [
    ({"from_email": "news@sandesh.test"}, "josé@example.com", True),   # the mailbox part
    ({"from_email": "news@sandesh.test", "reply_to": "josé@sandesh.test"}, "jane@example.com",
     True),                                                            # Reply-To's, too
    ({"from_email": "news@sandesh.test"}, "jane@münchen.de", False),   # a domain alone: A-labels
])
def test_smtputf8_is_asked_for_exactly_when_a_mailbox_part_is_not_ascii(signer, sender, to,
                                                                         smtputf8):
    campaign = Campaign.from_launched(uuid.uuid4().hex, {
        "campaign_id": uuid.uuid4().hex,
        "template": {"version": 1, "subject": "Sale", "html": "<p>Sale</p>"},
        "sender": sender, "tracking": False, "postal_address": "1 Main St", "kind": "marketing"})
    job = Job(uuid.uuid4().hex, campaign.campaign_id, uuid.uuid4().hex, campaign.account_id, None,
              to, "J", {}, 0, None, False, None)
    out = Composer(campaign, ComposeSettings(KEYRING, "https://t.example", "sandesh.test"),
                   signer).compose(job)
    assert out.smtputf8 is smtputf8
    assert out.message.split(b"\r\n\r\n")[0].isascii() is not smtputf8


def test_a_sending_domain_idna_refuses_fails_the_campaign_with_a_reason(signer):
    campaign = Campaign.from_launched(uuid.uuid4().hex, {
        "campaign_id": uuid.uuid4().hex,
        "template": {"version": 1, "subject": "Sale", "html": "<p>Sale</p>"},
        "sender": {"from_email": "news@sandesh.test", "sending_domain": "bad_\u00e9..example"},
        "tracking": False, "postal_address": "1 Main St", "kind": "marketing"})
    with pytest.raises(ComposeError, match="not a valid domain name"):
        Composer(campaign, ComposeSettings(KEYRING, "https://t.example", "sandesh.test"), signer)


def test_a_link_whose_host_is_merge_data_goes_out_untracked(signer):
    """A contact's region of "evil.example/?" made a signed click link on
    the client's tracking domain to evil.example, valid for good."""
    html = '<html><body><a href="https://{{ fields.region }}.shop.example/deals">x</a></body></html>'
    composer, job = composer_and_job(signer, html=html)
    job = replace(job, fields={"region": "evil.example/?"})
    body = message_from_bytes(composer.compose(job).message,
                              policy=policy.default).get_body(("html",)).get_content()
    assert click_claims(body) == []
    assert 'href="https://evil.example/?.shop.example/deals"' in body   # what the template says
