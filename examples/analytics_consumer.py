"""A small consumer of Sandesh's analytics streams (tracking.events and
delivery.events): prints one JSON line per event and, at the end, a tally per
campaign. The contract (topics, keys, every payload) is docs/asyncapi.yaml.

    .venv/bin/python examples/analytics_consumer.py --bootstrap 127.0.0.1:9092 \
        --group analytics-demo --from-beginning --seconds 30

Events carry pseudonymous ids (account, campaign, contact, job), a
user-agent family and a truncated IP at most: never an address or a name.
Events can arrive twice (at-least-once delivery): deduplicate on `id`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict

from kafka import KafkaConsumer

TOPICS = ["tracking.events", "delivery.events"]


def validate(raw: bytes):
    """Validate with the platform's own schemas when the sandesh package is
    importable (the same ones the producers use); plain JSON otherwise."""
    try:
        from shared.events import decode
    except ImportError:
        return json.loads(raw)
    return decode(raw).to_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--group", default="analytics-example",
                        help="consumer group (offsets are committed for it)")
    parser.add_argument("--from-beginning", action="store_true",
                        help="a new group starts at the oldest retained event")
    parser.add_argument("--seconds", type=float, default=30.0, help="stop after this long")
    parser.add_argument("--max-events", type=int, default=100_000)
    parser.add_argument("--quiet", action="store_true", help="only print the tally")
    args = parser.parse_args(argv)

    consumer = KafkaConsumer(*TOPICS, bootstrap_servers=args.bootstrap, group_id=args.group,
                             auto_offset_reset="earliest" if args.from_beginning else "latest",
                             enable_auto_commit=False)
    seen: set[str] = set()
    tally: dict[str, Counter] = defaultdict(Counter)
    deadline = time.monotonic() + args.seconds
    try:
        while time.monotonic() < deadline and len(seen) < args.max_events:
            for batch in consumer.poll(timeout_ms=500).values():
                for message in batch:
                    try:
                        event = validate(message.value)
                    except Exception as exc:  # a bad message is reported, not fatal
                        print(f"skipping invalid message at {message.topic}/"
                              f"{message.partition}@{message.offset}: {exc}", file=sys.stderr)
                        continue
                    if event["id"] in seen:
                        continue
                    seen.add(event["id"])
                    data = event["data"]
                    kind = event["type"]
                    if kind in ("tracking.opened", "tracking.clicked"):
                        kind += ".machine" if data.get("machine") else ".human"
                    tally[data.get("campaign_id", "?")][kind] += 1
                    if not args.quiet:
                        print(json.dumps({"type": event["type"], "time": event["time"],
                                          "account": event["accountid"], **data}))
            consumer.commit()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    print(json.dumps({"events": len(seen),
                      "campaigns": {c: dict(counts) for c, counts in tally.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
