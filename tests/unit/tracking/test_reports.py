"""DSN (RFC 3464) and ARF (RFC 5965) reading, with provider-shaped samples."""
from __future__ import annotations

import base64
import uuid

import pytest

from services.tracking.reports import mask_addresses, parse_report
from shared import tracking_tokens as tt
from tests.unit.tracking import samples

RING = tt.Keyring.from_env("k1:" + base64.b64encode(b"r" * 32).decode())


@pytest.fixture
def ctx():
    return tt.LinkContext(*(uuid.uuid4().hex for _ in range(4)))


def _links(ctx):
    return (tt.verp_address(RING, ctx, "bounces.example.com"),
            tt.unsubscribe_url("https://t.example.com", RING, ctx))


def test_gmail_hard_bounce(ctx):
    verp, unsub = _links(ctx)
    report = parse_report(samples.gmail_hard_bounce(verp, unsub))
    assert (report.kind, report.bounce_type, report.status) == ("bounce", "hard", "5.1.1")
    assert tt.verify(RING, report.bounce_tokens[0]).job_id == ctx.job_id
    assert tt.verify(RING, report.link_tokens[0]).context == ctx
    assert "@" not in report.reason  # the diagnostic quotes the address: masked


def test_outlook_hard_bounce_with_the_original_message(ctx):
    verp, unsub = _links(ctx)
    report = parse_report(samples.outlook_hard_bounce(verp, unsub))
    assert (report.kind, report.bounce_type, report.status) == ("bounce", "hard", "5.5.0")
    assert tt.verify(RING, report.link_tokens[0]).context == ctx


def test_yahoo_mailbox_full_is_soft(ctx):
    verp, _ = _links(ctx)
    report = parse_report(samples.yahoo_soft_bounce(verp))
    assert (report.kind, report.bounce_type, report.status) == ("bounce", "soft", "4.2.2")
    assert report.link_tokens == []
    assert tt.verify(RING, report.bounce_tokens[0]).job_id == ctx.job_id


def test_delayed_notice_is_not_a_bounce(ctx):
    report = parse_report(samples.delayed_notice(_links(ctx)[0]))
    assert report.kind == "ignored"


def test_yahoo_arf_complaint(ctx):
    verp, unsub = _links(ctx)
    report = parse_report(samples.yahoo_arf_complaint(verp, unsub))
    assert (report.kind, report.feedback_type) == ("complaint", "abuse")
    assert tt.verify(RING, report.link_tokens[0]).context == ctx


def test_redacted_arf_still_finds_the_job_from_the_return_path(ctx):
    report = parse_report(samples.redacted_arf_complaint(_links(ctx)[0]))
    assert report.kind == "complaint"
    assert tt.verify(RING, report.bounce_tokens[0]).job_id == ctx.job_id


def test_plain_text_bounce(ctx):
    report = parse_report(samples.plain_text_bounce(_links(ctx)[0]))
    assert (report.kind, report.bounce_type, report.status) == ("bounce", "hard", "5.1.1")


def test_an_out_of_office_reply_is_no_bounce(ctx):
    """Auto-replies come to the VERP address with a valid token; read as
    free text, a phone number or a date in them was a status code, and a
    hard bounce suppressed the subscriber."""
    verp = _links(ctx)[0]
    for body, subject, extra in (
            ("I am out of the office until Monday. For urgent matters call\n"
             "555-0100 or 555-0199.", "Automatic reply: Spring sale", ""),
            ("Please contact reception, room 402 - second floor.", "Out of Office",
             "Auto-Submitted: auto-replied\n"),
            ("Back on 4.3.25, no access to email.", "Re: Spring sale", "X-Autoreply: yes\n"),
            ("Back on 5.1.2026, call 550 - 1234.", "Re: Spring sale", "")):
        report = parse_report(samples.out_of_office(verp, body, subject, extra))
        assert report.kind == "ignored", (body, report)
    # still read from a mail server that answers in free text
    bounce = parse_report(samples.plain_text_bounce(verp).replace(b"550 5.1.1", b"550 sorry"))
    assert (bounce.kind, bounce.bounce_type) == ("bounce", "hard")


