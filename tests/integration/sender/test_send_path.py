"""The sender against real Kafka, FerretDB and an SMTP sink (aiosmtpd),
driven through Kafka: campaign.launched then send.job messages in, mail in
the sink's Maildir and delivery events out."""
from __future__ import annotations

import collections

import dkim as dkimpy
import pytest

from services.sender import dkim
from tests.integration.sender.harness import Senders, Sink, dump_logs, hexid, wait_for

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def sink(tmp_path):
    sink = Sink(tmp_path)
    yield sink
    sink.stop()


@pytest.fixture
def senders(stack_env, tmp_path, sink, unique, mongo_uri):
    group = Senders(stack_env, tmp_path, sink, unique)
    yield group
    group.terminate_all()
    from shared import mongo
    mongo.client(mongo_uri).drop_database(group.db_name)
    print(dump_logs(tmp_path))


def recipients(n: int, tag: str):
    return [(hexid(), f"r{i}.{tag}@example.com", f"Récipient {i}") for i in range(n)]


def by_recipient(sink: Sink) -> dict[str, list]:
    out = collections.defaultdict(list)
    for msg in sink.messages():
        out[msg["X-Sink-Rcpt-To"]].append(msg)
    return out


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
        assert "@example.com" not in str(event.data)  # ids and domains only
        assert event.data["recipient_domain"] == "example.com"
