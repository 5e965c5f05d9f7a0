"""The AsyncAPI document is generated from the code's own contract and the
committed copy never drifts from it."""
from __future__ import annotations

import yaml

from shared import asyncapi, topics
from shared.events.registry import known_types, schema_for


def test_committed_document_is_what_the_generator_produces():
    committed = asyncapi.DOCUMENT.read_text()
    assert committed == asyncapi.render(), \
        "docs/asyncapi.yaml drifted: run `python -m shared.asyncapi --write`"


def test_every_topic_is_a_channel_with_its_key_partitions_and_retention():
    doc = yaml.safe_load(asyncapi.render())
    assert set(doc["channels"]) == set(topics.TOPICS)
    for name, spec in topics.TOPICS.items():
        channel = doc["channels"][name]
        kafka = channel["bindings"]["kafka"]
        assert kafka["partitions"] == spec.partitions
        assert kafka["topicConfiguration"]["retention.ms"] == spec.retention_ms
        assert f"Key: {spec.key}" in channel["description"]
        assert doc["operations"][f"consume.{name}"]["channel"] == {"$ref": f"#/channels/{name}"}


def test_every_event_type_is_documented_with_the_schema_the_code_validates_with():
    doc = yaml.safe_load(asyncapi.render())
    messages, schemas = doc["components"]["messages"], doc["components"]["schemas"]
    for event_type in known_types():
        assert asyncapi.topics_of(event_type), event_type
        expected = {k: v for k, v in schema_for(event_type).items() if k != "$schema"}
        assert schemas[event_type] == expected
        data_ref = messages[event_type]["payload"]["allOf"][1]["properties"]["data"]["$ref"]
        assert data_ref == f"#/components/schemas/{event_type}"
        for name in asyncapi.topics_of(event_type):
            assert event_type in doc["channels"][name]["messages"]


def test_an_unmapped_event_type_fails_generation():
    try:
        asyncapi.topics_of("brand.new_thing")
    except asyncapi.UnmappedEventType as exc:
        assert "TYPE_TOPICS" in str(exc)
    else:
        raise AssertionError("an unmapped type must fail")


def test_analytics_streams_have_no_field_for_an_address_or_a_name():
    for event_type in known_types():
        if not event_type.startswith(("tracking.", "delivery.")):
            continue
        fields = set(schema_for(event_type)["properties"])
        assert not fields & {"email", "address", "name", "first_name", "last_name", "recipient",
                             "ip", "user_agent"}, event_type
