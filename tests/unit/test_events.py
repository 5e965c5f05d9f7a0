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
