"""Which cells of a rejected row name an address (rejected_rows._hashes)."""
from __future__ import annotations

from services.contacts import domain
from services.contacts.rejected_rows import _hashes

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


def test_cells_that_are_no_address_name_nobody():
    assert _hashes(["not-an-address", "a@", "", "@b.example"], SALT) == set()
