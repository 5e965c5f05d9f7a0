"""shared/era_leases.py on the real FerretDB: a lease taken over only by
unique inserts, so two takers of one expired lease never both hold it
(FerretDB's conditional delete reads the ids, then deletes by id: "delete
the expired one, insert mine" let the second taker delete the first's)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from shared import era_leases

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)


def test_one_holder_until_it_gives_back_or_runs_out(mongo_db):
    col = mongo_db["leases"]
    first = era_leases.take(col, ["a", "b"], "one", T0, T0 + MINUTE)
    assert set(first) == {"a", "b"}
    assert era_leases.take(col, ["a"], "two", T0, T0 + MINUTE) == {}
    era_leases.give_back(col, [first["a"]], "one", T0)
    second = era_leases.take(col, ["a"], "two", T0, T0 + MINUTE)
    assert second["a"] != first["a"]   # the next era
    assert era_leases.take(col, ["b"], "two", T0 + 2 * MINUTE, T0 + 3 * MINUTE)  # b ran out
    assert [d["era"] for d in col.find({"lease": "a"})] == [1]   # the older era is gone


def test_a_taker_that_read_an_older_state_cannot_take_an_era_taken_since(mongo_db):
    col = mongo_db["leases"]
    era_leases.take(col, ["a"], "one", T0, T0 + MINUTE)
    stale = era_leases.current(col, ["a"])            # read while "one" held it
    later = T0 + 2 * MINUTE                            # it ran out
    assert era_leases.take(col, ["a"], "two", later, later + MINUTE)
    assert era_leases.take(col, ["a"], "three", later, later + MINUTE, seen=stale) == {}


def test_renewed_it_is_not_taken_over(mongo_db):
    col = mongo_db["leases"]
    taken = era_leases.take(col, ["a"], "one", T0, T0 + MINUTE)
    era_leases.renew(col, [taken["a"]], "one", T0 + 5 * MINUTE)
    assert era_leases.take(col, ["a"], "two", T0 + 2 * MINUTE, T0 + 3 * MINUTE) == {}


def test_many_takers_of_one_expired_lease_at_once_make_one_holder(mongo_db):
    col = mongo_db["leases"]
    for name in ("x", "y"):
        era_leases.take(col, [name], "dead", T0, T0 + MINUTE)
    later = T0 + 2 * MINUTE
    with ThreadPoolExecutor(8) as pool:
        taken = list(pool.map(lambda n: era_leases.take(col, ["x", "y"], f"t{n}", later,
                                                        later + MINUTE), range(8)))
    for name in ("x", "y"):
        assert sum(name in t for t in taken) == 1, taken
        [doc] = col.find({"lease": name})
        assert doc["holder"] != "dead"
