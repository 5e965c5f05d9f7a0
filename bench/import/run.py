"""Benchmark: CSV import rows/s against its ceiling, and its memory.

    .venv/bin/python bench/import/run.py [--rows 200000] [--batch 1000] [--searchable city]

1. Generates a CSV of --rows contacts with four custom fields (text, number,
   date, boolean) in a temporary directory (deleted afterwards). Fields
   named by --searchable are made searchable, their indexes built first.
2. Imports it into an empty list of a fresh account through the real code
   path: the import job document, the worker's claim, and
   services.contacts.imports.process against the stack's FerretDB, in this
   process. Events are built and validated as in production; only the final
   hand-over to Kafka is replaced by a sink that counts and drops them (200k
   benchmark events have no business on the shared contacts.events topic).
   Peak RSS is read from /proc/self/status (VmHWM, reset before the import).
   The CPU each process spent per row is printed beside it: FerretDB's, and
   this process's, which runs the import's Python.
3. The ceiling: the same contact documents, built beforehand batch by batch,
   written with plain insert_many into a fresh collection of the same server.
Prints both rates, the ratio (target >= 0.6) and the memory figures. The
benchmark database is dropped at the end.
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.send import cpu  # noqa: E402
from bench.sinks import CountingSink  # noqa: E402
from devstack.env import load_stack_env  # noqa: E402
from services.contacts import domain, imports  # noqa: E402
from services.contacts.store import ContactsStore, ensure_contacts_indexes  # noqa: E402
from shared import mongo  # noqa: E402
from shared.kafka.producer import EventProducer  # noqa: E402

SALT = "bench-salt"
CITIES = ["Pune", "Mumbai", "Delhi", "Goa", "Chennai", "Kolkata", "Jaipur", "Surat"]
DOMAINS = [f"mail{i}.example.com" for i in range(40)]


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")   # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def generate(path: Path, rows: int) -> int:
    rnd = random.Random(42)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "city", "age", "signed_up", "vip"])
        for i in range(rows):
            writer.writerow([f"user.{i}.{rnd.randrange(10**6)}@{DOMAINS[i % len(DOMAINS)]}",
                             f"User {i}", rnd.choice(CITIES), rnd.randrange(18, 90),
                             f"20{rnd.randrange(10, 26)}-{rnd.randrange(1, 13):02d}-"
                             f"{rnd.randrange(1, 29):02d}", rnd.choice(["yes", "no"])])
    return path.stat().st_size


def setup(store: ContactsStore, account_id: str, searchable: set[str]) -> tuple[str, dict]:
    ensure_contacts_indexes(store.db)
    list_id = domain.new_id()
    store.lists.insert_one({"_id": list_id, "account_id": account_id, "name": "bench",
                            "description": "", "created_at": domain.now(),
                            "updated_at": domain.now()})
    for key, kind in (("city", "text"), ("age", "number"), ("signed_up", "date"),
                      ("vip", "boolean")):
        store.fields.insert_one({"_id": domain.new_id(), "account_id": account_id, "key": key,
                                 "label": key, "type": kind, "choices": [],
                                 "searchable": key in searchable})
        if key in searchable:
            store.index_field(key)
    return list_id, store.field_definitions(account_id)


def run_import(store: ContactsStore, path: Path, size: int, account_id: str, list_id: str,
               batch: int, import_dir: str) -> tuple[float, dict, int, list[int]]:
    job = imports.new_import(account_id, list_id, domain.ordered_id(), str(path), size,
                             {"mode": "add"}, "bench", domain.now())
    store.imports.insert_one(job)
    claimed = imports.claim(store, "bench", 600, domain.now())
    sink = CountingSink()
    samples: list[int] = []
    stop = threading.Event()

    def sample():
        while not stop.wait(0.5):
            samples.append(status_kb("VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    done = imports.process(store, EventProducer(sink), SALT, claimed, "bench", import_dir,
                           batch_rows=batch, lease_seconds=600)
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    return elapsed, done, sink.sent, samples


def run_ceiling(db, path: Path, account_id: str, list_id: str, definitions: dict,
                batch: int, unique_index: bool = False) -> tuple[float, int]:
    """insert_many of the same documents the import creates, built outside the
    timer; with `unique_index`, into a collection that has the contacts'
    unique (account_id, email_hash) index, which the import must keep."""
    collection = db[f"ceiling_{uuid.uuid4().hex[:8]}"]
    if unique_index:
        collection.create_index([("account_id", 1), ("email_hash", 1)], unique=True)
    at = domain.now()
    inserted, elapsed = 0, 0.0
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        docs = []
        for number, row in enumerate(reader, start=2):
            addr = domain.address(row[0], SALT)
            fields = domain.check_fields(definitions, dict(zip(
                ("city", "age", "signed_up", "vip"), row[2:])), from_text=True)
            doc = {"_id": domain.new_id(), "account_id": account_id, "email": addr.email,
                   "email_hash": addr.hash, "name": row[1], "fields": fields, "status": "active",
                   "suppressed": False,
                   "lists": {list_id: domain.membership("subscribed", "import", at,
                                                        import_id="x" * 32, row=number)},
                   "list_ids": [list_id], "subscribed_list_ids": [list_id],
                   "origin": {"via": "import", "import_id": "x" * 32, "row": number},
                   "created_at": at, "updated_at": at}
            docs.append(doc)
            if len(docs) == batch:
                started = time.perf_counter()
                collection.insert_many(docs, ordered=False)
                elapsed += time.perf_counter() - started
                inserted += len(docs)
                docs = []
        if docs:
            started = time.perf_counter()
            collection.insert_many(docs, ordered=False)
            elapsed += time.perf_counter() - started
            inserted += len(docs)
    return elapsed, inserted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--searchable", default="",
                        help="comma-separated custom fields (city, age, signed_up, vip) to make "
                             "searchable (the ceiling has no such index)")
    args = parser.parse_args()
    searchable = {key for key in args.searchable.split(",") if key}
    env = load_stack_env()
    uri = os.environ.get("SANDESH_MONGO_URI") or env["SANDESH_MONGO_URI"]
    db_name = f"bench_import_{uuid.uuid4().hex[:8]}"
    db = mongo.database(uri, db_name)
    store = ContactsStore(db)
    account_id = domain.new_id()
    try:
        with tempfile.TemporaryDirectory(prefix="sandesh-bench-import-") as tmp:
            path = Path(tmp) / "contacts.csv"
            t = time.perf_counter()
            size = generate(path, args.rows)
            print(f"generated {args.rows:,} rows, {size / 1e6:.1f} MB in "
                  f"{time.perf_counter() - t:.1f} s ({path.name}, temporary)")
            list_id, definitions = setup(store, account_id, searchable)
            rss_before = status_kb("VmRSS")
            peak_reset = reset_peak_rss()
            upload = Path(tmp) / "upload.csv"
            os.link(path, upload)   # the import deletes its upload when done
            this_process = {os.getpid(): "the import (this process)"}
            before = cpu.snapshot(this_process)
            elapsed, done, events, samples = run_import(store, upload, size, account_id, list_id,
                                                        args.batch, tmp)
            import_cpu = cpu.report(before, cpu.snapshot(this_process, among=before), args.rows,
                                    unit="row")
            peak = status_kb("VmHWM") if peak_reset else max(samples or [0])
            counters = done["counters"]
            assert done["status"] == "done", done
            assert counters["created"] == args.rows, counters
            import_rate = args.rows / elapsed
            print(f"import:  {args.rows:,} rows in {elapsed:.1f} s = {import_rate:,.0f} rows/s "
                  f"(status {done['status']}, created {counters['created']:,}, "
                  f"{events:,} events encoded)")
            quarter = max(1, len(samples) // 4)
            print(f"memory:  RSS {rss_before / 1024:.0f} MB before, peak {peak / 1024:.0f} MB "
                  f"during the import; RSS over time (MB): "
                  + ", ".join(f"{s / 1024:.0f}" for s in samples[::quarter][:5]))
            print(f"         {import_cpu}")
            ferretdb = cpu.pid_of("ferretdb")
            ferretdb_before = cpu.cpu_seconds(ferretdb) if ferretdb else 0.0
            ceiling_elapsed, inserted = run_ceiling(db, path, account_id, list_id, definitions,
                                                    args.batch)
            ceiling_rate = inserted / ceiling_elapsed
            print(f"ceiling: insert_many of {inserted:,} identical documents in "
                  f"{ceiling_elapsed:.1f} s = {ceiling_rate:,.0f} rows/s")
            if ferretdb:
                used = cpu.cpu_seconds(ferretdb) - ferretdb_before
                print(f"         FerretDB CPU ms per row: {used * 1000 / inserted:.2f}")
            print(f"ratio:   import / ceiling = {import_rate / ceiling_rate:.2f} (target >= 0.6)")
            indexed_elapsed, inserted = run_ceiling(db, path, account_id, list_id, definitions,
                                                    args.batch, unique_index=True)
            indexed_rate = inserted / indexed_elapsed
            print(f"         the same into a collection with the contacts' unique index: "
                  f"{indexed_rate:,.0f} rows/s; import / that = {import_rate / indexed_rate:.2f}")
    finally:
        mongo.client(uri).drop_database(db_name)


if __name__ == "__main__":
    main()
