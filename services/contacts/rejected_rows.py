"""The rejected rows an import keeps for the account to fetch hold the cells
as they were uploaded: addresses and names. A row carrying an address the
account has erased since is taken out of them.

An erasure scrubs the files of the account's imports that are over; an
import still running scrubs its own when it ends. The erasure notes the
address before it looks at the imports, and an import marks itself over
before it reads the notes, so one of the two always sees the other.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import uuid
from typing import Callable, Iterable

from services.contacts import domain
from shared.pii import InvalidEmail

log = logging.getLogger(__name__)

SUFFIX = ".rejected.csv"
RUNNING = ("pending", "running")


def scrub_account(store, import_dir: str, account_id: str, salt: str) -> int:
    """Every finished import's rejected rows of the account, scrubbed of the
    addresses it erased. Returns how many rows went."""
    folder = os.path.join(import_dir, account_id)
    try:
        names = [n for n in os.listdir(folder) if n.endswith(SUFFIX)]
    except FileNotFoundError:
        return 0
    running = {job["_id"] for job in store.imports.find(
        {"account_id": account_id, "status": {"$in": list(RUNNING)}}, {"_id": 1})}
    return sum(scrub_file(store, os.path.join(folder, name), account_id, salt)
               for name in names if name[:-len(SUFFIX)] not in running)


def scrub_file(store, path: str, account_id: str, salt: str) -> int:
    """One import's rejected rows without those naming an address the
    account erased (any cell: a row refused for its width may have its
    address in another column). Returns how many rows went."""
    try:
        with open(path, "rb") as raw:
            rows = list(csv.reader(io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape",
                                                    newline="")))
    except FileNotFoundError:
        return 0
    hashes = {row_index: _hashes(row[2:], salt) for row_index, row in enumerate(rows) if row_index}
    erased = store.erased_in_account(account_id, {h for found in hashes.values() for h in found})
    if not erased:
        return 0
    kept = [row for row_index, row in enumerate(rows)
            if not row_index or not hashes[row_index] & erased]
    _replace(path, kept)
    log.info("erased addresses taken out of rejected rows",
             extra={"rows": len(rows) - len(kept), "file": os.path.basename(path)})
    return len(rows) - len(kept)


def _hashes(cells: Iterable[str], salt: str) -> set[str]:
    """The address hashes of the cells that hold one, as uploaded (the file
    keeps them escaped by domain.csv_safe)."""
    found = set()
    for cell in cells:
        if "@" not in cell:
            continue
        for text in {cell, cell[1:] if cell[:1] == "'" else cell}:
            try:
                found.add(domain.address(text, salt).hash)
            except InvalidEmail:
                pass
    return found


def _replace(path: str, rows: list[list[str]]) -> None:
    """Written beside it, then renamed over it: a reader sees the old file
    or the new one, and two scrubs at once each write a whole file."""
    temporary = f"{path}.{uuid.uuid4().hex}.tmp"
    opener: Callable = lambda name, flags: os.open(name, flags, 0o600)
    try:
        with open(temporary, "w", encoding="utf-8", errors="surrogateescape", newline="",
                  opener=opener) as out:
            csv.writer(out).writerows(rows)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
