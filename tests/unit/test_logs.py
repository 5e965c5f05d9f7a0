import json
import logging

import pytest

from shared.logs import JsonFormatter, mask_emails
from shared.tracing import trace


def test_json_line_with_trace_id_and_masked_email():
    record = logging.LogRecord("x", logging.INFO, __file__, 1,
                               "sent to %s", ("Jane.Doe+news@example.co.uk",), None)
    record.campaign_id = "c1"
    with trace("t-1"):
        line = JsonFormatter("svc").format(record)
    entry = json.loads(line)
    assert entry["msg"] == "sent to <email>"
    assert entry["trace_id"] == "t-1" and entry["service"] == "svc"
    assert entry["campaign_id"] == "c1"
    assert "example.co.uk" not in line


@pytest.mark.parametrize("address", [
    "पूजा@example.in",                 # Devanagari vowel signs are combining marks, not \w
    "पूजा.sharma@e2e.example.com",
    "pooja@उदाहरण.भारत",               # an IDN domain in its Unicode form
    "நந்தினி@example.com",
    "Jane.Doe+news@example.co.uk",
    "o'brien@example.ie",
])
def test_every_address_contacts_accepts_is_masked_in_text_and_in_a_json_line(address):
    from shared.pii import normalise_email
    assert normalise_email(address)  # an address the platform really sends to
    reply = f"550 5.1.1 <{address}>: Recipient address rejected"
    assert mask_emails(reply) == "550 5.1.1 <<email>>: Recipient address rejected"

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "reply: %s", (reply,), None)
    line = JsonFormatter("svc").format(record)   # JSON escapes non-ASCII as \uXXXX
    assert json.loads(line)["msg"] == "reply: 550 5.1.1 <<email>>: Recipient address rejected"


def test_masking_keeps_a_json_line_valid_around_escaped_quotes():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, 'to "%s" and %s',
                               ("jane@example.com", "पूजा@example.in"), None)
    entry = json.loads(JsonFormatter("svc").format(record))
    assert entry["msg"] == 'to "<email>" and <email>'


def test_text_without_an_address_is_left_alone():
    text = "550 5.1.1 user unknown (version 1.2.3, key=a/b, user@localhost)"
    assert mask_emails(text) == text
