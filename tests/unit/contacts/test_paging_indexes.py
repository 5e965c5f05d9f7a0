"""Every contacts page query can be served by an index range on MongoDB:
its equality keys, then _id (the sort and the cursor), are a prefix of one
of the declared contacts indexes, so a deep cursor reads about `limit`
entries; a prefix search is a range of an index after the account.
(The local FerretDB reads only some of them: docs/contacts.md.)"""
from types import SimpleNamespace

import pytest

from services.contacts import usecases
from services.contacts.store import INDEXES, field_index

LIST_ID = "a" * 32


class FakeStore:
    def get_list(self, account_id, list_id):
        return {"_id": list_id, "account_id": account_id}

    def field_definitions(self, account_id):
        return {"city": {"key": "city", "type": "text"}}


def _declared() -> list[list[str]]:
    return [list(model.document["key"]) for model in INDEXES["contacts"]]


@pytest.mark.parametrize("args, index", [
    ({}, ["account_id", "_id"]),
    ({"status": "bounced"}, ["account_id", "status", "_id"]),
    ({"list_id": LIST_ID}, ["account_id", "list_ids", "_id"]),
    ({"list_id": LIST_ID, "list_status": "unsubscribed"}, ["account_id", "list_ids", "_id"]),
    ({"email_prefix": "ann"}, ["account_id", "_id"]),
    ({"name": "Ann"}, ["account_id", "_id"]),
    ({"field": "city", "value": "Pune"}, ["account_id", "_id"]),
])
def test_every_search_pages_on_an_index_ending_in_id(args, index):
    ports = SimpleNamespace(store=FakeStore())
    query = {**usecases.search_query(ports, "acct", {"limit": 50, **args}), "account_id": "acct"}
    assert index in _declared()
    equality = {k for k, v in query.items() if not isinstance(v, dict)}
    assert set(index[:-1]) <= equality, (query, index)   # the range is then _id > cursor


@pytest.mark.parametrize("args, key", [({"email_prefix": "Ann.L"}, "email_key"),
                                       ({"name": "Ann L"}, "name_key")])
def test_a_prefix_search_is_a_range_of_an_index_after_the_account(args, key):
    query = usecases.search_query(SimpleNamespace(store=FakeStore()), "acct", {"limit": 50, **args})
    assert query == {key: {"$gte": "ann.l" if key == "email_key" else "ann l",
                           "$lt": "ann.m" if key == "email_key" else "ann m"}}
    assert ["account_id", key] in _declared()


def test_a_searchable_fields_value_pages_on_its_own_index():
    """The field's index (store.field_index): its equality keys are all in
    the query, then _id."""
    query = {**usecases.search_query(SimpleNamespace(store=FakeStore()), "acct",
                                     {"limit": 50, "field": "city", "value": "Pune"}),
             "account_id": "acct"}
    index = list(field_index("city").document["key"])
    assert index == ["account_id", "fields.city", "_id"]
    assert set(index[:-1]) <= {k for k, v in query.items() if not isinstance(v, dict)}