def test_not_a_report():
    assert parse_report(samples.not_a_report()).kind == "ignored"


def test_mask_addresses():
    assert mask_addresses("550 <a.b@example.com> unknown x@y.z") == "550 <<address>> unknown <address>"


def test_a_text_part_in_a_charset_python_does_not_know_is_read_as_utf8(ctx):
    """A report's sender picks the charset; an unknown one was a LookupError
    (a 500 at the webhook) instead of a bounce read from the rest."""
    verp, unsub = _links(ctx)
    raw = samples.outlook_hard_bounce(verp, unsub).replace(
        b'charset="us-ascii"', b'charset="x-bogus"').replace(
        b'charset="utf-8"', b'charset="x-bogus"')
    assert raw.count(b"x-bogus") == 2
    report = parse_report(raw)
    assert (report.kind, report.bounce_type, report.status) == ("bounce", "hard", "5.5.0")
    assert tt.verify(RING, report.link_tokens[0]).context == ctx


def test_only_a_recipients_objection_is_a_complaint(ctx):
    """Every feedback report was a complaint, and a complaint suppresses the
    address platform-wide: "not-spam" (the mail is wanted), "auth-failure"
    (a DKIM or SPF failure, a forwarded message's), a scanner's "virus".
    The type goes on tracking.events, an analytics stream: a reporter's own
    text never does."""
    verp, unsub = _links(ctx)
    raw = samples.yahoo_arf_complaint(verp, unsub)
    assert b"Feedback-Type: abuse" in raw
    for written, kind, read in ((b"Feedback-Type: abuse", "complaint", "abuse"),
                                (b"Feedback-Type: Fraud", "complaint", "fraud"),
                                (b"Feedback-Type: Not-Spam", "ignored", "not-spam"),
                                (b"Feedback-Type: auth-failure", "ignored", "auth-failure"),
                                (b"Feedback-Type: virus", "ignored", "virus"),
                                (b"Feedback-Type: other", "ignored", "other"),
                                (b"Feedback-Type: jane-doe-1987", "ignored", "unregistered")):
        report = parse_report(raw.replace(b"Feedback-Type: abuse", written))
        assert (report.kind, report.feedback_type) == (kind, read), written
        assert "jane" not in report.reason


def test_a_free_text_bounce_reads_the_status_of_the_servers_reply(ctx):
    """The first dotted triple of the text was the status: a piece of an IP
    address made a greylisting a hard bounce, and a dead mailbox soft."""
    verp = _links(ctx)[0]

    def exim(host: str, reply: str) -> bytes:
        return samples.plain_text_bounce(verp).replace(
            b"550 5.1.1 sorry, no mailbox here by that name",
            f"host mx.example.net [{host}]\r\nSMTP error from remote mail server after "
            f"RCPT TO:<left@old.example.org>:\r\n{reply}".encode())

    greylisted = parse_report(exim("5.9.70.12", "451 4.7.1 Greylisted, try again later"))
    assert (greylisted.bounce_type, greylisted.status) == ("soft", "4.7.1")
    unknown = parse_report(exim("46.4.120.5", "550 5.1.1 User unknown"))
    assert (unknown.bounce_type, unknown.status) == ("hard", "5.1.1")
    no_status = parse_report(exim("5.9.70.12", "550 No such user"))
    assert (no_status.bounce_type, no_status.status) == ("hard", "5.0.0")


