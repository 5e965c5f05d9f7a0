"""How the store builds and drops a searchable field's index when the
database answers with an error (on the real FerretDB:
tests/integration/contacts/test_searchable_fields.py)."""
import logging

import pytest
from pymongo.errors import AutoReconnect, OperationFailure

from services.contacts.store import FIELD_INDEX_NAME, ContactsStore, IndexRefused, field_index


class Collection:
    """Answers create_indexes and drop_index from a script of errors (None:
    success); records the calls."""

    def __init__(self, errors=(), searchable=()):
        self.errors = list(errors)
        self.searchable = set(searchable)
        self.calls = []

    def _answer(self, call):
        self.calls.append(call)
        error = self.errors.pop(0) if self.errors else None
        if error:
            raise error

    def create_indexes(self, models):
        self._answer(("create", models[0].document["name"]))

    def drop_index(self, name):
        self._answer(("drop", name))

    def find_one(self, query, projection=None):
        return {"_id": "f"} if query["key"] in self.searchable else None


def store_with(contacts: Collection, fields: Collection | None = None) -> ContactsStore:
    return ContactsStore({"contacts": contacts, "fields": fields or Collection()} | {
        name: Collection() for name in ("lists", "deleted_contacts", "suppressions",
                                        "suppression_log", "consent", "segments", "imports",
                                        "import_claims")})


def failure(code: int) -> OperationFailure:
    return OperationFailure(f"code {code}", code, {"errmsg": f"refused {code}", "code": code})


@pytest.mark.parametrize("key", ["city", "a", "zip_code_2", "x" * 40])
def test_the_start_up_check_knows_a_field_index_by_its_name(key):
    assert FIELD_INDEX_NAME.fullmatch(field_index(key).document["name"])[1] == key
    assert not FIELD_INDEX_NAME.fullmatch(f"account_id_1_{key}_1")


def test_a_build_a_drop_stopped_is_started_again():
    contacts = Collection([failure(276), failure(276)])
    store_with(contacts).index_field("city")
    assert [call[0] for call in contacts.calls] == ["create"] * 3


def test_a_build_stopped_every_time_fails_as_the_database_said():
    with pytest.raises(OperationFailure):
        store_with(Collection([failure(276)] * 3)).index_field("city")


@pytest.mark.parametrize("code", [67, 68, 85, 86])
def test_a_refused_build_is_index_refused_with_the_servers_message(code):
    with pytest.raises(IndexRefused, match=f"refused {code}"):
        store_with(Collection([failure(code)])).index_field("city")


def test_another_failure_is_not_a_refusal():
    """A failover's error is the database's trouble (a 503), not the field's."""
    with pytest.raises(OperationFailure) as raised:
        store_with(Collection([failure(10107)])).index_field("city")
    assert not isinstance(raised.value, IndexRefused)


def test_a_drop_that_fails_after_the_change_is_logged_not_raised(caplog):
    contacts = Collection([failure(13)])
    with caplog.at_level(logging.WARNING):
        store_with(contacts).unindex_field("city")
    assert contacts.calls == [("drop", "account_id_1_fields.city_1__id_1")]
    assert "left for the next start" in caplog.text



class MadeSearchableMeanwhile(Collection):
    """The first check finds no searchable field of the key, the re-check one."""

    def find_one(self, query, projection=None):
        self.calls.append("check")
        return None if len(self.calls) == 1 else {"_id": "f"}


def test_the_re_checks_rebuild_and_a_lost_connection_are_logged_too(caplog):
    contacts = Collection([None, failure(67)])
    with caplog.at_level(logging.WARNING):
        store_with(contacts, MadeSearchableMeanwhile()).unindex_field("city")
        store_with(Collection([AutoReconnect("gone")])).unindex_field("city")
    assert [call[0] for call in contacts.calls] == ["drop", "create"]
    assert caplog.text.count("left for the next start") == 2


def test_an_index_already_gone_is_dropped_quietly(caplog):
    with caplog.at_level(logging.WARNING):
        store_with(Collection([failure(27)])).unindex_field("city")
    assert caplog.text == ""
