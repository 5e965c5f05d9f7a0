"""The AsyncAPI document of every Kafka topic, generated from the code's own
contract: shared/topics.py (topics, keys, partitions, retention) and
shared/events/schemas (the JSON Schema every event is validated with).

    python -m shared.asyncapi            # print it
    python -m shared.asyncapi --write    # regenerate docs/asyncapi.yaml
    python -m shared.asyncapi --check    # exit 1 if docs/asyncapi.yaml drifted (CI)

One source of truth: the committed document is only ever written by this
script, and a unit test fails when it differs from what the script produces.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import yaml

from shared import topics
from shared.events.registry import ENVELOPE_FILE, SCHEMA_DIR, known_types, schema_for

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.yaml"

# Which topic carries which event types. A new event type must be added here
# (generation fails until it is, so the document cannot silently miss it).
TYPE_TOPICS: dict[str, list[str]] = {
    "contact.": [topics.CONTACTS_EVENTS],
    "audience.ready": [topics.CONTACTS_EVENTS],
    "campaign.": [topics.CAMPAIGNS_EVENTS],
    "send.job": [topics.SEND_JOBS, topics.SEND_RETRY],
    "send.dead": [topics.SEND_DLQ],
    "delivery.": [topics.DELIVERY_EVENTS],
    "tracking.": [topics.TRACKING_EVENTS],
    "privacy.requested": [topics.PRIVACY_REQUESTS],
    "privacy.answered": [topics.PRIVACY_ACKS],
    "audit.": [getattr(topics, "AUDIT_EVENTS", "audit.events")],
}
# Probes (readiness checks, contract tests) may travel on any topic; handlers ignore them.
ANY_TOPIC_TYPES = ("platform.probe",)

ANALYTICS_TOPICS = (topics.TRACKING_EVENTS, topics.DELIVERY_EVENTS)
PERSONAL_DATA_TOPICS = (topics.SEND_JOBS, topics.SEND_RETRY, topics.SEND_DLQ)


class UnmappedEventType(RuntimeError):
    pass


def topics_of(event_type: str) -> list[str]:
    if event_type in ANY_TOPIC_TYPES:
        return list(topics.TOPICS)
    for prefix, names in TYPE_TOPICS.items():
        if event_type == prefix or (prefix.endswith(".") and event_type.startswith(prefix)):
            return names
    raise UnmappedEventType(f"event type {event_type!r} has no topic in shared/asyncapi.py "
                            "TYPE_TOPICS: add it, then run `python -m shared.asyncapi --write`")


def _schema(event_type: str) -> dict:
    schema = copy.deepcopy(schema_for(event_type))
    schema.pop("$schema", None)
    return schema


def _envelope() -> dict:
    schema = json.loads((SCHEMA_DIR / ENVELOPE_FILE).read_text())
    schema.pop("$schema", None)
    return schema


def _channel_description(name: str, spec: topics.TopicSpec) -> str:
    days = spec.retention_ms / topics.DAY_MS
    lines = [f"Key: {spec.key or 'none'}. Partitions: {spec.partitions}. "
             f"Retention: {days:g} days. Cleanup policy: {spec.cleanup_policy}."]
    if name in ANALYTICS_TOPICS:
        lines.append("Analytics stream: pseudonymous ids, user-agent family and truncated IP "
                     "at most; never an email address or a name.")
    if name in PERSONAL_DATA_TOPICS:
        lines.append("Internal: send jobs carry the recipient's address and merge data, "
                     "hence the short retention. Not for analytics.")
    if name == topics.DEAD_LETTERS:
        lines.append("Messages that could never be processed, byte for byte as they were, "
                     "with headers dlq.reason, dlq.topic, dlq.partition, dlq.offset, "
                     "dlq.group and dlq.service.")
    return " ".join(lines)


def build() -> dict:
    types = [t for t in known_types()]
    by_topic: dict[str, list[str]] = {name: [] for name in topics.TOPICS}
    for event_type in types:
        for name in topics_of(event_type):
            by_topic.setdefault(name, []).append(event_type)

    channels, operations = {}, {}
    for name, spec in topics.TOPICS.items():
        channels[name] = {
            "address": name,
            "description": _channel_description(name, spec),
            "messages": {t: {"$ref": f"#/components/messages/{t}"} for t in by_topic[name]},
            "bindings": {"kafka": {
                "topic": name, "partitions": spec.partitions,
                "topicConfiguration": {"retention.ms": spec.retention_ms,
                                       "cleanup.policy": spec.cleanup_policy.split(",")},
                "bindingVersion": "0.5.0"}},
        }
        operations[f"consume.{name}"] = {
            "action": "receive", "channel": {"$ref": f"#/channels/{name}"},
            "messages": [{"$ref": f"#/channels/{name}/messages/{t}"} for t in by_topic[name]],
        }

    messages, schemas = {}, {"envelope": _envelope()}
    for event_type in types:
        schema = _schema(event_type)
        schemas[event_type] = schema
        keys = sorted({topics.TOPICS[n].key for n in topics_of(event_type) if n in topics.TOPICS})
        messages[event_type] = {
            "name": event_type,
            "title": event_type,
            "summary": schema.get("title", ""),
            "contentType": "application/json",
            "headers": {"type": "object", "properties": {
                "ce_type": {"const": event_type}, "ce_id": {"type": "string"},
                "trace_id": {"type": "string"}}},
            "payload": {"allOf": [
                {"$ref": "#/components/schemas/envelope"},
                {"type": "object", "properties": {
                    "type": {"const": event_type},
                    "data": {"$ref": f"#/components/schemas/{event_type}"}}},
            ]},
            "bindings": {"kafka": {"key": {"type": "string",
                                           "description": " or ".join(keys) or "any"},
                                   "bindingVersion": "0.5.0"}},
        }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Sandesh event streams",
            "version": "1.0.0",
            "description": (
                "Every Kafka topic of the Sandesh platform and every event type on it. "
                "Each message is a CloudEvents 1.0 structured JSON envelope whose `data` "
                "follows the event type's JSON Schema; producers and consumers validate "
                "against the same schemas (shared/events/schemas). Generated by "
                "`python -m shared.asyncapi`: do not edit by hand."),
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "127.0.0.1:9092", "protocol": "kafka",
                              "description": "The local stack's single-node broker."}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render() -> str:
    header = "# Generated by `python -m shared.asyncapi --write`; do not edit by hand.\n"
    return header + yaml.safe_dump(build(), sort_keys=False, allow_unicode=True, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"write {DOCUMENT}")
    mode.add_argument("--check", action="store_true", help="fail if the document drifted")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        DOCUMENT.write_text(text)
        print(f"wrote {DOCUMENT}")
        return 0
    if args.check:
        current = DOCUMENT.read_text() if DOCUMENT.exists() else ""
        if current != text:
            print(f"{DOCUMENT} is out of date: run `python -m shared.asyncapi --write`",
                  file=sys.stderr)
            return 1
        print(f"{DOCUMENT} is up to date")
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
