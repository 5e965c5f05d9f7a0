"""The sender against real Kafka, FerretDB and an SMTP sink (aiosmtpd),
driven through Kafka: campaign.launched then send.job messages in, mail in
the sink's Maildir and delivery events out."""
from __future__ import annotations

import dkim as dkimpy
import pytest

from services.sender import dkim
from shared import topics
from tests.integration.sender.harness import Senders, by_recipient, hexid, recipients, wait_for

pytestmark = pytest.mark.timeout(300)


def test_every_recipient_gets_one_signed_message_with_unsubscribe_headers(senders, sink, unique):
    account, campaign = hexid(), hexid()
    senders.start()
    senders.launch(account, campaign)
    people = recipients(40, unique)
    job_ids = senders.jobs(account, campaign, people)
    senders.wait(lambda: sink.count() >= len(people), 90, "every message in the sink")

    received = by_recipient(sink)
    assert sorted(received) == sorted(email for _, email, _ in people)
    assert all(len(msgs) == 1 for msgs in received.values())
    lookup = dkim.txt_record_lookup(senders.dkim_dir)
    for raw in sink.raw_messages():
        assert dkimpy.verify(raw.split(b"\r\n", 2)[2] if raw.startswith(b"X-Sink") else raw,
                             dnsfunc=lookup)
    for msg in sink.messages():
        unsubscribe = msg["List-Unsubscribe"]
        assert "<http" in unsubscribe and "/u/" in unsubscribe and "<mailto:" in unsubscribe
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg["List-Id"] and msg["Feedback-ID"].startswith(f"{campaign}:{account}:")
        assert msg["X-Sink-Mail-From"].startswith("b+")  # VERP
        assert msg["Subject"].startswith("Hello Récipient") and msg["Subject"].endswith("✓")
        assert msg.get_content_type() == "multipart/alternative"
        html = msg.get_body(("html",)).get_content()
        assert "/t/c/" in html and "/t/o/" in html and "https://example.com/a" not in html

    sent = wait_for(lambda: [e for e in senders.events() if e.type == "delivery.sent"],
                    30, "delivery.sent events")
    assert sorted(e.data["job_id"] for e in sent) == sorted(job_ids)
    message_ids = {m["Message-ID"] for m in sink.messages()}
    assert message_ids == {e.data["message_id"] for e in sent}
    for event in sent:
        assert "example.com" not in str(event.data)  # ids and the provider only
        assert event.data["mailbox_provider"] == "other" and "recipient_domain" not in event.data


def test_transient_failures_are_retried_until_every_message_arrives(senders, sink, unique):
    sink.set_faults(transient_rate=0.2, seed=7)
    account, campaign = hexid(), hexid()
    senders.start()
    senders.launch(account, campaign)
    people = recipients(60, unique)
    senders.jobs(account, campaign, people)
    senders.wait(lambda: len(by_recipient(sink)) >= len(people), 120, "every recipient")
    received = by_recipient(sink)
    assert all(len(msgs) == 1 for msgs in received.values()) and len(received) == len(people)
    events = senders.events()
    assert any(e.type == "delivery.deferred" for e in events)
    retried = [e for e in events if e.type == "delivery.sent" and e.data["attempt"] > 0]
    assert retried  # some went out on a later attempt, from send.retry
    for event in (e for e in events if e.type == "delivery.deferred"):
        assert "smtp_reply" not in event.data and event.data["smtp_status"] == "4.3.0"


def test_permanent_failures_become_failed_with_the_masked_reply(senders, sink, unique):
    people = recipients(10, unique)
    bad = {email for _, email, _ in people[:3]}
    sink.set_faults(fail_recipients={email: 550 for email in bad})
    account, campaign = hexid(), hexid()
    senders.start()
    senders.launch(account, campaign)
    senders.jobs(account, campaign, people)
    events = senders.wait(lambda: (lambda ev: ev if len(ev) >= 10 else None)(
        [e for e in senders.events(idle=1) if e.type in ("delivery.sent", "delivery.failed")]),
        60, "ten outcomes")
    failed = [e for e in events if e.type == "delivery.failed"]
    assert len(failed) == 3 and {e.data["smtp_code"] for e in failed} == {550}
    # The stream has the status, never the reply's text; the sender's record
    # keeps the text, with the address masked.
    assert all(e.data["smtp_status"] == "5.1.1" and "smtp_reply" not in e.data for e in failed)
    replies = [senders.recorded("deliveries", e.data["job_id"])["smtp_reply"] for e in failed]
    assert len(replies) == 3
    assert all("<email>" in reply and "example.com" not in reply for reply in replies)
    assert set(by_recipient(sink)) == {email for _, email, _ in people} - bad


