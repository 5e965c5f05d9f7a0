import json

import pytest

from shared.events import InvalidEvent, decode, encode, known_types, new_event
from shared.tracing import trace


def test_round_trip_keeps_every_field_and_the_trace_id():
    with trace("abc123"):
        event = new_event("platform.probe", source="/t", subject="s", account_id="a",
                          data={"n": 1})
    back = decode(encode(event))
    assert back == event
    assert back.trace_id == "abc123"
    body = json.loads(encode(event))
    assert body["specversion"] == "1.0" and body["accountid"] == "a"


def test_invalid_data_is_refused_on_produce():
    event = new_event("platform.probe", source="/t", subject="s", account_id="a",
                      data={"n": 1, "email": "x@example.com"})
    with pytest.raises(InvalidEvent, match="Additional properties"):
        encode(event)


def test_a_consumer_ignores_a_field_a_newer_producer_added_but_checks_the_rest():
    """A producer deployed with a new optional field before its consumers:
    they read the event (the field unknown to them ignored) instead of
    dead-lettering the whole stream. What they know is still checked."""
    body = json.loads(encode(new_event("delivery.sent", source="/t", subject="j1",
                                       account_id="a", data={"job_id": "j1", "campaign_id": "c",
                                                             "contact_id": "k", "attempt": 0})))
    body["data"]["added_later"] = {"anything": True}
    body["extension_attribute"] = "x"
    event = decode(json.dumps(body).encode())
    assert event.data["job_id"] == "j1"
    with pytest.raises(InvalidEvent, match="Additional properties"):
        encode(event)  # producers stay strict
    body["data"]["attempt"] = "zero"
    with pytest.raises(InvalidEvent, match="attempt"):
        decode(json.dumps(body).encode())
    del body["data"]["job_id"]
    body["data"]["attempt"] = 0
    with pytest.raises(InvalidEvent, match="job_id"):
        decode(json.dumps(body).encode())


def test_unknown_type_is_refused():
    event = new_event("no.such_type", source="/t", subject="s", account_id="a", data={})
    with pytest.raises(InvalidEvent, match="unknown event type"):
        encode(event)


def test_tombstone_is_not_an_event():
    with pytest.raises(InvalidEvent):
        decode(None)


def test_every_schema_file_is_a_valid_schema():
    from jsonschema import Draft202012Validator
    from shared.events.registry import schema_for
    for event_type in known_types():
        Draft202012Validator.check_schema(schema_for(event_type))


@pytest.mark.parametrize("raw", [b"[1]", b'"x"', b"null", b"3"])
def test_json_that_is_not_an_object_is_invalid_not_a_crash(raw):
    with pytest.raises(InvalidEvent):
        decode(raw)


def test_invalid_time_is_refused():
    event = new_event("platform.probe", source="/t", subject="s", account_id="a", data={"n": 1})
    body = event.to_dict()
    body["time"] = "yesterday"
    from shared.events import validate
    with pytest.raises(InvalidEvent, match="time"):
        validate(body)


def test_an_invalid_event_is_described_without_its_values():
    """The description goes to logs and dead letters' headers: it names the
    path and the rule broken, never the value (a recipient's name)."""
    data = {"job_id": "j1", "campaign_id": "c", "contact_id": "k", "attempt": 0,
            "recipient": {"email": "priya@example.com", "name": "Priya Raman " * 30}}
    event = new_event("send.job", source="/t", subject="j1", account_id="a", data=data)
    with pytest.raises(InvalidEvent) as refused:
        encode(event)
    assert "recipient/name" in str(refused.value) and "maxLength 300" in str(refused.value)
    assert "Priya" not in str(refused.value)
    data["recipient"] = {"email": "priya@example.com", "name": ["Priya Raman"]}
    with pytest.raises(InvalidEvent) as refused:
        encode(new_event("send.job", source="/t", subject="j1", account_id="a", data=data))
    assert "recipient/name: fails type 'string'" in str(refused.value)
    assert "Priya" not in str(refused.value)
