"""CSV imports: the job document, the claim with a lease, and the processor
that runs in the contacts worker (never in a web request).

Resume without duplicates: after every batch the job records, in one atomic
update, the byte offset and record number reached, the counters, and the
size of the rejected-rows file. A worker that dies mid-batch leaves some of
that batch written; the next worker starts again at the last checkpoint and
recognises its own earlier writes: every membership the import creates
carries (import_id, row), and a contact it created carries the same origin,
so a replayed row is counted exactly as the first time, and the unique
(account_id, email_hash) index means a contact is never created twice.

Speed: three stages overlap (_Pipeline): parsing a batch, writing the ones
before it at once (WRITES_IN_FLIGHT), and announcing the one before those
(its events, consent entry and checkpoint), so the database is not kept
waiting while Python encodes events. Announcing and checkpointing go in
file order. A batch is one bulk insert of the rows that look new
(unordered); the unique index turns the ones that already exist into
duplicate-key errors, and only those are read back and handled as updates.
Importing into an empty list therefore costs about what a plain
insert_many with that index does.
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import logging
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Any

from kafka.errors import KafkaError
from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import ConnectionFailure, DuplicateKeyError
from pymongo.operations import UpdateOne

from services.contacts import csvread, domain, events, rejected_rows
from services.contacts.import_files import open_private, rejected_path
from services.contacts.store import ContactsStore, contact_document
from shared.kafka.producer import EventProducer
from shared.kafka.rdkafka_impl import DeliveryFailed
from shared.mongo import DUPLICATE_KEY, documents_kept_out_of_errors, insert_new
from shared.pii import InvalidEmail
from shared.header_text import NOT_ONE_LINE, is_one_line

log = logging.getLogger(__name__)

CLAIM_CANDIDATES = 8
# Batches written at once. With one, FerretDB sat idle a quarter of the
# import between a batch's reply and the next batch's request; with more it
# reads one insert while it writes another (bench/import, 200,000 rows:
# 4,900-6,200 rows/s with one, 6,600-7,400 with two). Three gained nothing
# while concurrent writes met SQLite's lock; since FerretDB's writes take
# turns (its patch 11): 8,851-8,938 rows/s with two, 9,911-10,509 with
# three, 8,344-9,543 with four.
WRITES_IN_FLIGHT = 3
COUNTERS = ("read", "created", "updated", "skipped_duplicate", "skipped_suppressed", "rejected")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_ATTEMPTS = 5   # failures, not counting outages
# Errors an outage of MongoDB or Kafka explains: they delay an import, and
# never count towards giving it up (a Kafka outage of ~15 minutes did).
OUTAGES = (ConnectionFailure, KafkaError, DeliveryFailed)


class LeaseLost(Exception):
    """Another worker owns the import now (or it was cancelled)."""


LIST_DELETED = "the list was deleted during the import; the contacts it created stay"


class ListDeleted(Exception):
    """The import's list is gone: nothing more to import into."""


def _list_gone(store: ContactsStore, job: dict) -> bool:
    """Whether the import's list was deleted; if so, the memberships of it
    that rows written after the deletion made are dropped, as deleting the
    list dropped the others."""
    if store.get_list(job["account_id"], job["list_id"]) is not None:
        return False
    store.drop_memberships(job["account_id"], job["list_id"])
    return True


def discard_upload(job: dict) -> None:
    """An import over (done, failed or cancelled) keeps no copy of its file:
    data minimisation. The rejected rows stay for the account to fetch."""
    try:
        os.remove(job["file"]["path"])
    except OSError:
        pass


def discard_account_files(import_dir: str, account_id: str) -> None:
    """A deleted account's uploads and rejected rows, all of them: under the
    scrubs' lock, so that none rewrites a file back into the folder."""
    if account_id and os.path.basename(account_id) == account_id and account_id not in (".", ".."):
        folder = os.path.join(import_dir, account_id)
        with rejected_rows.account_lock(folder):
            shutil.rmtree(folder, ignore_errors=True)


