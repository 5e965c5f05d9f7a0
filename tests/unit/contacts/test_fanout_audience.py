"""What the fan-out does with an audience part it cannot read: one that is
gone is left out and named; a database that is away is an error, retried,
never a smaller audience sent to (pure logic, a stand-in contacts store)."""
import pytest
from pymongo.errors import AutoReconnect

from services.contacts.fanout import audience_check, contacts_stream
from services.contacts.segments import SegmentError


class Contacts:
    def __init__(self, segment_error: Exception | None):
        self.segment_error = segment_error
        self.lists = self

    def find(self, query, projection):
        return [{"_id": i} for i in query["_id"]["$in"] if i == "real"]

    def compile_segment(self, account_id, segment_id):
        if self.segment_error:
            raise self.segment_error
        return {"account_id": account_id}

    def stream_audience(self, account_id, list_ids, segment_filter, batch_size):
        return iter([[{"_id": "c1"}]])


@pytest.mark.parametrize("gone", [LookupError("no such segment"), SegmentError("f", "deleted")])
def test_a_segment_that_is_gone_is_left_out_and_named(gone):
    store = Contacts(gone)
    assert audience_check(store)("a", ["real", "typo"], "s1") == {"list_ids": ["typo"],
                                                                  "segment_id": "s1"}
    assert list(contacts_stream(store)("a", ["real"], "s1")) == [[{"_id": "c1"}]]


def test_a_database_blip_is_an_error_not_a_smaller_audience():
    store = Contacts(AutoReconnect("primary stepped down"))
    with pytest.raises(AutoReconnect):
        audience_check(store)("a", ["real"], "s1")
    with pytest.raises(AutoReconnect):
        contacts_stream(store)("a", ["real"], "s1")
