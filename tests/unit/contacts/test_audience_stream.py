"""The audience stream's reading pattern, with a fake collection: one query
for the whole audience (FerretDB reads the whole collection for each query),
and a cursor lost on the way costs a new query from the last batch handed
out, without losing or repeating a contact."""
from __future__ import annotations

from pymongo.errors import CursorNotFound

from services.contacts.store import ContactsStore


class FakeCursor:
    def __init__(self, docs, die_after=None):
        self.docs, self.die_after, self.closed = docs, die_after, False

    def sort(self, *_):
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

    def find(self, query):
        self.queries.append(query)
        after = query.get("_id", {}).get("$gt", "")
        cursor = FakeCursor([d for d in self.docs if d["_id"] > after],
                            self.die_after if len(self.queries) == 1 else None)
        self.cursors.append(cursor)
        return cursor


class NoSuppressions:
    def find(self, _query):
        return []


def stream(contacts, batch_size=100):
    store = ContactsStore.__new__(ContactsStore)
    store.contacts, store.suppressions = contacts, NoSuppressions()
    return list(store.stream_audience("acct", ["list"], None, batch_size=batch_size))


def people(n):
    return [{"_id": f"{i:06d}", "email_hash": f"h{i}"} for i in range(n)]


def test_the_whole_audience_comes_from_one_query_in_batches():
    contacts = FakeContacts(people(250))
    batches = stream(contacts)
    assert [len(b) for b in batches] == [100, 100, 50]
    assert len(contacts.queries) == 1 and contacts.cursors[0].closed


def test_a_lost_cursor_resumes_after_the_last_batch_without_loss_or_repeat():
    contacts = FakeContacts(people(250), die_after=130)  # dies inside the second batch
    batches = stream(contacts)
    ids = [c["_id"] for batch in batches for c in batch]
    assert ids == [f"{i:06d}" for i in range(250)]
    assert len(contacts.queries) == 2
    assert contacts.queries[1]["_id"] == {"$gt": "000099"}