def new_import(account_id: str, list_id: str, import_id: str, path: str, size: int,
               options: dict, actor: str, at: datetime) -> dict:
    return {"_id": import_id, "account_id": account_id, "list_id": list_id,
            "status": "pending", "file": {"path": path, "size": size,
                                          "name": options.get("filename") or ""},
            "options": {k: options.get(k) for k in ("mode", "mapping", "delimiter", "encoding",
                                                    "has_header", "policy_version",
                                                    "consent_wording")},
            "checkpoint": {"offset": 0, "row": 0, "rejected_bytes": 0},
            "counters": {c: 0 for c in COUNTERS}, "lease_owner": None, "lease_until": EPOCH,
            "attempts": 0, "actor": actor, "error": None, "created_at": at,
            "started_at": None, "finished_at": None}


# -- the job queue -----------------------------------------------------------
def claim(store: ContactsStore, owner: str, lease_seconds: int, now: datetime) -> dict | None:
    """Take the oldest import that is pending, or running with an expired
    lease (its worker died). Two workers never both win: the one that takes
    it is the one whose insert of a marker for this attempt goes through (a
    conditional update is no compare-and-set on FerretDB 1.24, which reads
    then writes the whole document)."""
    candidates = store.imports.find(
        {"status": {"$in": ["pending", "running"]}, "lease_until": {"$lt": now}},
        {"attempts": 1}).sort("_id", ASCENDING).limit(CLAIM_CANDIDATES)
    for candidate in list(candidates):
        try:
            store.import_claims.insert_one({"_id": f"{candidate['_id']}:{candidate['attempts']}",
                                            "owner": owner, "at": now})
        except DuplicateKeyError:
            continue  # another worker took this attempt
        return store.imports.find_one_and_update(
            # not cancelled since it was found
            {"_id": candidate["_id"], "status": {"$in": ["pending", "running"]}},
            {"$set": {"status": "running", "lease_owner": owner,
                      "lease_until": now + timedelta(seconds=lease_seconds)},
             "$inc": {"attempts": 1}},
            return_document=ReturnDocument.AFTER)
    return None


# -- processing --------------------------------------------------------------
@dataclass
class Row:
    number: int
    end_offset: int
    cells: list[str]
    addr: domain.Address | None = None
    name: str | None = None
    fields: dict = field(default_factory=dict)


@dataclass
class Context:
    store: ContactsStore
    producer: EventProducer
    salt: str
    job: dict
    owner: str
    lease_seconds: int
    custom_fields: dict
    mapping: csvread.Mapping
    rejected: Any                         # the rejected-rows file, opened for append
    counters: dict
    clock: Any = domain.now
    cancelling: bool = False               # the user cancelled: stop after what is written

    @property
    def account_id(self) -> str:
        return self.job["account_id"]

    @property
    def list_id(self) -> str:
        return self.job["list_id"]

    @property
    def import_id(self) -> str:
        return self.job["_id"]

    @property
    def upsert(self) -> bool:
        return self.job["options"].get("mode") == "upsert"