def test_exhausted_retries_go_to_the_dlq_and_count_as_failed(stack_env, tmp_path, sink, unique):
    group = Senders(stack_env, tmp_path, sink, unique, SANDESH_SEND_MAX_ATTEMPTS=3)
    try:
        people = recipients(3, unique)
        sink.set_faults(fail_recipients={people[0][1]: 451})
        account, campaign = hexid(), hexid()
        group.start()
        group.launch(account, campaign)
        job_ids = group.jobs(account, campaign, people)
        dead = group.wait(lambda: group.events("send.dlq", idle=1), 90, "a dead job")
        assert [e.data["job"]["job_id"] for e in dead] == [job_ids[0]]
        outcomes = [e for e in group.events() if e.data["job_id"] == job_ids[0]]
        assert [e.type for e in outcomes].count("delivery.deferred") == 2
        assert outcomes[-1].type == "delivery.failed" and outcomes[-1].data["attempt"] == 2
    finally:
        group.dispose()


def test_pause_parks_the_jobs_resume_sends_them_cancel_skips_them(senders, sink, unique):
    account, paused, cancelled = hexid(), hexid(), hexid()
    senders.start()
    senders.launch(account, paused)
    senders.launch(account, cancelled)
    senders.status(account, paused, "paused")
    senders.status(account, cancelled, "cancelled")
    # pause and cancel travel on campaigns.events, the jobs on send.jobs:
    # start once the senders have seen them (they do "within seconds")
    senders.wait(lambda: senders.campaign_status(paused) == "paused"
                 and senders.campaign_status(cancelled) == "cancelled", 30, "the states")
    people = recipients(10, unique)
    senders.jobs(account, paused, people[:5])
    cancelled_jobs = senders.jobs(account, cancelled, people[5:])
    skipped = senders.wait(lambda: (lambda ev: ev if len(ev) >= 5 else None)(
        [e for e in senders.events(idle=1) if e.type == "delivery.skipped"]), 60, "skipped jobs")
    assert sorted(e.data["job_id"] for e in skipped) == sorted(cancelled_jobs)
    assert all(e.data["reason"] == "cancelled" for e in skipped)
    assert sink.count() == 0  # paused: parked, not sent, and not in the other's way
    senders.status(account, paused, "resumed")
    senders.wait(lambda: sink.count() >= 5, 60, "the resumed campaign's mail")
    assert set(by_recipient(sink)) == {email for _, email, _ in people[:5]}


def test_a_rate_limited_campaign_holds_back_no_other_accounts_campaign(senders, sink, unique):
    """Jobs beyond a campaign's rate are parked, not held in their
    partitions: held, one account's campaign limited to 2 a second kept
    another account's campaign, queued behind it on every partition, until
    nearly all of its own had gone (a review measured 57 s for 20
    messages). The limited one still goes out, each recipient once."""
    slow_account, slow, quick_account, quick = hexid(), hexid(), hexid(), hexid()
    senders.start()
    senders.launch(slow_account, slow, limits={"per_second": 2})
    senders.launch(quick_account, quick)
    senders.wait(lambda: senders.campaign_status(slow) and senders.campaign_status(quick), 30,
                 "both campaigns known")
    slow_people, quick_people = recipients(40, unique + ".slow"), recipients(20, unique + ".quick")
    senders.jobs(slow_account, slow, slow_people)     # ahead on every partition
    senders.jobs(quick_account, quick, quick_people)
    quick_addresses = {email for _, email, _ in quick_people}
    senders.wait(lambda: quick_addresses <= set(by_recipient(sink)), 60, "the quick campaign")
    slow_addresses = {email for _, email, _ in slow_people}
    slow_sent = len(slow_addresses & set(by_recipient(sink)))
    assert slow_sent < len(slow_people) // 2, slow_sent  # it did not wait for the slow one
    senders.wait(lambda: slow_addresses <= set(by_recipient(sink)), 120, "the slow campaign")
    assert all(len(m) == 1 for m in by_recipient(sink).values())


def test_a_retry_not_due_for_long_holds_back_no_retry_due_sooner(senders, sink, unique):
    """A late attempt's backoff (up to an hour) held every retry behind it on
    send.retry, of any account, however short theirs: now it waits parked."""
    from datetime import datetime, timedelta, timezone
    account, campaign = hexid(), hexid()
    senders.start()
    senders.launch(account, campaign)
    senders.wait(lambda: senders.campaign_status(campaign), 30, "the campaign known")
    now = datetime.now(timezone.utc)

    def retries(people, due_in: float, attempt: int) -> None:
        for contact_id, email, name in people:
            job_id = hexid()
            senders.publish(topics.SEND_RETRY, "send.job", account, job_id, {
                "job_id": job_id, "campaign_id": campaign, "contact_id": contact_id,
                "attempt": attempt, "not_before": (now + timedelta(seconds=due_in)).isoformat(),
                "recipient": {"email": email, "name": name, "fields": {}}}, flush=False)
        senders.producer.flush()

    late, soon = recipients(30, unique + ".late"), recipients(12, unique + ".soon")
    retries(late, 600, attempt=4)  # ahead on every partition of send.retry
    retries(soon, 3, attempt=1)
    soon_addresses = {email for _, email, _ in soon}
    senders.wait(lambda: soon_addresses <= set(by_recipient(sink)), 60, "the retries due soon")
    assert set(by_recipient(sink)) == soon_addresses  # the late ones wait their turn
    assert all(len(m) == 1 for m in by_recipient(sink).values())


