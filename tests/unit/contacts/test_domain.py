"""Contacts' use of shared.pii (normalisation, hashing), typed custom fields,
and formula-safe CSV cells."""
from datetime import datetime, timezone

import pytest
from hypothesis import example, given, settings, strategies as st

from services.contacts import domain
from shared.pii import InvalidEmail, email_hash, normalise_email

SALT = "unit-salt"


def test_addresses_are_trimmed_domain_lowercased_and_hashed_case_insensitively():
    a = domain.address("  Jane.Doe@Example.COM ", SALT)
    assert a.email == "Jane.Doe@example.com"
    assert a.hash == email_hash("jane.doe@example.com", SALT)
    assert domain.address("user@Bücher.Example", SALT).email == "user@bücher.example"
    for bad in ("plain", "a@b", "a..b@example.com", "a@-x.com", "x" * 65 + "@example.com",
                "a@" + "b" * 250 + ".com", None, 5, "a" * 400):
        with pytest.raises(InvalidEmail):
            domain.address(bad, SALT)


local_chars = st.sampled_from(list("abcXYZ019.!#$%&'*+/=?^_`{|}~-\"() ,:;<>@[]\\é\t\n"))
role_names = st.sampled_from(["Postmaster", "ABUSE", "Info", "sales", "Root"])
domains = st.sampled_from(["example.com", "EXAMPLE.com", "x.test", "localhost", "bücher.de",
                           "-bad.com", "a.b", "sub.domain.co.in", "[1.2.3.4]", "xn--bcher-kva.de",
                           "x" * 64 + ".com", "example..com", "ex_ample.com"])


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(local_chars, min_size=0, max_size=70), role_names), domains,
       st.sampled_from(["", " ", "\t", "\n", "\u00a0"]))
@example("0\n", "example.com", "")      # a newline ending the local part (found by Hypothesis)
@example("Postmaster", "example.com", "")  # a role name, which email_validator lower-cases
@example("a" * 64, "ü" * 30 + "." + "ü" * 30 + "." + "ü" * 30 + ".de", "")  # long once in ASCII
def test_the_fast_path_agrees_with_shared_normalisation(local, host, pad):
    raw = f"{pad}{local}@{host}{pad}"

    def outcome(fn):
        try:
            return fn(raw)
        except InvalidEmail:
            return "invalid"
    assert outcome(domain.normalised_address) == outcome(normalise_email)


def test_field_values_are_checked_by_type():
    text, number = {"type": "text"}, {"type": "number"}
    boolean, date = {"type": "boolean"}, {"type": "date"}
    choice = {"type": "choice", "choices": ["free", "pro"]}
    assert domain.coerce_field(number, "1,200", from_text=True) == 1200
    assert domain.coerce_field(number, "2.5", from_text=True) == 2.5
    assert domain.coerce_field(number, "-1,234,567.25", from_text=True) == -1234567.25
    # a decimal comma was read as a thousands separator: 12,50 became 1250
    for cell in ("12,50", "0,99", "1,5", "1.234,56", "1,2,3", "1_000", "٣٤", "1,23", "nan"):
        with pytest.raises(domain.InvalidValue, match="decimal point"):
            domain.coerce_field(number, cell, from_text=True)
    assert domain.coerce_field(boolean, "Yes", from_text=True) is True
    assert domain.coerce_field(date, "2024-02-29") == datetime(2024, 2, 29, tzinfo=timezone.utc)
    assert domain.coerce_field(choice, "pro") == "pro"
    for definition, value in ((number, True), (number, "12"), (text, 5), (boolean, "yes"),
                              (date, "29/02/2024"), (choice, "gold"), (text, "x" * 501),
                              (number, float("nan"))):
        with pytest.raises(domain.InvalidValue):
            domain.coerce_field(definition, value)
    with pytest.raises(domain.InvalidFields) as caught:
        domain.check_fields({"age": number}, {"age": "x", "role": "admin"})
    assert set(caught.value.problems) == {"age", "role"}


def test_dates_are_stored_in_utc_and_refused_when_that_overflows():
    date = {"type": "date"}
    assert domain.coerce_field(date, "2030-01-02T10:00:00+05:30") == \
        datetime(2030, 1, 2, 4, 30, tzinfo=timezone.utc)
    assert domain.coerce_field(date, "2030-01-02T10:00:00+05:30").utcoffset().total_seconds() == 0
    for value in ("9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+01:00"):
        with pytest.raises(domain.InvalidValue, match="out of range"):
            domain.coerce_field(date, value)


@pytest.mark.parametrize("cell, shown", [("=1+1", "'=1+1"), ("+49 30", "'+49 30"),
                                         ("-5", "'-5"), ("@SUM(A1)", "'@SUM(A1)"),
                                         ("\tx", "'\tx"), ("\rx", "'\rx"), ("plain", "plain"),
                                         (None, ""), (3, "3")])
