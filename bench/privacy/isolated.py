"""The erasure path on its own: the same handlers and consumer loops as the
services (contacts, sender, tracking, privacy), run in this process on topics
and databases of their own, against the real Kafka and FerretDB. It measures
the privacy pipeline without the shared stack's backlogs; run.py measures it
through the running stack.

    .venv/bin/python -m bench.privacy.isolated [--contacts 1000]

Each contact is seeded as imported, mailed (sender record), and counted in
tracking (sent, opened, clicked), then erased by address.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from types import SimpleNamespace

from shared import mongo, topics
from shared.config import Config
from shared.events import new_event
from shared.kafka.admin import delete_topics, ensure_topics
from shared.kafka.factory import consumer_loop, event_producer
from shared.topics import TopicSpec

SALT = "bench-salt"


def _env():
    from devstack.env import load_stack_env
    env = load_stack_env()
    return env["SANDESH_KAFKA_BOOTSTRAP"], env["SANDESH_MONGO_URI"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=1000)
    args = parser.parse_args(argv)
    bootstrap, uri = _env()
    run = uuid.uuid4().hex[:8]
    names = {t: f"bench.{run}.{t}" for t in ("requests", "acks", "contacts")}
    ensure_topics(bootstrap, {n: TopicSpec(6, 3_600_000) for n in names.values()})
    # The services' modules read these names at call time.
    topics.PRIVACY_REQUESTS, topics.PRIVACY_ACKS, topics.CONTACTS_EVENTS = \
        names["requests"], names["acks"], names["contacts"]
    config = Config(kafka_bootstrap=bootstrap, pii_salt=SALT, privacy_responders=[
        "contacts", "sender", "tracking"], privacy_silent_after_hours=24)
    dbs = {s: mongo.database(uri, f"bench_{run}_{s}") for s in ("contacts", "sender", "tracking", "privacy")}
    try:
        for label, count in (("1 contact", 1), (f"{args.contacts} contacts at once", args.contacts)):
            print(label + ": " + measure(config, dbs, names, count, run), flush=True)
    finally:
        for db in dbs.values():
            mongo.client(uri).drop_database(db.name)
        delete_topics(bootstrap, list(names.values()))
    return 0


def seed(config, dbs, count: int, marker: str) -> list[str]:
    from services.contacts import usecases
    from services.contacts.store import ContactsStore, ensure_contacts_indexes
    from services.tracking.counting import CountingRules, StatsCounter
    from services.tracking.store import TrackingStore
    ensure_contacts_indexes(dbs["contacts"])
    producer = event_producer(config, "bench-seed")
    ports = usecases.Ports(ContactsStore(dbs["contacts"]), producer, SALT)
    list_id = usecases.create_list(ports, "acct", {"name": f"bench {marker}"})["_id"]
    counter = StatsCounter(TrackingStore(dbs["tracking"]), CountingRules())
    now = datetime.now(timezone.utc).isoformat()
    emails = []
    for n in range(count):
        email = f"b{n}.{marker}@bench.example.com"
        contact = usecases.create_contact(ports, "acct", {"email": email, "list_ids": [list_id]}, "k")
        job = f"job-{marker}-{n}"
        dbs["sender"].deliveries.insert_one({
            "_id": job, "state": "sent", "campaign_id": "camp", "account_id": "acct",
            "updated_at": datetime.now(timezone.utc), "event": {"type": "delivery.sent", "data": {
                "job_id": job, "campaign_id": "camp", "contact_id": contact["_id"], "attempt": 0}}})
        data = {"job_id": job, "campaign_id": "camp", "contact_id": contact["_id"], "attempt": 0}
        for type_, handle in (("delivery.sent", counter.delivery_sent),
                              ("tracking.opened", counter.opened)):
            event = new_event(type_, source="bench", subject="camp", account_id="acct",
                              data=data if type_ == "delivery.sent" else
                              {k: data[k] for k in ("job_id", "campaign_id", "contact_id")})
            handle(event.__class__(**{**event.__dict__, "time": now}))
        emails.append(email)
    producer.flush()
    producer.sink.close()
    return emails


def measure(config, dbs, names, count: int, run: str) -> str:
    from services.contacts.privacy import handle_privacy_request as contacts_answer
    from services.privacy import usecases
    from services.privacy.handlers import build_handlers as privacy_handlers
    from services.privacy.store import INDEXES, PrivacyStore
    from services.sender.privacy import handle_privacy_request as sender_answer
    from services.tracking.privacy import handle_privacy_request as tracking_answer
    from shared.http.internal_auth import Identity
    marker = uuid.uuid4().hex[:6]
    emails = seed(config, dbs, count, marker)
    mongo.ensure_indexes(dbs["privacy"], INDEXES)
    producers, loops = [], []
    for service, answer in (("contacts", contacts_answer), ("sender", sender_answer),
                            ("tracking", tracking_answer)):
        producer = event_producer(config, f"bench-{service}")
        runtime = SimpleNamespace(db=dbs[service], producer=lambda p=producer: p, config=config)
        producers.append(producer)
        loops.append(consumer_loop(config, service, f"bench-{run}-{marker}-{service}", [names["requests"]],
                                   {"privacy.requested": lambda e, r=runtime, a=answer: a(r, e)},
                                   producer=producer))
    producer = event_producer(config, "bench-privacy")
    producers.append(producer)
    runtime = SimpleNamespace(db=dbs["privacy"], producer=lambda: producer)
    loops.append(consumer_loop(config, "privacy", f"bench-{run}-{marker}-privacy", [names["acks"]],
                               privacy_handlers(runtime, requests_topic=names["requests"]),
                               producer=producer))
    threads = [threading.Thread(target=loop.run, daemon=True) for loop in loops]
    for thread in threads:
        thread.start()
    time.sleep(8)  # the groups join before the clock starts
    store = PrivacyStore(dbs["privacy"])
    started = time.monotonic()
    ids = [usecases.create_request(store, producer, config, Identity("acct", "bench"),
                                   {"kind": "erasure", "subject": {"email": e}})["_id"]
           for e in emails]
    asked = time.monotonic() - started
    deadline = started + 1800
    while time.monotonic() < deadline:
        done = dbs["privacy"].requests.count_documents({"_id": {"$in": ids}, "status": "complete"})
        if done == len(ids):
            break
        time.sleep(0.2)
    wall = time.monotonic() - started
    for loop in loops:
        loop.stop()
    for thread in threads:
        thread.join(30)
    latencies = sorted((r["completed_at"] - r["created_at"]).total_seconds()
                       for r in dbs["privacy"].requests.find({"_id": {"$in": ids}, "status": "complete"}))
    left = dbs["contacts"].contacts.count_documents({"email": {"$in": emails}})
    out = (f"{len(latencies)}/{len(ids)} complete; asked in {asked:.1f} s; last complete after "
           f"{wall:.1f} s")
    if latencies:
        p95 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
        out += f"; per request median {statistics.median(latencies):.2f} s, p95 {p95:.2f} s"
    return out + f"; contacts left with those addresses: {left}"


if __name__ == "__main__":
    sys.exit(main())
