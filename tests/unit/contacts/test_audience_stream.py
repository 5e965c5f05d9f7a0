"""The audience stream's reading pattern, with a fake collection: one
unsorted query for the whole audience, read in batches (FerretDB reads the
whole collection for each query without an `_id` condition), and a lost
cursor left to the fan-out, which knows what it has produced."""
from __future__ import annotations

import pytest
from pymongo.errors import CursorNotFound

from services.contacts.store import ContactsStore


class FakeCursor:
    def __init__(self, docs, die_after=None):
        self.docs, self.die_after, self.closed, self.sorted = docs, die_after, False, False

    def sort(self, *_):
        self.sorted = True
        return self

    def batch_size(self, _):
        return self

    def __iter__(self):
        for n, doc in enumerate(self.docs):
            if self.die_after is not None and n == self.die_after:
                raise CursorNotFound("cursor id 42 not found")
            yield doc

    def close(self):
        self.closed = True


class FakeContacts:
    def __init__(self, docs, die_after=None):
        self.docs, self.die_after, self.queries, self.cursors = docs, die_after, [], []

    def find(self, query, projection=None):
        self.queries.append(query)
        cursor = FakeCursor(self.docs, self.die_after)
        self.cursors.append(cursor)
        return cursor


class Suppressions:
    def __init__(self, hashes=()):
        self.hashes = set(hashes)

    def find(self, query):
        return [{"email_hash": h} for h in query["email_hash"]["$in"] if h in self.hashes]


def stream(contacts, batch_size=100, suppressed=()):
    store = ContactsStore.__new__(ContactsStore)
    store.contacts, store.suppressions = contacts, Suppressions(suppressed)
    return store.stream_audience("acct", ["list"], None, batch_size=batch_size)


def people(n):
    return [{"_id": f"{i:06d}", "email_hash": f"h{i}"} for i in range(n)]


def test_the_whole_audience_comes_from_one_unsorted_query_in_batches():
    contacts = FakeContacts(people(250))
    batches = list(stream(contacts))
    assert [len(b) for b in batches] == [100, 100, 50]
    assert len(contacts.queries) == 1
    assert not contacts.cursors[0].sorted and contacts.cursors[0].closed


def test_suppressed_addresses_are_left_out_of_their_batch():
    batches = list(stream(FakeContacts(people(10)), batch_size=5, suppressed={"h1", "h7"}))
    assert [[c["_id"] for c in b] for b in batches] == [
        ["000000", "000002", "000003", "000004"], ["000005", "000006", "000008", "000009"]]


def test_a_lost_cursor_is_raised_to_the_caller_and_the_cursor_closed():
    contacts = FakeContacts(people(250), die_after=130)
    batches = stream(contacts)
    assert len(next(batches)) == 100
    with pytest.raises(CursorNotFound):
        next(batches)
    assert contacts.cursors[0].closed
