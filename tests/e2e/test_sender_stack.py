"""The stack's own sender (supervisord, real topic names) delivers to the
stack's SMTP sink, signed with the stack's DKIM key. Driven through Kafka
with unique ids; the full path through the gateway is the campaigns tests'."""
from __future__ import annotations

import time
import uuid
from email import message_from_bytes, policy
from pathlib import Path

import dkim as dkimpy
import pytest

from services.sender.dkim import txt_record_lookup
from shared import topics
from shared.events import new_event
from shared.kafka.factory import event_producer
from shared.config import load_common

pytestmark = pytest.mark.timeout(120)


def test_the_stack_sender_delivers_signed_mail_to_the_sink(stack_env, unique):
    producer = event_producer(load_common(environ=stack_env), "tests")
    account, campaign = uuid.uuid4().hex, uuid.uuid4().hex
    launched = {"campaign_id": campaign, "name": "sender e2e",
                "template": {"version": 1, "subject": "Stack check {{ name }}",
                             "html": "<html><body>Hi {{ name }} "
                                     "<a href=\"{{ unsubscribe_url }}\">unsubscribe</a></body></html>",
                             "text": "Hi {{ name }}\n{{ unsubscribe_url }}\n"},
                "sender": {"from_email": "news@sandesh.test", "from_name": "Sandesh"},
                "audience": {"list_ids": []}, "limits": {}, "tracking": True,
                "postal_address": "1 Test Street", "kind": "marketing"}
    producer.publish(topics.CAMPAIGNS_EVENTS, new_event(
        "campaign.launched", source="tests", subject=campaign, account_id=account,
        data=launched), key=campaign)
    emails = [f"stack{i}.{unique}@example.com" for i in range(5)]
    for email in emails:
        job_id = uuid.uuid4().hex
        producer.publish(topics.SEND_JOBS, new_event(
            "send.job", source="tests", subject=job_id, account_id=account,
            data={"job_id": job_id, "campaign_id": campaign, "contact_id": uuid.uuid4().hex,
                  "attempt": 0, "recipient": {"email": email, "name": "Stack"}}), key=job_id)
    producer.flush()
    maildir = Path(stack_env["SANDESH_MAILDIR"]) / "new"
    found: dict[str, bytes] = {}
    deadline = time.monotonic() + 90
    while len(found) < len(emails) and time.monotonic() < deadline:
        for path in maildir.iterdir():
            if path.name not in found and unique.encode() in (raw := path.read_bytes())[:400]:
                found[path.name] = raw
        time.sleep(0.5)
    messages = [message_from_bytes(raw, policy=policy.default) for raw in found.values()]
    assert sorted(m["X-Sink-Rcpt-To"] for m in messages) == sorted(emails)
    lookup = txt_record_lookup(stack_env["SANDESH_DKIM_KEY_DIR"])
    assert all(dkimpy.verify(raw, dnsfunc=lookup) for raw in found.values())
    assert all(m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" for m in messages)
