"""Tracking worker throughput: how fast it drains a backlog into stats.

    .venv/bin/python bench/tracking/worker.py [--jobs 2000] [--campaigns 20] [--per-event]

Publishes, per job, a delivery.sent and a tracking.opened event (and a
tracking.clicked for one job in four) for unique campaign ids to throwaway
topics, then runs the tracking worker's consumer loop (the same loop options,
counter and FerretDB as `services/tracking/worker.py`, on its own database and
consumer group) until the stats count every event. Prints events/s.
`--per-event` hands the events to the counter one at a time (the way the
worker ran before batches), for comparison.

Needs the local stack (Kafka, FerretDB); the live worker never sees these events.
"""
from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from devstack.env import load_stack_env  # noqa: E402
from services.tracking.counting import CountingRules, StatsCounter  # noqa: E402
from services.tracking.handlers import COUNTED_TYPES  # noqa: E402
from services.tracking.store import INDEXES, TrackingStore  # noqa: E402
from shared import mongo  # noqa: E402
from shared.events import new_event  # noqa: E402
from shared.kafka.admin import delete_topics, ensure_topics  # noqa: E402
from shared.kafka.consumer import ConsumerLoop  # noqa: E402
from shared.kafka.kafka_impl import KafkaSink  # noqa: E402
from shared.kafka.producer import EventProducer  # noqa: E402
from shared.kafka.rdkafka_impl import RdKafkaSource  # noqa: E402
from shared.topics import TopicSpec  # noqa: E402


def make_events(jobs: int, campaigns: int) -> tuple[list, dict]:
    account = uuid.uuid4().hex
    campaign_ids = [uuid.uuid4().hex for _ in range(campaigns)]
    sent_at = datetime.now(timezone.utc) - timedelta(hours=1)
    deliveries, hits = [], []
    expected = {c: {"sent": 0, "opens_total_human": 0, "clicks_total_human": 0}
                for c in campaign_ids}
    for n in range(jobs):
        campaign = campaign_ids[n % campaigns]
        ids = {"campaign_id": campaign, "contact_id": uuid.uuid4().hex, "job_id": uuid.uuid4().hex}
        sent = new_event("delivery.sent", source="bench", subject=ids["job_id"],
                         account_id=account, data={**ids, "attempt": 0})
        deliveries.append(_at(sent, sent_at))
        opened = new_event("tracking.opened", source="bench", subject=campaign, account_id=account,
                           data={**ids, "machine": False, "user_agent_family": "chrome"})
        hits.append(_at(opened, sent_at + timedelta(minutes=5)))
        expected[campaign]["sent"] += 1
        expected[campaign]["opens_total_human"] += 1
        if n % 4 == 0:
            clicked = new_event("tracking.clicked", source="bench", subject=campaign,
                                account_id=account,
                                data={**ids, "machine": False, "link_index": 0,
                                      "user_agent_family": "chrome"})
            hits.append(_at(clicked, sent_at + timedelta(minutes=6)))
            expected[campaign]["clicks_total_human"] += 1
    return [("delivery", e) for e in deliveries] + [("tracking", e) for e in hits], expected


def _at(event, when):
    from dataclasses import replace
    return replace(event, time=when.isoformat(timespec="milliseconds"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--campaigns", type=int, default=20)
    parser.add_argument("--per-event", action="store_true")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    stack = load_stack_env()
    bootstrap = stack["SANDESH_KAFKA_BOOTSTRAP"]
    run_id = uuid.uuid4().hex[:8]
    topics = {"delivery": f"bench.worker.{run_id}.delivery",
              "tracking": f"bench.worker.{run_id}.tracking"}
    ensure_topics(bootstrap, {t: TopicSpec(6, 3_600_000) for t in topics.values()})
    db_name = f"bench_{run_id}_tracking"
    db = mongo.database(stack["SANDESH_MONGO_URI"], db_name)
    mongo.ensure_indexes(db, INDEXES)
    store = TrackingStore(db)

    events, expected = make_events(args.jobs, args.campaigns)
    producer = EventProducer(KafkaSink(bootstrap, "bench-worker"))
    for stream, event in events:
        key = event.data["job_id"] if stream == "delivery" else event.subject
        producer.publish(topics[stream], event, key)
    producer.flush()

    counter = StatsCounter(store, CountingRules())
    source = RdKafkaSource(list(topics.values()), f"bench-{run_id}", bootstrap, "bench-worker")
    if args.per_event:
        options = {"handlers": {t: (lambda e: counter.handle_batch([e])) for t in COUNTED_TYPES}}
    else:
        options = {"handlers": {}, "batch_handler": counter.handle_batch,
                   "batch_types": COUNTED_TYPES}
    loop = ConsumerLoop(source, service="bench", group=f"bench-{run_id}",
                        dead_letters=KafkaSink(bootstrap, "bench-worker-dlq"), **options)
    total = len(events)
    handled, started, first = 0, time.monotonic(), None
    try:
        while time.monotonic() - started < args.timeout:
            settled = loop.run_once()
            if settled and first is None:
                first = time.monotonic()  # the group has joined: time from the first batch
            handled += settled
            if handled >= total and _counted(store, expected):
                break
        elapsed = time.monotonic() - (first or started)
        complete = _counted(store, expected)
    finally:
        loop.shutdown()
        mongo.client(stack["SANDESH_MONGO_URI"]).drop_database(db_name)
        delete_topics(bootstrap, list(topics.values()))
    mode = "one event at a time" if args.per_event else "batches (one per poll)"
    print(f"tracking worker, {mode}: {total} events ({args.jobs} sent, {args.jobs} opens, "
          f"{(args.jobs + 3) // 4} clicks over {args.campaigns} campaigns)")
    print(f"drained and counted in {elapsed:.1f} s: {total / elapsed:.0f} events/s; "
          f"stats {'exact' if complete else 'NOT complete'}")


def _counted(store: TrackingStore, expected: dict) -> bool:
    for campaign, want in expected.items():
        counts = store.counters(campaign) or {}
        if any(counts.get(name, 0) != value for name, value in want.items()):
            return False
    return True


if __name__ == "__main__":
    main()