def process(store: ContactsStore, producer: EventProducer, salt: str, job: dict, owner: str,
            import_dir: str, batch_rows: int = 1000, lease_seconds: int = 60) -> dict:
    """Run a claimed import to its end (or until its lease is lost). Returns
    the final job document."""
    path = job["file"]["path"]
    checkpoint = job["checkpoint"]
    reject_file = rejected_path(import_dir, job["account_id"], job["_id"])
    os.makedirs(os.path.dirname(reject_file), exist_ok=True)
    with open(path, "rb") as upload, open_private(reject_file, "a+b") as rejected:
        rejected.truncate(checkpoint["rejected_bytes"])  # drop what a dead worker wrote after it
        rejected.seek(0, io.SEEK_END)
        if rejected.tell() == 0:
            rejected.write(b"row,reason,cells\r\n")
        try:
            if _list_gone(store, job):   # a worker that died may have written into it
                raise ListDeleted(LIST_DELETED)
            dialect, mapping = _prepare(store, job, upload)
        except (csvread.MappingError, UnicodeError, LookupError, ListDeleted) as exc:
            failed = _finish(store, job, owner, "failed", str(exc)[:500])
            discard_upload(job)
            return failed
        ctx = Context(store, producer, salt, job, owner, lease_seconds,
                      store.field_definitions(job["account_id"]), mapping,
                      io.TextIOWrapper(rejected, encoding="utf-8", newline="", write_through=True),
                      dict(job["counters"]))
        writer = csv.writer(ctx.rejected)
        batch: list[Row] = []
        first = checkpoint["row"] == 0
        with _Pipeline(ctx) as pipeline:
            for item in csvread.records(upload, dialect, checkpoint["offset"], checkpoint["row"]):
                if isinstance(item, csvread.Unreadable):
                    batch.append(Row(item.number, item.end_offset, [item.text] if item.text else []))
                    batch[-1].fields = {"_reject": item.reason}
                else:
                    if first and dialect.has_header and item.number == 1:
                        first = False
                        _checkpoint(ctx, item.number, item.end_offset, _rejected_position(ctx))
                        continue
                    if not any(cell.strip() for cell in item.cells):
                        continue  # a blank line is not a row
                    batch.append(Row(item.number, item.end_offset, item.cells))
                if len(batch) >= batch_rows:
                    if ctx.cancelling:
                        break
                    pipeline.push(_prepare_batch(ctx, batch, writer))
                    batch = []
            if batch and not ctx.cancelling:
                pipeline.push(_prepare_batch(ctx, batch, writer))
            # Every batch written is announced, consent logged and counted,
            # also when the import was cancelled meanwhile.
            pipeline.finish()
        ctx.rejected.flush()
        ctx.rejected.detach()
    if _list_gone(store, job):   # deleted while the import ran
        done = _finish(store, job, owner, "failed", LIST_DELETED)
    else:
        done = _finish(store, job, owner, "cancelled" if ctx.cancelling else "done", None)
    discard_upload(job)
    return done


def _column_names(options: dict, custom_fields: dict[str, dict]) -> list[str]:
    """What a header of this import may call its columns, besides email and
    name: the account's custom fields (key or label) and the mapping's names."""
    mapping = options.get("mapping") or {}
    fields = mapping.get("fields") if isinstance(mapping.get("fields"), dict) else {}
    named = [mapping.get("email"), mapping.get("name"), *fields.values()]
    labels = [str(d.get("label") or "") for d in custom_fields.values()]
    return [n for n in (*named, *custom_fields, *labels) if isinstance(n, str) and n]


def _prepare(store: ContactsStore, job: dict, upload) -> tuple[csvread.Dialect, csvread.Mapping]:
    options = job["options"]
    if options.get("encoding"):
        "".encode(options["encoding"])  # LookupError for an unknown encoding
    custom_fields = store.field_definitions(job["account_id"])
    dialect = csvread.detect(upload, options.get("delimiter"), options.get("encoding"),
                             options.get("has_header"), _column_names(options, custom_fields))
    header = csvread.header_row(upload, dialect)
    # A headerless file's email column is guessed from the first row that
    # holds an address: a bad first row failed the whole import.
    first_row: list[str] = []
    for item in itertools.islice(csvread.records(upload, dialect), csvread.ADDRESS_ROWS + 1):
        if isinstance(item, csvread.Record) and not (dialect.has_header and item.number == 1):
            first_row = first_row or item.cells
            if dialect.has_header or any(csvread.LOOKS_LIKE_EMAIL.match(c) for c in item.cells):
                first_row = item.cells
                break
    mapping = csvread.build_mapping(header, first_row, options.get("mapping"), custom_fields)
    store.imports.update_one({"_id": job["_id"]}, {"$set": {
        "dialect": {"encoding": dialect.encoding, "delimiter": dialect.delimiter,
                    "has_header": dialect.has_header},
        "started_at": job.get("started_at") or domain.now()}})
    return dialect, mapping


def _width(cells: list[str]) -> int:
    """Cells up to the last one with something in it: spreadsheets often
    write a row with trailing empty cells (a@x.com,Ann,), which is no
    misplaced delimiter."""
    width = len(cells)
    while width and not cells[width - 1].strip():
        width -= 1
    return width