def test_a_delay_warning_in_free_text_is_not_a_bounce(ctx):
    """Three of them made a soft-bounce tally a hard bounce, while the
    server was still trying."""
    verp = _links(ctx)[0]
    for subject, text in (
            ("Warning: message 1abcDE-0001 delayed 24 hours",
             "This message was created automatically by mail delivery software.\n"
             "A message that you sent has not yet been delivered to one or more of its\n"
             "recipients after more than 24 hours on the queue on mx.example.net.\n"
             "451 4.4.1 No answer from host\nDelivery attempts will continue for some time."),
            ("Delayed Mail (still being retried)",
             "This is the mail system at host mx.example.net.\n"
             "####################################################################\n"
             "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n"
             "Reason: 450 4.2.0 mailbox temporarily unavailable")):
        raw = samples.plain_text_bounce(verp).replace(b"Subject: failure notice",
                                                      f"Subject: {subject}".encode())
        raw = raw[:raw.index(b"Hi. This is")] + text.replace("\n", "\r\n").encode() + b"\r\n"
        report = parse_report(raw)
        assert report.kind == "ignored" and "delay" in report.reason, subject


def test_a_postmasters_out_of_office_in_another_language_is_no_bounce(ctx):
    """From postmaster@, "Auto-Submitted: auto-replied" as real bounces
    carry too, and a date that reads as a status: no server reply is
    quoted and the subject names no failure."""
    raw = samples.out_of_office(_links(ctx)[0], "Estoy fuera hasta el 5.1.25, gracias.",
                                "Fuera de la oficina").replace(
        b"From: Jane Doe <jane@customer.example>", b"From: postmaster@customer.example")
    assert parse_report(raw).kind == "ignored"


def test_a_charset_that_is_no_name_at_all_is_read_as_utf8(ctx):
    """A NUL in the declared charset raised ValueError: a 500 from the webhook."""
    raw = samples.plain_text_bounce(_links(ctx)[0]).replace(
        b"Subject: failure notice", b'Subject: failure notice\r\nContent-Type: text/plain; charset="utf\x008"')
    report = parse_report(raw)
    assert (report.kind, report.bounce_type) == ("bounce", "hard")


def test_headers_in_raw_utf8_are_read_as_text(ctx):
    """compat32 gives a raw 8-bit header as a Header object, which has no
    .lower() or .split(): such a report was a 500 at the webhook."""
    verp = _links(ctx)[0]
    bounce = samples.plain_text_bounce(verp).replace(
        b"Subject: failure notice", "Subject: Unzustellbar: Grüße".encode())
    assert parse_report(bounce).bounce_type == "hard"
    away = samples.out_of_office(verp, "Bin nicht im Büro.", "Abwesenheit: Frühling", "").replace(
        b"Jane Doe", "Jürgen Müller".encode())
    assert parse_report(away).reason == "an automatic reply, not a bounce"
    dsn = samples.gmail_hard_bounce(*_links(ctx)).replace(
        b"Diagnostic-Code: smtp; 550-5.1.1", "Diagnostic-Code: smtp; 550-5.1.1 Postfach gelöscht:".encode())
    report = parse_report(dsn)
    assert (report.bounce_type, report.status) == ("hard", "5.1.1")
    assert "Postfach gelöscht" in report.reason


def test_a_global_delivery_status_report_is_read_as_one(ctx):
    """RFC 6533's form reports on mail sent with SMTPUTF8. Read as free
    text, a delay notice was a soft bounce (three suppress the contact)."""
    verp = _links(ctx)[0]
    delayed = samples.delayed_notice(verp)
    in_global_form = delayed.replace(b"delivery-status", b"global-delivery-status")
    assert in_global_form.count(b"global-delivery-status") == 2
    for raw in (delayed, in_global_form, samples.global_delivery_status(verp, "delayed", "4.4.1")):
        assert parse_report(raw).kind == "ignored"
    for encoding in ("8bit", "base64"):
        report = parse_report(samples.global_delivery_status(verp, "failed", "5.1.1", encoding))
        assert (report.kind, report.bounce_type, report.status) == ("bounce", "hard", "5.1.1")
        assert report.reason == "smtp; 550 Postfach unbekannt: <address>"
