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


def test_old_eras_are_forgotten_but_never_the_newest_while_it_may_be_read(mongo_db):
    col = mongo_db["leases"]
    for minute in range(3):   # three eras of "a", each ended a minute later
        at = T0 + minute * MINUTE
        era_leases.give_back(col, list(era_leases.take(col, ["a"], "one", at, at + MINUTE)
                                       .values()), "one", at)
    assert era_leases.forget_old(col, T0 + 10 * MINUTE) == 2
    assert [d["era"] for d in col.find({"lease": "a"})] == [2]
    assert era_leases.forget_old(col, T0 + timedelta(days=2)) == 0   # never the newest
    assert era_leases.forget_old(col, T0 + timedelta(days=2), forget_all_after=MINUTE) == 1
    assert era_leases.take(col, ["a"], "two", T0 + timedelta(days=2), T0 + timedelta(days=3))


def test_a_take_whose_read_is_too_old_gives_back_what_it_got(mongo_db, monkeypatch):
    """Its read could predate an era taken and forgotten since, which its
    insert would then take a second time."""
    col = mongo_db["leases"]
    seen = era_leases.current(col, ["a"])
    monkeypatch.setattr(era_leases.time, "monotonic",
                        lambda: seen.read_at + era_leases.MAX_TAKE_SECONDS + 1)
    assert era_leases.take(col, ["a"], "slow", T0, T0 + MINUTE, seen=seen) == {}
    monkeypatch.undo()
    assert era_leases.take(col, ["a"], "next", T0, T0 + MINUTE)   # it was given back


def test_a_taker_that_read_an_older_state_cannot_take_an_era_taken_since(mongo_db):
    col = mongo_db["leases"]
    era_leases.take(col, ["a"], "one", T0, T0 + MINUTE)
    stale = era_leases.current(col, ["a"])            # read while "one" held it
    later = T0 + 2 * MINUTE                            # it ran out
    assert era_leases.take(col, ["a"], "two", later, later + MINUTE)
    assert era_leases.take(col, ["a"], "three", later, later + MINUTE, seen=stale) == {}


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
        assert era_leases.current(col, [name]).newest[name]["holder"] != "dead"