def test_unsubscribed_and_suppressed_contacts_are_skipped_at_send_time(senders, sink, unique):
    account, campaign, list_id = hexid(), hexid(), hexid()
    senders.start()
    senders.launch(account, campaign)
    people = recipients(6, unique)
    unsubscribed, suppressed, bounced = people[0][0], people[1][0], people[2][0]
    senders.publish("contacts.events", "contact.unsubscribed", account, unsubscribed,
                    {"contact_id": unsubscribed, "list_id": list_id, "via": "link"})
    senders.publish("contacts.events", "contact.suppressed", account, suppressed,
                    {"contact_id": suppressed, "scope": "account", "reason": "manual"})
    senders.publish("contacts.events", "contact.status_changed", account, bounced,
                    {"contact_id": bounced, "status": "bounced"})
    import time
    time.sleep(3)  # let the sender's contacts consumer catch up before the jobs
    senders.jobs(account, campaign, people, list_id=list_id)
    senders.wait(lambda: sink.count() >= 3, 60, "the others' mail")
    skipped = senders.wait(lambda: (lambda ev: ev if len(ev) >= 3 else None)(
        [e for e in senders.events(idle=1) if e.type == "delivery.skipped"]), 30, "skips")
    assert {e.data["contact_id"]: e.data["reason"] for e in skipped} == {
        unsubscribed: "unsubscribed", suppressed: "suppressed", bounced: "bounced"}
    assert set(by_recipient(sink)) == {email for _, email, _ in people[3:]}


def test_a_test_send_carries_its_campaign_and_counts_nowhere(senders, sink, unique):
    account, campaign = hexid(), hexid()
    senders.start()
    data = senders.launch(account, campaign)  # for its shape; the test job carries its own copy
    senders.status(account, campaign, "paused")  # a test send ignores the campaign's state
    job_id = hexid()
    email = f"tester.{unique}@example.com"
    senders.publish("send.jobs", "send.job", account, job_id, {
        "job_id": job_id, "campaign_id": campaign, "contact_id": "test-1", "attempt": 0,
        "test": True, "campaign": data, "recipient": {"email": email}})
    senders.wait(lambda: sink.count() >= 1, 60, "the test message")
    assert list(by_recipient(sink)) == [email]
    sent = senders.wait(lambda: [e for e in senders.events(idle=1) if e.type == "delivery.sent"],
                        30, "its event")
    assert sent[0].data["test"] is True


def test_a_deleted_account_s_queued_jobs_are_dropped_and_hold_nobody_else_up(senders, sink, unique):
    gone, staying = hexid(), hexid()
    gone_campaign, gone_paused, other = hexid(), hexid(), hexid()
    senders.start()
    senders.launch(gone, gone_campaign)
    senders.launch(gone, gone_paused)
    senders.status(gone, gone_paused, "paused")
    senders.launch(staying, other)
    senders.wait(lambda: senders.campaign_status(gone_paused) == "paused"
                 and senders.campaign_status(other) == "sending", 30, "the campaigns")
    people = recipients(30, unique)
    parked = senders.jobs(gone, gone_paused, people[:5])
    senders.wait(lambda: all(senders.parked(j) for j in parked), 60, "parking")

    senders.publish(topics.PRIVACY_REQUESTS, "privacy.requested", gone, "r1", {
        "request_id": "r1", "kind": "erasure", "subject": {"kind": "account"}})
    senders.wait(lambda: senders.recorded("campaigns", gone_campaign) is None
                 and senders.recorded("campaigns", gone_paused) is None, 60, "the erasure")
    # jobs of the deleted account still on send.jobs, on every partition,
    # ahead of another account's
    gone_jobs = senders.jobs(gone, gone_campaign, people[5:15])
    senders.jobs(staying, other, people[15:])

    senders.wait(lambda: sink.count() >= 15, 60, "the other account's mail")
    assert set(by_recipient(sink)) == {email for _, email, _ in people[15:]}
    assert not any(senders.parked(j) for j in parked)  # they carried addresses
    delivered = {e.data["job_id"] for e in senders.events(idle=1)}
    assert delivered.isdisjoint(gone_jobs + parked)  # no record, no event brings it back
