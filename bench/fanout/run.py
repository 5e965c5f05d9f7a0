"""Benchmark: the campaign fan-out's recipients per second, against reading
the same audience alone.

    .venv/bin/python bench/fanout/run.py [--contacts 100000] [--others 0]

1. Writes --contacts subscribed contacts of one list of a fresh account
   (and --others contacts of another account ahead of them, as a shared
   database holds) with insert_many into a fresh database of the stack's
   FerretDB.
2. Fans the campaign out through the real code (services/contacts/fanout.py:
   the main loop's record of the launch, a fan-out thread's claim, the
   audience query, one send job per recipient built and validated, the
   batch records, the lease renewed and the marks read before each batch);
   only the hand-over to
   Kafka is a sink that counts (bench/sinks.py): the stack's send.jobs feeds
   its senders.
3. The ceiling, in the same run: the same audience query read to the end
   (ContactsStore.stream_audience), producing nothing.
4. A small campaign (another account's 10 contacts) launched 1 s into the
   big one's fan-out, with the worker's fan-out threads as they run
   (fanout.run_fanouts): how long its first recipient and its
   audience.ready wait, with one thread (a fan-out at a time, as when it
   ran in the consumer loop) and with two (the default).
Prints both rates, their ratio, and how long a million recipients take at
that rate (a fan-out thread's time: the main loop no longer waits for it).
The benchmark database is dropped at the end.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.sinks import CountingSink  # noqa: E402
from devstack.env import load_stack_env  # noqa: E402
from services.contacts import domain  # noqa: E402
from services.contacts.fanout import FanoutRequests, FanoutRunner, contacts_stream  # noqa: E402
from services.contacts.fanout_store import INDEXES, FanoutStore  # noqa: E402
from services.contacts.store import ContactsStore, contact_document, ensure_contacts_indexes  # noqa: E402,E501
from services.contacts.worker import start_fanout_threads  # noqa: E402
from shared import mongo, topics  # noqa: E402
from shared.events import new_event  # noqa: E402
from shared.kafka.producer import EventProducer  # noqa: E402

SALT = "bench-salt"
BATCH = 1000


def write_contacts(store: ContactsStore, account_id: str, list_id: str, count: int,
                   tag: str) -> float:
    started = time.perf_counter()
    at = domain.now()
    membership = domain.membership("subscribed", "import", at)
    for first in range(0, count, BATCH):
        docs = []
        for i in range(first, min(count, first + BATCH)):
            address = domain.address(f"{tag}.{i}@mail{i % 40}.example.com", SALT)
            doc = contact_document(account_id, address, name=f"Reader {i}",
                                   fields={"city": "Pune", "age": 30 + i % 50}, at=at,
                                   origin={"via": "import"})
            doc.update(lists={list_id: membership}, list_ids=[list_id],
                       subscribed_list_ids=[list_id])
            docs.append(doc)
        store.contacts.insert_many(docs, ordered=False)
    return time.perf_counter() - started


def launched(account_id: str, list_id: str):
    campaign_id = uuid.uuid4().hex
    return new_event("campaign.launched", source="campaigns", subject=campaign_id,
                     account_id=account_id, data={
                         "campaign_id": campaign_id,
                         "template": {"version": 1, "subject": "s", "html": "<p/>"},
                         "sender": {"from_email": "news@example.com"},
                         "audience": {"list_ids": [list_id], "segment_id": None},
                         "limits": {}, "tracking": True})


class WatchingSink(CountingSink):
    """Counts, and notes when the small campaign's first job and each
    campaign's audience.ready went out."""

    def __init__(self, small_campaign_id: str):
        super().__init__()
        # Job ids are keyed per campaign (shared/jobs.py): the job's event names its campaign.
        self.small_campaign = f'"campaign_id":"{small_campaign_id}"'.encode()
        self.first_small_job: float | None = None
        self.ready_at: dict[bytes, float] = {}

    def send(self, topic, key, value, headers=None):
        super().send(topic, key, value, headers)
        if self.first_small_job is None and topic == topics.SEND_JOBS \
                and self.small_campaign in value:
            self.first_small_job = time.perf_counter()
        if topic == topics.CONTACTS_EVENTS:
            self.ready_at[key] = time.perf_counter()