def _parse(ctx: Context, row: Row) -> str | None:
    """Fill the row's address, name and fields; the reason it is rejected, if it is."""
    if "_reject" in row.fields:
        return row.fields.pop("_reject")
    if any("\ufffd" in cell for cell in row.cells):
        return csvread.NOT_UTF8
    m = ctx.mapping
    cells = [domain.from_csv_safe(cell) for cell in row.cells]  # an export reads back as it was
    width = _width(cells)
    if m.width and width > m.width:
        return f"{width} cells where the header has {m.width}"
    if m.email >= len(cells) or not cells[m.email].strip():
        return "no email address"
    try:
        row.addr = domain.address(cells[m.email], ctx.salt)
    except InvalidEmail as exc:
        return f"invalid email address: {exc}"
    if m.name is not None and m.name < len(cells):
        name = cells[m.name].strip()
        if len(name) > 200:
            return "name longer than 200 characters"
        if not is_one_line(name):
            return f"name: {NOT_ONE_LINE}"
        row.name = name or None
    for key, column in m.fields.items():
        if column < len(cells) and cells[column].strip():
            try:
                row.fields[key] = domain.field_to_store(ctx.custom_fields[key],
                                                        cells[column].strip(), from_text=True)
            except domain.InvalidValue as exc:
                return f"{key}: {exc}"
            except (ValueError, OverflowError):  # one no check foresaw: this row's, not the file's
                return f"{key}: not a value this field can hold"
    return None


def _rejected_cell(cell: str) -> str:
    """A cell as the rejected rows show it: escaped against formulas, and no
    longer than a cell may be, so that the file reads back (an erasure
    scrubs it with the same csv limit): escaping a cell of the full length
    made it one character too long."""
    return domain.csv_safe(cell)[:csvread.MAX_FIELD]


class _RecordedEvents:
    """Stands in for the producer while a batch is written: the events wait
    for the announcing stage, which publishes them in the same order."""

    def __init__(self):
        self.calls: list[tuple[str, Any, str | None]] = []

    def publish(self, topic: str, event, key: str | None = None) -> None:
        self.calls.append((topic, event, key))


@dataclass
class Prepared:
    """A parsed batch, ready to write: counted so far in `delta` (applied to
    the job's counters only when the batch is committed)."""
    rows: list[Row]
    docs: list[dict]
    delta: dict
    first_row: int
    last_row: int
    end_offset: int
    rejected_bytes: int
    at: datetime
    events: _RecordedEvents = field(default_factory=_RecordedEvents)

    @cached_property
    def hashes(self) -> frozenset[str]:
        """The address hashes of the rows this batch writes."""
        return frozenset(row.addr.hash for row in self.rows)


def _rejected_position(ctx: Context) -> int:
    ctx.rejected.flush()
    return ctx.rejected.buffer.tell()


