"""The rejected rows an import keeps for the account to fetch hold the cells
as they were uploaded: addresses and names. A row carrying an address the
account has erased since is taken out of them.

Two paths, so that no erasure misses a file:
- an erasure scrubs the files of the account's imports that are over, for
  the one address it erases (`scrub_account`);
- an import, once over, has its file scrubbed of every address the account
  erased until then (`scrub_finished_imports`, which marks it done with
  `rejected_scrubbed_at`). The import worker runs it for each import it
  ends, and a sweep of the contacts worker once a minute for any import left
  unscrubbed: one whose worker died, or whose scrub failed, after it ended.
The erasure notes the address before it looks at the imports, and an
import is marked over before its scrub reads the notes: one of the two
sees the other. Scrubs of one account's files take turns (a lock file in
the account's folder): two at once each rewrote the file from what it had
read, and the last to finish put back the row the other took out.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import logging
import os
import uuid
from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator

from services.contacts import domain
from services.contacts.import_files import REJECTED_SUFFIX, open_private, rejected_path
from shared.logs import emails_in

log = logging.getLogger(__name__)

RUNNING = ("pending", "running")
FINISHED = ("done", "failed", "cancelled")
HASHES_PER_QUERY = 5_000   # a $in of 300,000 hashes was past MongoDB's 16 MB
MAX_FAILURES = 5           # sweeps of one import's file before it is left to an operator


def scrub_account(store, import_dir: str, account_id: str, salt: str, erased: set[str]) -> int:
    """The rejected rows of the account's imports that are over, without the
    rows holding one of these (just erased) address hashes. Returns how many
    rows went."""
    folder = os.path.join(import_dir, account_id)
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(REJECTED_SUFFIX))
    except FileNotFoundError:
        return 0
    running = {job["_id"] for job in store.imports.find(
        {"account_id": account_id, "status": {"$in": list(RUNNING)}}, {"_id": 1})}
    removed = 0
    for name in names:
        import_id = name[:-len(REJECTED_SUFFIX)]
        if import_id in running:
            continue
        try:
            removed += scrub_file(os.path.join(folder, name), salt, lambda h: h & erased)
        except Exception:
            # The erasure goes on (failing, it held up every privacy request
            # behind it); the sweep tries the file again, then an operator.
            log.exception("rejected rows could not be scrubbed", extra={"import_id": import_id})
            store.imports.update_one({"_id": import_id}, {"$unset": {"rejected_scrubbed_at": ""}})
    return removed


# An access answer travels in one Kafka event (at most ~1 MB): the rows it
# quotes are cut to this many, their cells to this many characters. The
# count says how many there are; the account fetches the rest whole
# (GET /imports/<id>/rejected).
ROWS_QUOTED = 100
CELL_QUOTED = 500


def rows_with(import_dir: str, account_id: str, salt: str,
              hashes: set[str]) -> tuple[list[dict], int]:
    """An access request's part: the rows of the account's imports holding
    one of these address hashes, as the account can fetch them (the row's
    number, why it was refused, its cells), the first ROWS_QUOTED of them,
    and how many there are. An erasure takes the same rows out
    (scrub_account); a row refused before any contact was made of it is
    all the account holds of the person."""
    folder = os.path.join(import_dir, account_id)
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(REJECTED_SUFFIX))
    except FileNotFoundError:
        return [], 0
    found, total = [], 0
    for name in names:
        try:
            for row, row_hashes in _rows(os.path.join(folder, name), salt):
                if not row_hashes & hashes:
                    continue
                total += 1
                if len(found) < ROWS_QUOTED:
                    found.append({"import_id": name[:-len(REJECTED_SUFFIX)],
                                  "row": row[0] if row else None,
                                  "reason": row[1][:CELL_QUOTED] if len(row) > 1 else None,
                                  "cells": [_quoted(cell) for cell in row[2:]]})
        except FileNotFoundError:
            continue  # deleted meanwhile (the account's files, with the account)
    return found, total


def _quoted(cell: str) -> str:
    return cell if len(cell) <= CELL_QUOTED else cell[:CELL_QUOTED] + "… (cut)"


def scrub_finished_imports(store, import_dir: str, salt: str, import_id: str | None = None,
                           limit: int = 20) -> int:
    """Imports over and not scrubbed since (or just the one named): their
    rejected rows without the addresses their account erased. Returns how
    many imports were scrubbed."""
    query: dict = {"status": {"$in": list(FINISHED)}, "rejected_scrubbed_at": {"$exists": False},
                   "rejected_scrub_failures": {"$not": {"$gte": MAX_FAILURES}}}
    if import_id is not None:
        query["_id"] = import_id
    jobs = list(store.imports.find(query, {"account_id": 1}).sort("_id", 1).limit(limit))
    scrubbed = 0
    for job in jobs:
        account_id = job["account_id"]
        try:
            scrub_file(rejected_path(import_dir, account_id, job["_id"]), salt,
                       lambda hashes: store.erased_in_account(account_id, hashes))
        except Exception:
            # One file that cannot be scrubbed must not hold up the others:
            # counted, and left to an operator after MAX_FAILURES rounds.
            log.exception("rejected rows could not be scrubbed", extra={"import_id": job["_id"]})
            store.imports.update_one({"_id": job["_id"]}, {"$inc": {"rejected_scrub_failures": 1}})
            continue
        store.imports.update_one({"_id": job["_id"]},
                                 {"$set": {"rejected_scrubbed_at": datetime.now(timezone.utc)}})
        scrubbed += 1
    return scrubbed


def scrub_file(path: str, salt: str, erased_of: Callable[[set[str]], set[str]]) -> int:
    """Rewrite the file without the rows holding an erased address, in any
    cell (a row refused for its width may have it in another column).
    `erased_of` tells which of some hashes are erased. Read twice, a row at
    a time: a rejected-rows file may hold hundreds of thousands of rows."""
    if not os.path.exists(path):
        return 0
    with account_lock(os.path.dirname(path)) as locked:
        if not locked or not os.path.exists(path):
            return 0   # the account's files were deleted meanwhile
        erased: set[str] = set()
        pending: set[str] = set()
        for _, hashes in _rows(path, salt):
            pending |= hashes
            if len(pending) >= HASHES_PER_QUERY:
                erased |= erased_of(pending)
                pending = set()
        if pending:
            erased |= erased_of(pending)
        if not erased:
            return 0
        removed = _rewrite(path, salt, erased)
    log.info("erased addresses taken out of rejected rows",
             extra={"rows": removed, "file": os.path.basename(path)})
    return removed


def _rows(path: str, salt: str) -> Iterator[tuple[list[str], set[str]]]:
    """(cells, address hashes) of every row; the header has none."""
    with open(path, "rb") as raw:
        reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape",
                                             newline=""))
        for number, row in enumerate(reader):
            yield row, (_hashes(row[2:], salt) if number else set())


def _hashes(cells: Iterable[str], salt: str) -> set[str]:
    """The address hashes of the cells that hold one, as uploaded (the file
    keeps them escaped by domain.csv_safe), or inside other text: a row is
    often rejected because its address came as "Ann <ann@example.com>" or
    "mailto:ann@example.com", and those rows outlived the person's erasure."""
    found = {domain.address_hash(text, salt) for cell in cells if "@" in cell
             for text in {cell, cell[1:] if cell[:1] == "'" else cell, *emails_in(cell)}}
    found.discard(None)
    return found


def _rewrite(path: str, salt: str, erased: set[str]) -> int:
    """Written beside it, then renamed over it: a reader sees the old file
    or the new one. Returns how many rows went."""
    temporary = f"{path}.{uuid.uuid4().hex}.tmp"
    removed = 0
    try:
        with open_private(temporary, "w", encoding="utf-8", errors="surrogateescape",
                          newline="") as out:
            writer = csv.writer(out)
            for row, hashes in _rows(path, salt):
                if hashes & erased:
                    removed += 1
                else:
                    writer.writerow(row)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return removed


@contextlib.contextmanager
def account_lock(folder: str):
    """One scrub of an account's files at a time, across processes (flock on
    a file of the account's folder; on a shared volume, one with POSIX
    locks), and none while the account's files are deleted. Yields False
    when the folder is gone."""
    try:
        lock = open_private(os.path.join(folder, ".scrub.lock"), "a")
    except FileNotFoundError:
        yield False
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