def small_beside_big(db, store: ContactsStore, big: tuple[str, str],
                     small: tuple[str, str, list[str]], threads: int) -> tuple[float, float, float]:
    """(seconds to the small campaign's first job, to its audience.ready,
    to the big one's audience.ready), the small launched 1 s after the big."""
    big_launch, small_launch = launched(*big), launched(*small[:2])
    small_id = small_launch.data["campaign_id"]
    sink = WatchingSink(small_id)
    stop, wake = threading.Event(), threading.Event()
    fanout_threads = start_fanout_threads(
        [FanoutRunner(FanoutStore(db), contacts_stream(store), EventProducer(sink),
                      f"bench-{n}", BATCH) for n in range(threads)], wake, stop, 0.5)
    requests = FanoutRequests(FanoutStore(db), wake.set)
    requests.launched(big_launch)
    big_started = time.perf_counter()
    time.sleep(1)
    requests.launched(small_launch)
    small_started = time.perf_counter()
    big_key = big_launch.data["campaign_id"].encode()
    while big_key not in sink.ready_at or small_id.encode() not in sink.ready_at:
        time.sleep(0.05)
    stop.set()
    wake.set()
    for thread in fanout_threads:
        thread.join()
    return (sink.first_small_job - small_started, sink.ready_at[small_id.encode()] - small_started,
            sink.ready_at[big_key] - big_started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--others", type=int, default=0,
                        help="contacts of another account, written first")
    args = parser.parse_args()
    env = load_stack_env()
    uri = os.environ.get("SANDESH_MONGO_URI") or env["SANDESH_MONGO_URI"]
    db = mongo.database(uri, f"bench_fanout_{uuid.uuid4().hex[:8]}")
    store = ContactsStore(db)
    account_id, list_id = domain.new_id(), domain.new_id()
    small_account, small_list = domain.new_id(), domain.new_id()
    try:
        ensure_contacts_indexes(db)
        mongo.ensure_indexes(db, INDEXES)
        write_contacts(store, small_account, small_list, 10, "small")
        small_ids = [c["_id"] for c in store.contacts.find({"account_id": small_account},
                                                          {"_id": 1})]
        if args.others:
            write_contacts(store, domain.new_id(), domain.new_id(), args.others, "other")
        took = write_contacts(store, account_id, list_id, args.contacts, "reader")
        print(f"wrote {args.contacts:,} contacts (+{args.others:,} of another account) "
              f"in {took:.1f} s")

        sink = CountingSink()
        runner = FanoutRunner(FanoutStore(db), contacts_stream(store), EventProducer(sink),
                              "bench", BATCH)
        launch = launched(account_id, list_id)
        started = time.perf_counter()
        FanoutRequests(FanoutStore(db)).launched(launch)
        assert runner.run_pending()
        fanout_s = time.perf_counter() - started
        size = FanoutStore(db).get(launch.data["campaign_id"])["produced"]
        assert size == args.contacts == sink.sent - 1, (size, sink.sent)  # + audience.ready

        started = time.perf_counter()
        read = sum(len(batch) for batch in
                   store.stream_audience(account_id, [list_id], None, batch_size=BATCH))
        ceiling_s = time.perf_counter() - started
        assert read == args.contacts, read

        rate, ceiling = size / fanout_s, read / ceiling_s
        print(f"fan-out: {size:,} recipients in {fanout_s:.1f} s = {rate:,.0f} recipients/s")
        print(f"ceiling: the audience query alone, read to the end: {ceiling_s:.1f} s = "
              f"{ceiling:,.0f} contacts/s")
        print(f"ratio to the ceiling: {rate / ceiling:.2f}")
        print(f"a million recipients at this rate: {1e6 / rate:,.0f} s")

        for threads in (1, 2):
            first, ready, big_s = small_beside_big(db, store, (account_id, list_id),
                                                   (small_account, small_list, small_ids),
                                                   threads)
            print(f"{threads} fan-out thread(s): a 10-recipient campaign launched 1 s into "
                  f"the big fan-out had its first job out after {first:.2f} s and its "
                  f"audience.ready after {ready:.2f} s; the big one took {big_s:.1f} s")
    finally:
        mongo.client(uri).drop_database(db.name)


if __name__ == "__main__":
    main()