class _Pipeline:
    """This thread parses the next batch while WRITES_IN_FLIGHT threads
    write the ones before it to the database and another announces the
    batch before those: publishes the events the write recorded, logs the
    consent entry and checkpoints.
    Batches are announced in file order, so a checkpoint never passes a
    batch not yet written. A batch sharing an address with one being
    written waits for that one, so the file's first row of an address is
    the one that creates the contact, as when batches went one at a time.
    An error in any stage is raised here at the next push. A crash loses
    nothing: a batch written but not checkpointed is replayed, and
    _existing recognises its rows."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.writer = ThreadPoolExecutor(max_workers=WRITES_IN_FLIGHT,
                                         thread_name_prefix="import-writer")
        self.announcer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-announcer")
        self.writing: list[tuple[Future, Prepared]] = []   # oldest first
        self.announcing: Future | None = None

    def push(self, prepared: Prepared) -> None:
        while self.writing and (len(self.writing) >= WRITES_IN_FLIGHT
                                or self._shares_an_address(prepared)):
            self._announce_oldest()
        self.writing.append((self.writer.submit(_write, self.ctx, prepared), prepared))

    def finish(self) -> None:
        while self.writing:
            self._announce_oldest()
        if self.announcing is not None:
            self.announcing.result()

    def _shares_an_address(self, prepared: Prepared) -> bool:
        return any(not prepared.hashes.isdisjoint(written.hashes) for _, written in self.writing)

    def _announce_oldest(self) -> None:
        future, prepared = self.writing.pop(0)
        subscribed = future.result()
        if self.announcing is not None:
            self.announcing.result()
        self.announcing = self.announcer.submit(_announce, self.ctx, prepared, subscribed)

    def __enter__(self) -> "_Pipeline":
        return self

    def __exit__(self, *exc_info) -> None:
        self.writer.shutdown(wait=True)
        self.announcer.shutdown(wait=True)


def _prepare_batch(ctx: Context, batch: list[Row], writer) -> Prepared:
    delta = dict.fromkeys(COUNTERS, 0)
    at = ctx.clock()
    valid: list[Row] = []
    for row in batch:
        delta["read"] += 1
        reason = _parse(ctx, row)
        if reason:
            delta["rejected"] += 1
            writer.writerow([row.number, reason, *[_rejected_cell(c) for c in row.cells]])
        else:
            valid.append(row)
    suppressed = {e["email_hash"] for e in
                  ctx.store.suppression_entries(ctx.account_id, {r.addr.hash for r in valid})}
    fresh: list[Row] = []
    seen: set[str] = set()
    for row in valid:
        if row.addr.hash in suppressed:
            delta["skipped_suppressed"] += 1
        elif row.addr.hash in seen:
            delta["skipped_duplicate"] += 1      # twice in this batch
        else:
            seen.add(row.addr.hash)
            fresh.append(row)
    return Prepared(fresh, [_new_doc(ctx, row, at) for row in fresh], delta, batch[0].number,
                    batch[-1].number, batch[-1].end_offset, _rejected_position(ctx), at)


def _announce(ctx: Context, p: Prepared, subscribed_ids: list[str]) -> None:
    for topic, event, key in p.events.calls:
        ctx.producer.publish(topic, event, key=key)
    if subscribed_ids:
        _log_consent(ctx, p.first_row, subscribed_ids, p.at)
    ctx.producer.flush()
    for name, value in p.delta.items():
        ctx.counters[name] += value
    _checkpoint(ctx, p.last_row, p.end_offset, p.rejected_bytes)


def _new_doc(ctx: Context, row: Row, at: datetime) -> dict:
    doc = contact_document(ctx.account_id, row.addr, name=row.name, fields=row.fields, at=at,
                           origin={"via": "import", "import_id": ctx.import_id, "row": row.number})
    doc["lists"] = {ctx.list_id: domain.membership("subscribed", "import", at,
                                                   import_id=ctx.import_id, row=row.number)}
    doc["list_ids"] = [ctx.list_id]
    doc["subscribed_list_ids"] = [ctx.list_id]
    return doc


def _write(ctx: Context, p: Prepared) -> list[str]:
    """Insert what looks new; the rows whose address exists come back as
    duplicate-key errors and are handled as existing contacts. Returns the
    ids of contacts newly subscribed to the list by this batch."""
    if not p.docs:
        return []
    # Any error but a duplicate key is raised: the batch is retried from the checkpoint.
    conflicted = {index for index, new in enumerate(insert_new(ctx.store.contacts, p.docs))
                  if not new}
    late = _suppressed_meanwhile(ctx, [doc for i, doc in enumerate(p.docs) if i not in conflicted])
    subscribed: list[str] = []
    for index, doc in enumerate(p.docs):
        if doc["_id"] in late:
            p.delta["skipped_suppressed"] += 1
        elif index not in conflicted:
            p.delta["created"] += 1
            subscribed.append(doc["_id"])
            events.contact_created(p.events, doc, via="import")
    if conflicted:
        subscribed += _existing(ctx, [p.rows[i] for i in sorted(conflicted)], p.at, p.delta,
                                p.events)
    return subscribed


def _suppressed_meanwhile(ctx: Context, inserted: list[dict]) -> set[str]:
    """Of the contacts just inserted, the ids of those whose address was
    suppressed since the batch was checked, deleted again: an erasure in
    between found no contact to erase and then its import put the person
    back. The erasure looks for the address again once it is suppressed
    (privacy._erase), so one of the two looks sees the other's write."""
    if not inserted:
        return set()
    now_suppressed = {e["email_hash"] for e in ctx.store.suppression_entries(
        ctx.account_id, {doc["email_hash"] for doc in inserted})}
    late = [doc["_id"] for doc in inserted if doc["email_hash"] in now_suppressed]
    if late:
        ctx.store.contacts.delete_many({"account_id": ctx.account_id, "_id": {"$in": late}})
    return set(late)


