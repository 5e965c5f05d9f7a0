"""Rejected rows scrubbed of erased addresses: which cells name one, two
scrubs at once, a file too big for one query."""
from __future__ import annotations

import csv
import shutil
import threading

from services.contacts import domain, rejected_rows
from services.contacts.rejected_rows import HASHES_PER_QUERY, _hashes, scrub_file

SALT = "unit-salt"


def hash_of(address: str) -> str:
    return domain.address(address, SALT).hash


def test_any_cell_holding_an_address_counts_whatever_its_case():
    assert _hashes(["Ann Lee", "Ann.Lee@Example.com", "31"], SALT) == {hash_of("ann.lee@example.com")}


def test_a_cell_escaped_against_formulas_is_read_as_it_was_uploaded():
    """The file keeps "=eve@example.com" as "'=eve@example.com" (domain.csv_safe)."""
    escaped = domain.csv_safe("=eve@example.com")
    assert escaped == "'=eve@example.com"
    assert hash_of("=eve@example.com") in _hashes([escaped], SALT)


def test_an_address_inside_other_text_counts():
    """Rows rejected because the address came with a display name or a
    mailto: kept the person's address after their erasure."""
    ann = hash_of("ann.lee@example.com")
    assert ann in _hashes(["Ann Lee <Ann.Lee@example.com>"], SALT)
    assert ann in _hashes(["mailto:ann.lee@example.com"], SALT)
    assert _hashes(["ann.lee@example.com, bob@example.com"], SALT) == {ann, hash_of("bob@example.com")}


def test_cells_that_are_no_address_name_nobody():
    assert _hashes(["not-an-address", "a@", "", "@b.example"], SALT) == set()


def write_rejected(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as out:
        csv.writer(out).writerows([["row", "reason", "cells"], *rows])


def read_rejected(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))[1:]


def test_two_scrubs_of_one_file_at_once_take_turns(tmp_path, monkeypatch):
    """Each rewrote the file from what it had read: one that was still
    copying the rows when the other replaced the file put back the row the
    other had taken out."""
    path = str(tmp_path / "imp.rejected.csv")
    write_rejected(path, [["2", "age", "ann@example.com"], ["3", "age", "bob@example.com"],
                          ["4", "age", "keep@example.com"]])
    copying, go_on = threading.Event(), threading.Event()
    calls = {"n": 0}

    def slow_hashes(cells, salt):   # the first scrub pauses in its copy (its 4th row read)
        if threading.current_thread().name == "first":
            calls["n"] += 1
            if calls["n"] == 4:
                copying.set()
                go_on.wait(5)
        return _hashes(cells, salt)

    monkeypatch.setattr(rejected_rows, "_hashes", slow_hashes)
    first = threading.Thread(target=scrub_file, name="first",
                             args=(path, SALT, lambda h: h & {hash_of("ann@example.com")}))
    first.start()
    assert copying.wait(5)
    second = threading.Thread(target=scrub_file,
                              args=(path, SALT, lambda h: h & {hash_of("bob@example.com")}))
    second.start()
    second.join(0.5)   # it waits for the first (or, without the lock, is done already)
    go_on.set()
    first.join(5)
    second.join(5)
    assert [row[2] for row in read_rejected(path)] == ["keep@example.com"]


def test_a_big_file_asks_about_its_addresses_a_bounded_number_at_a_time(tmp_path):
    """One query held every hash of the file: past ~220,000 it was over
    MongoDB's 16 MB, and the account's erasures failed for ever."""
    path = str(tmp_path / "imp.rejected.csv")
    count = 2 * HASHES_PER_QUERY + 10
    write_rejected(path, [[str(n), "age", f"p{n}@example.com"] for n in range(count)])
    asked = []

    def erased_of(hashes):
        asked.append(len(hashes))
        return hashes & {hash_of("p7@example.com")}

    assert scrub_file(path, SALT, erased_of) == 1
    assert sum(asked) == count and max(asked) <= HASHES_PER_QUERY
    assert len(read_rejected(path)) == count - 1


def test_a_scrub_waiting_while_the_accounts_files_are_deleted_puts_nothing_back(tmp_path):
    """The deletion takes the scrubs' lock: a scrub that read the file before
    the deletion rewrote it back into the folder after it."""
    folder = tmp_path / "account"
    folder.mkdir()
    path = str(folder / "imp.rejected.csv")
    write_rejected(path, [["2", "age", "ann@example.com"], ["3", "age", "keep@example.com"]])
    with rejected_rows.account_lock(str(folder)) as locked:
        assert locked
        scrub = threading.Thread(target=scrub_file,
                                 args=(path, SALT, lambda h: h & {hash_of("ann@example.com")}))
        scrub.start()
        scrub.join(0.3)
        assert scrub.is_alive()          # waits for the deletion to end
        shutil.rmtree(folder)
    scrub.join(5)
    assert not folder.exists()
    assert scrub_file(path, SALT, lambda h: h) == 0   # and one that comes after finds nothing


def test_an_access_quotes_the_persons_rows_cut_to_what_one_answer_can_carry(tmp_path):
    """The answer travels in one Kafka event (~1 MB at most): two rows of
    wide cells, as an import keeps them, made an answer Kafka refused, and
    the request was retried for ever, every privacy request behind it."""
    folder = tmp_path / "acct"
    folder.mkdir()
    wide = "x" * 100_000  # cells are kept up to 128 KiB (csvread)
    with open(folder / "imp1.rejected.csv", "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["row", "reason", "cells"])
        for n in range(150):
            writer.writerow([n + 2, "not a number", "ann@example.com", wide])
        writer.writerow([200, "not a number", "bob@example.com", "Bob"])
    rows, total = rejected_rows.rows_with(str(tmp_path), "acct", SALT,
                                          {domain.address_hash("ann@example.com", SALT)})
    assert total == 150 and len(rows) == rejected_rows.ROWS_QUOTED
    assert rows[0] == {"import_id": "imp1", "row": "2", "reason": "not a number",
                       "cells": ["ann@example.com", "x" * rejected_rows.CELL_QUOTED + "… (cut)"]}
    assert sum(len(str(row)) for row in rows) < 200_000
