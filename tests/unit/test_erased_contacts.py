"""The web processes' set of erased contacts: read once before the first
answer, then only by a thread of its own, so that a database outage never
holds up a hit or a request (it held each up for the driver's 5 s)."""
import threading

from pymongo.errors import ServerSelectionTimeoutError

from shared.erased_contacts import ErasedContacts


class _Unreachable:
    def __init__(self):
        self.readers = []

    def find(self, *args, **kwargs):
        self.readers.append(threading.current_thread())
        raise ServerSelectionTimeoutError("no server")


class _Db(dict):
    def __missing__(self, name):
        self[name] = _Unreachable()
        return self[name]


def test_in_the_background_an_outage_is_met_once_by_the_caller_then_only_by_the_thread():
    db = _Db()
    erased = ErasedContacts(db, refresh_seconds=0.01, in_background=True)
    try:
        for _ in range(200):
            assert not erased.erased("acct", "c1")
    finally:
        erased.close()
    collection = db["erased_contacts"]
    callers = [t for t in collection.readers if t is threading.current_thread()]
    assert len(callers) == 1


def test_pseudonyms_and_missing_ids_are_never_looked_up():
    db = _Db()
    erased = ErasedContacts(db)
    assert not erased.erased("acct", None) and not erased.erased("acct", "erased-abc")
    assert db["erased_contacts"].readers == []


class _Entries:
    def __init__(self, docs):
        self.docs = docs

    def find(self, query, projection=None):
        wanted = query.get("_id", {}).get("$in")
        return [d for d in self.docs if wanted is None or d["_id"] in wanted]


def test_an_entry_stored_by_the_first_version_with_the_ids_themselves_still_counts():
    from datetime import datetime, timezone
    db = {"erased_contacts": _Entries([{"_id": "acct|c1", "at": datetime.now(timezone.utc)}])}
    erased = ErasedContacts(db)
    assert erased.erased("acct", "c1") and not erased.erased("acct", "c2")


def _hex_keys(n, salt="k"):
    import hashlib
    return [hashlib.sha256(f"{salt}{i}".encode()).hexdigest() for i in range(n)]


def test_the_key_set_finds_every_key_added_and_no_other_across_its_merges(monkeypatch):
    from shared.erased_contacts import KeySet
    monkeypatch.setattr(KeySet, "MERGE_AT", 16)
    keys, others = _hex_keys(3000), _hex_keys(3000, salt="other")
    found = KeySet()
    for start in range(0, 3000, 10):  # refreshes of a few, and one key at a time
        found.update(keys[start:start + 8])
        found.add(keys[start + 8])
        found.add(keys[start + 9])
    found.update(keys[:100])  # read again (the refresh's overlap): still once each
    assert all(key in found for key in keys)
    assert not any(key in found for key in others)
    assert len(found) == 3000


def test_a_first_read_of_a_hundred_thousand_keys_holds_them_in_about_8_bytes_each():
    from datetime import datetime, timezone
    keys = _hex_keys(100_000)
    at = datetime.now(timezone.utc)
    erased = ErasedContacts({"erased_contacts": _Entries([{"_id": k, "at": at} for k in keys])})
    erased.refresh()  # a cursor batch at a time, then compacted
    assert len(erased._keys) == 100_000 and all(key in erased._keys for key in keys[::997])
    assert erased._keys.memory_bytes() < 9 * 100_000  # the hex strings' set: ~14 MB


class _CutShort(_Entries):
    """Entries in key order (as a cursor by _id); the first read fails half-way."""

    def __init__(self, docs):
        super().__init__(sorted(docs, key=lambda d: d["_id"]))
        self.reads = 0

    def find(self, query, projection=None):
        self.reads += 1
        since = query.get("at", {}).get("$gte")
        docs = [d for d in self.docs if since is None or d["at"] >= since]
        for number, doc in enumerate(docs):
            if self.reads == 1 and number == len(docs) // 2:
                raise ServerSelectionTimeoutError("the cursor was lost")
            yield doc


def test_a_first_read_cut_short_is_read_whole_the_next_time():
    """It kept the newest time it had seen, and the next read skipped, for
    good, every older entry the cut-short one had not reached."""
    from datetime import datetime, timedelta, timezone
    start = datetime.now(timezone.utc) - timedelta(days=30)
    keys = _hex_keys(1000)
    docs = [{"_id": k, "at": start + timedelta(hours=i)} for i, k in enumerate(keys)]
    erased = ErasedContacts({"erased_contacts": _CutShort(docs)})
    try:
        erased.refresh()
    except ServerSelectionTimeoutError:
        pass
    erased.refresh()
    assert all(key in erased._keys for key in keys)