def _existing(ctx: Context, rows: list[Row], at: datetime, counters: dict,
              recorded: _RecordedEvents) -> list[str]:
    found = ctx.store.contacts_by_hashes(ctx.account_id, [r.addr.hash for r in rows])
    updates, subscribed = [], []
    changed: dict[str, list[str]] = {}   # contact id -> names of what this batch changes
    for row in rows:
        contact = found.get(row.addr.hash)
        if contact is None:   # deleted since the insert failed: the next run creates it
            raise RuntimeError("a conflicting contact vanished; retrying the batch")
        member = contact.get("lists", {}).get(ctx.list_id)
        ours = member and member.get("import_id") == ctx.import_id
        # This row changed the contact in a run that died before announcing
        # it: announced now, whatever became of the contact since.
        changed_here = (contact.get("changed_by_import") or {}).get("at") == \
            f"{ctx.import_id}:{row.number}"
        if changed_here:
            events.contact_updated(recorded, contact, contact["changed_by_import"]["fields"],
                                   contact["revision"])
        if ours and member.get("row") == row.number:          # replay after a crash
            origin = contact.get("origin", {})
            if origin.get("import_id") == ctx.import_id and origin.get("row") == row.number:
                counters["created"] += 1
                events.contact_created(recorded, contact, via="import")
            else:
                counters["updated"] += 1
                events.contact_subscribed(recorded, contact, ctx.list_id, "import")
            subscribed.append(contact["_id"])
            continue
        if ours:
            counters["skipped_duplicate"] += 1                 # an earlier row of this file
            continue
        if changed_here:                                       # replay after a crash
            counters["updated"] += 1
            continue
        status = member.get("status") if member else None
        if status == "unsubscribed" or contact["status"] != "active":
            counters["skipped_suppressed"] += 1                # opted out: never re-subscribed here
            continue
        changes = _field_changes(ctx, row, contact) if ctx.upsert else {}
        if status == "subscribed":
            if not changes:
                counters["skipped_duplicate"] += 1             # already on the list
                continue
            update: dict = {"$set": {}}
        else:
            update = domain.membership_update(ctx.list_id, domain.membership(
                "subscribed", "import", at, import_id=ctx.import_id, row=row.number))
            subscribed.append(contact["_id"])
            events.contact_subscribed(recorded, contact, ctx.list_id, "import")
        update["$set"].update(changes)
        update["$set"].update(domain.changed_search_keys(changes))
        update["$set"]["updated_at"] = at
        if changes:
            names = sorted({k.split(".", 1)[-1] if k.startswith("fields.") else k for k in changes})
            update["$set"]["changed_by_import"] = {"at": f"{ctx.import_id}:{row.number}",
                                                   "fields": names}
            update["$inc"] = {"revision": 1}
            changed[contact["_id"]] = names
        updates.append(UpdateOne({"_id": contact["_id"], "account_id": ctx.account_id}, update))
        counters["updated"] += 1
    if updates:
        with documents_kept_out_of_errors():  # its error would quote names and fields
            ctx.store.contacts.bulk_write(updates, ordered=False)
    if changed:
        # The revision each change made, read back: another writer's change
        # in between counts too, so a job read between the two is stale.
        for contact in ctx.store.contacts.find({"_id": {"$in": list(changed)},
                                                "account_id": ctx.account_id},
                                               {"account_id": 1, "revision": 1}):
            events.contact_updated(recorded, contact, changed[contact["_id"]],
                                   contact["revision"])
    return subscribed


def _field_changes(ctx: Context, row: Row, contact: dict) -> dict:
    changes = {}
    if row.name and row.name != contact.get("name"):
        changes["name"] = row.name
    current = contact.get("fields") or {}
    for key, value in row.fields.items():
        if current.get(key) != value:
            changes[f"fields.{key}"] = value  # key: a declared custom field
    return changes


