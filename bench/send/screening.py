"""Benchmark: the sender's send-time check against a long suppression list.

    .venv/bin/python -m bench.send.screening [--entries 100000] [--jobs 500]

Before a batch is sent, ContactStateStore.blocked looks up every job's
contact state and both keys of its address (the account's, platform-wide)
by `_id $in` (services/sender/store.py). On MongoDB those are index lookups.
This fills a throwaway database of the stack's MongoDB server with
--entries suppressed addresses and as many contact states, times blocked()
for a batch of --jobs jobs (the sender's batch size), and prints the time a
batch and the server's CPU for it, at a tenth of the entries and at all of
them: with the `_id` index used the two stay close; a server that reads the
collections (FerretDB before devstack/ferretdb_patches.py: 6.4 s a batch at
100,000 entries) grows with them. The database is dropped at the end.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.send import cpu  # noqa: E402
from devstack.env import load_stack_env  # noqa: E402
from services.sender.domain import Job  # noqa: E402
from services.sender.store import ContactStateStore, _address_key  # noqa: E402
from shared import mongo  # noqa: E402
from shared.pii import email_hash  # noqa: E402

SALT = "bench-salt-" + "x" * 22
ACCOUNT = "bench-account"
BATCH = 1000


def fill(db, start: int, stop: int) -> None:
    for first in range(start, stop, BATCH):
        numbers = range(first, min(stop, first + BATCH))
        db.blocked_addresses.insert_many(
            [{"_id": _address_key(email_hash(f"gone{n}@example.com", SALT), ACCOUNT),
              "account_id": ACCOUNT, "reason": "unsubscribed"} for n in numbers], ordered=False)
        db.contacts.insert_many([{"_id": f"contact-{n}", "status": "unsubscribed",
                                  "all_lists": True} for n in numbers], ordered=False)


def batch_of_jobs(count: int) -> list[Job]:
    return [Job.from_event(ACCOUNT, {
        "job_id": uuid.uuid4().hex, "campaign_id": "bench-campaign",
        "contact_id": uuid.uuid4().hex, "attempt": 0,
        "recipient": {"email": f"reader{n}@example.com", "name": ""}}) for n in range(count)]


def measure(store: ContactStateStore, jobs: list[Job], server_pid: int | None,
            repeat: int) -> tuple[float, float | None]:
    """Median milliseconds a batch, and the server's CPU ms a batch."""
    walls = []
    cpu_before = cpu.cpu_seconds(server_pid) if server_pid else None
    for _ in range(repeat):
        started = time.perf_counter()
        store.blocked(jobs)
        walls.append((time.perf_counter() - started) * 1000)
    server_ms = None
    if server_pid:
        server_ms = (cpu.cpu_seconds(server_pid) - cpu_before) * 1000 / repeat
    return statistics.median(walls), server_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    env = load_stack_env()
    client = mongo.client(env["SANDESH_MONGO_URI"])
    name = f"bench_screening_{uuid.uuid4().hex[:8]}"
    db = client[name]
    store = ContactStateStore(db, SALT)
    server_pid = cpu.pid_of("ferretdb")
    jobs = batch_of_jobs(args.jobs)
    try:
        filled = 0
        for entries in (args.entries // 10, args.entries):
            fill(db, filled, entries)
            filled = entries
            wall_ms, server_ms = measure(store, jobs, server_pid, args.repeat)
            server = f", server CPU {server_ms:.0f} ms" if server_ms is not None else ""
            print(f"blocked() for {args.jobs} jobs against {entries:,} suppressed addresses "
                  f"and {entries:,} contact states: {wall_ms:.1f} ms a batch{server}", flush=True)
    finally:
        client.drop_database(name)


if __name__ == "__main__":
    main()