def test_csv_cells_that_a_spreadsheet_would_evaluate_are_escaped(cell, shown):
    assert domain.csv_safe(cell) == shown


def test_membership_update_keeps_the_index_arrays_in_step():
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    sub = domain.membership_update("L", domain.membership("subscribed", "api", at))
    assert sub["$addToSet"] == {"list_ids": "L", "subscribed_list_ids": "L"}
    unsub = domain.membership_update("L", domain.membership("unsubscribed", "api", at))
    assert unsub["$pull"] == {"subscribed_list_ids": "L"} and "$addToSet" in unsub


def test_text_searched_as_a_pattern_never_carries_a_nul():
    """MongoDB refuses a $regex holding a NUL: a segment saved with one failed
    every preview, export and fan-out."""
    import re
    pattern = domain.regex_literal("a\x00b.*")
    assert "\x00" not in pattern
    assert re.fullmatch(pattern, "a\x00b.*") and not re.fullmatch(pattern, "a\x00bxx")


def test_the_address_a_message_went_to_is_the_one_in_force_at_its_revision():
    contact = {"email_hash": "h-now", "revision": 0}
    contact["former_addresses"] = domain.former_addresses(contact)        # h0 until revision 1
    contact.update(email_hash="h1", revision=1)
    contact["former_addresses"] = domain.former_addresses(contact)        # h1 until revision 2
    contact.update(email_hash="h2", revision=2)
    assert domain.address_at(contact, 0) == ("h-now", False)
    assert domain.address_at(contact, 1) == ("h1", False)
    assert domain.address_at(contact, 2) == ("h2", True)
    assert domain.address_at(contact, None) == ("h2", True)   # a sender before revisions


def test_ordered_ids_made_in_the_same_millisecond_keep_their_order():
    """A consent log reads in _id order: a subscribe and an unsubscribe made a
    millisecond apart came back in either order."""
    made = [domain.ordered_id() for _ in range(5000)]   # many to a millisecond
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(domain.is_id(i) for i in made)
    before = int(made[0][:12], 16)
    assert abs(before - datetime.now(timezone.utc).timestamp() * 1000) < 60_000


# -- search keys -----------------------------------------------------------------
@pytest.mark.parametrize("stored, typed", [
    ("İstanbul Tüccar", "istanbul"), ("Müller", "MULLER"), ("Straße", "strasse"),
    ("José  García", "jose g"), ("ﬁona@example.com", "fiona@"), ("Ann.Lee@example.com", "ANN.LEE"),
])
def test_a_prefix_matches_either_case_and_any_accent(stored, typed):
    key, bounds = domain.search_key(stored), domain.prefix_range(domain.search_key(typed))
    assert bounds["$gte"] <= key < bounds["$lt"]


def test_a_spacing_accent_does_not_split_a_word():
    # U+00B4, U+00A8, U+00B8 and U+02DC decompose to a space and a mark
    for name in ("D\u00b4Souza", "D\u00a8Souza", "D\u00b8Souza", "D\u02dcSouza"):
        assert domain.search_key(name) == "dsouza"
    assert domain.search_key("Ahmed Souza") == "ahmed souza"
    assert domain.search_key("O`Neil ^a^b") == "o`neil ^a^b"   # other modifier symbols stay


def test_a_prefix_range_holds_exactly_what_starts_with_it():
    assert domain.prefix_range("ann") == {"$gte": "ann", "$lt": "ano"}
    assert domain.prefix_range("") is None
    assert domain.prefix_range("a\ud7ff") == {"$gte": "a\ud7ff", "$lt": "a\ue000"}
    assert domain.prefix_range("a\U0010ffff") == {"$gte": "a\U0010ffff", "$lt": "b"}
    assert domain.prefix_range("\U0010ffff") == {"$gte": "\U0010ffff"}


def test_what_is_not_text_has_no_search_key():
    # a contact stored before the name rule may have a number for a name
    assert domain.search_keys("a@example.com", 42) == {"email_key": "a@example.com",
                                                        "name_key": None}


# Surrogates never reach the store (the API refuses them); MongoDB and SQLite
# compare UTF-8 bytes, which is code point order, as Python compares str.
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)


@given(_TEXT, _TEXT)
@example("ab", "abc")
@example("ab\U0010ffff", "ab\U0010ffff\U0010ffff")
@example("a\U0010ffff", "b")
@example("\U0010ffff", "\U0010ffffz")
def test_a_prefix_range_is_the_strings_that_start_with_the_prefix(prefix, text):
    bounds = domain.prefix_range(prefix) or {"$gte": ""}

    def inside(key):
        return key(bounds["$gte"]) <= key(text) and ("$lt" not in bounds
                                                     or key(text) < key(bounds["$lt"]))
    assert inside(str) == text.startswith(prefix)
    assert inside(str.encode) == text.startswith(prefix)   # as the servers compare