def _log_consent(ctx: Context, first_row: int, contact_ids: list[str], at: datetime) -> None:
    """One consent entry per batch, naming every contact it subscribed; its
    id is fixed by (import, first row) so a replayed batch writes it once."""
    created = ctx.job["created_at"]
    digest = hashlib.sha256(f"{ctx.import_id}:{first_row}".encode()).hexdigest()
    options = ctx.job["options"]
    try:
        ctx.store.consent.insert_one({
            "_id": f"{int(created.timestamp() * 1000):012x}{digest[:20]}",
            "account_id": ctx.account_id, "contact_ids": contact_ids, "list_id": ctx.list_id,
            "action": "subscribe", "via": "import", "import_id": ctx.import_id,
            "ip": None, "source_url": None, "wording": options.get("consent_wording"),
            "policy_version": options.get("policy_version"), "actor": ctx.job["actor"], "at": at})
    except Exception as exc:
        if getattr(exc, "code", None) != DUPLICATE_KEY:
            raise


def _checkpoint(ctx: Context, row: int, offset: int, rejected_bytes: int) -> None:
    """Progress saved; notes a cancel the user asked for (files_api), which
    the import obeys once what it has written is announced."""
    now = ctx.clock()
    job = ctx.store.imports.find_one_and_update(
        {"_id": ctx.import_id, "lease_owner": ctx.owner, "status": "running"},
        {"$set": {"checkpoint": {"offset": offset, "row": row, "rejected_bytes": rejected_bytes},
                  "counters": dict(ctx.counters),
                  "lease_until": now + timedelta(seconds=ctx.lease_seconds), "updated_at": now}})
    if job is None:
        raise LeaseLost(ctx.import_id)
    if job.get("cancel_requested"):
        ctx.cancelling = True


def _finish(store: ContactsStore, job: dict, owner: str, status: str, error: str | None) -> dict:
    return store.imports.find_one_and_update(
        {"_id": job["_id"], "lease_owner": owner, "status": "running"},
        {"$set": {"status": status, "error": error, "finished_at": domain.now(),
                  "lease_until": EPOCH}},
        return_document=ReturnDocument.AFTER) or store.imports.find_one({"_id": job["_id"]})


def run_pending(store: ContactsStore, producer: EventProducer, salt: str, import_dir: str,
                owner: str, batch_rows: int, lease_seconds: int) -> bool:
    """Claim and process one import; False when there was none."""
    job = claim(store, owner, lease_seconds, domain.now())
    if job is None:
        return False
    log.info("import started", extra={"import_id": job["_id"], "attempt": job["attempts"]})
    try:
        done = process(store, producer, salt, job, owner, import_dir, batch_rows, lease_seconds)
    except LeaseLost:
        log.warning("import lease lost", extra={"import_id": job["_id"]})
        return True
    except FileNotFoundError:
        done = _finish(store, job, owner, "failed", "the uploaded file is missing")
    except OUTAGES:
        raise   # the lease expires and a worker resumes it, however long the outage lasts
    except Exception:
        failures = store.imports.find_one_and_update(
            {"_id": job["_id"]}, {"$inc": {"failures": 1}},
            return_document=ReturnDocument.AFTER)["failures"]
        if failures < MAX_ATTEMPTS:
            raise   # perhaps transient after all: resumed from the checkpoint
        log.exception("import gave up", extra={"import_id": job["_id"]})
        done = _finish(store, job, owner, "failed", f"gave up after {MAX_ATTEMPTS} failures")
        discard_upload(job)
    log.info("import finished", extra={"import_id": job["_id"], "import_status": done["status"],
                                       "counters": done["counters"]})
    _scrub_finished(store, import_dir, salt, job["_id"])   # this one, now that it is over
    return True


def _scrub_finished(store: ContactsStore, import_dir: str, salt: str, import_id: str) -> None:
    """The import's rejected rows, without what its account erased
    (rejected_rows.py). A failure here is left to the worker's sweep."""
    try:
        rejected_rows.scrub_finished_imports(store, import_dir, salt, import_id)
    except Exception:
        log.warning("rejected rows not scrubbed yet; the sweep will", exc_info=True)
