"""MongoDB helpers against the real FerretDB."""
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest
from bson import ObjectId
import requests
from pymongo import ASCENDING, IndexModel, MongoClient
from pymongo.errors import BulkWriteError, DuplicateKeyError

from shared import mongo


def test_ensure_indexes_is_idempotent_and_unique_indexes_hold(mongo_db):
    indexes = {"things": [IndexModel([("account_id", ASCENDING), ("email", ASCENDING)],
                                     unique=True)]}
    mongo.ensure_indexes(mongo_db, indexes)
    mongo.ensure_indexes(mongo_db, indexes)
    mongo_db.things.insert_one({"account_id": "a", "email": "x"})
    mongo_db.things.insert_one({"account_id": "b", "email": "x"})
    with pytest.raises(DuplicateKeyError):
        mongo_db.things.insert_one({"account_id": "a", "email": "x"})
    names = [ix["name"] for ix in mongo_db.things.list_indexes()]
    assert "account_id_1_email_1" in names


def test_ping_and_unreachable_server(mongo_uri):
    mongo.ping(mongo_uri)
    with pytest.raises(Exception):
        from pymongo import MongoClient
        MongoClient("mongodb://127.0.0.1:1/", serverSelectionTimeoutMS=300).admin.command("ping")


def test_readiness_reports_each_dependency(stack_env, mongo_uri, kafka_bootstrap):
    from services.contacts.app import create_app
    app = create_app({"SANDESH_MONGO_URI": mongo_uri, "SANDESH_KAFKA_BOOTSTRAP": kafka_bootstrap,
                      "SANDESH_INTERNAL_SECRET": "x"})
    client = app.test_client()
    body = None
    for _ in range(50):  # the producer connects in the background
        response = client.get("/readyz")
        body = response.get_json()
        if response.status_code == 200:
            break
        import time
        time.sleep(0.1)
    assert body["checks"] == {"mongodb": "ok", "kafka": "ok", "startup": "ok"}

    broken = create_app({"SANDESH_MONGO_URI": "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300",
                         "SANDESH_KAFKA_BOOTSTRAP": kafka_bootstrap,
                         "SANDESH_INTERNAL_SECRET": "x"})
    try:
        response = broken.test_client().get("/readyz")
        assert response.status_code == 503
        checks = response.get_json()["checks"]
        assert checks["mongodb"] != "ok"
        assert "start-up work not done" in checks["startup"]
    finally:
        broken.extensions["startup"].stop()  # else it retries, and logs, until the run ends


def test_ensure_indexes_survives_a_restart_with_several_indexes_per_collection(mongo_db):
    indexes = {"keys": [IndexModel([("prefix", ASCENDING)], unique=True),
                        IndexModel([("account_id", ASCENDING), ("created_at", ASCENDING)])]}
    mongo.ensure_indexes(mongo_db, indexes)
    mongo.ensure_indexes(mongo_db, indexes, wait_seconds=2)  # what every restart does
    assert len(list(mongo_db["keys"].list_indexes())) == 3


def test_delete_all_deletes_more_documents_than_one_ferretdb_delete_can(mongo_db):
    """FerretDB 1.24 fails a delete_many matching more than ~32,766 documents
    ('too many SQL variables'); delete_all deletes them in chunks."""
    mongo_db["many"].insert_many([{"k": "gone" if i % 10 else "kept"} for i in range(36_700)])
    assert mongo.delete_all(mongo_db["many"], {"k": "gone"}) == 33_030
    assert mongo_db["many"].count_documents({}) == 3_670
    assert mongo_db["many"].count_documents({"k": "gone"}) == 0


def test_insert_new_says_which_documents_were_new_and_keeps_them_all(mongo_db):
    mongo_db["markers"].insert_one({"_id": "b", "v": "first"})
    docs = [{"_id": "a", "v": 1}, {"_id": "b", "v": 2}, {"_id": "c", "v": 3}, {"_id": "a", "v": 4}]
    assert mongo.insert_new(mongo_db["markers"], docs) == [True, False, True, False]
    assert {d["_id"]: d["v"] for d in mongo_db["markers"].find()} == {"a": 1, "b": "first", "c": 3}
    assert mongo.insert_new(mongo_db["markers"], []) == []


def test_a_duplicate_in_one_insert_costs_only_itself_or_what_follows_it_when_ordered(mongo_db):
    """Patch 9 runs an insert of up to 100 documents as one statement
    outside BEGIN/COMMIT. A duplicate (of `_id` or of a unique secondary
    index) must still leave the store as MongoDB would: unordered, every
    other document kept; ordered, the ones before it kept, none after."""
    things = mongo_db.dup_things
    things.create_index("email", unique=True)
    things.insert_many([{"_id": f"k{n:02d}", "email": f"{n}@x"} for n in range(10)])

    batch = [{"_id": f"k{n:02d}", "email": f"new{n}@x"} for n in range(5, 25)]
    batch[12]["email"] = "3@x"  # k17 clashes on the secondary index
    with pytest.raises(BulkWriteError) as failed:
        things.insert_many(batch, ordered=False)
    assert sorted(e["index"] for e in failed.value.details["writeErrors"]) == [0, 1, 2, 3, 4, 12]
    assert {e["code"] for e in failed.value.details["writeErrors"]} == {11000}
    kept = {d["_id"] for d in things.find({}, {"_id": 1})}
    assert kept == {f"k{n:02d}" for n in range(25)} - {"k17"}

    with pytest.raises(BulkWriteError) as failed:
        things.insert_many([{"_id": "o1"}, {"_id": "k00"}, {"_id": "o2"}], ordered=True)
    assert [e["index"] for e in failed.value.details["writeErrors"]] == [1]
    assert things.count_documents({"_id": {"$in": ["o1", "o2"]}}) == 1
    assert things.find_one({"_id": "k00"})["email"] == "0@x"


def test_insert_new_raises_errors_other_than_a_duplicate_without_the_documents(mongo_db):
    """A BulkWriteError's text holds every failed document, and errors reach
    the logs: what insert_new raises names codes and indexes only."""
    doc = {"_id": 2, "$not_a_field": 1, "name": "Priya Raman"}
    with pytest.raises(mongo.WriteRefused) as refused:
        mongo.insert_new(mongo_db["strict"], [{"_id": 1}, doc])
    assert "#1 code" in str(refused.value) and refused.value.codes[0] != mongo.DUPLICATE_KEY
    assert "Priya" not in str(refused.value) and refused.value.__suppress_context__
    with pytest.raises(BulkWriteError) as raw:  # what pymongo itself says
        mongo_db["strict"].insert_many([doc], ordered=False)
    assert "Priya" in str(raw.value)
    with pytest.raises(mongo.WriteRefused) as refused:
        with mongo.documents_kept_out_of_errors():
            mongo_db["strict"].insert_many([doc], ordered=False)
    assert "Priya" not in str(refused.value)



def _plan(db, collection: str, filter_: dict) -> str:
    return " | ".join(db.command("explain", {"find": collection, "filter": filter_})
                      ["queryPlanner"]["Plan"])


def _uses_index(db, filter_: dict) -> bool:
    return "USING INDEX" in _plan(db, "things", filter_)


def test_lookups_by_id_use_the_id_index(mongo_db):
    """The local FerretDB is built with devstack/ferretdb_patches.py: unpatched,
    its SQLite backend reads the whole table for every find, update and delete
    by `_id`, and for every `_id` $in."""
    mongo_db.things.insert_many([{"_id": f"id-{n}", "n": n} for n in range(50)])
    assert _uses_index(mongo_db, {"_id": "id-7"})
    assert _uses_index(mongo_db, {"_id": {"$in": ["id-7", "id-9", "absent"]}})

    assert mongo_db.things.find_one({"_id": "id-7"})["n"] == 7
    mongo_db.things.update_one({"_id": "id-7"}, {"$set": {"n": 70}})
    mongo_db.things.delete_one({"_id": "id-8"})
    assert mongo_db.things.find_one({"_id": "id-7"})["n"] == 70
    assert mongo_db.things.find_one({"_id": "id-8"}) is None
    assert mongo_db.things.count_documents({}) == 49


def test_the_local_ferretdb_does_not_track_every_iterator_it_makes(stack_env, mongo_db):
    """Patch 4: a release build of FerretDB 1.24 adds every iterator, cursor
    and transaction to a pprof profile of its own (a stack trace each, a
    tenth of its CPU reading documents). Built with the patch, its debug
    endpoint lists none of those profiles, whatever it has served."""
    mongo_db.things.insert_many([{"_id": f"id-{n}", "nested": {"n": n}} for n in range(20)])
    assert len(list(mongo_db.things.find({"nested.n": {"$gte": 5}}).batch_size(4))) == 15

    port = stack_env["SANDESH_FERRETDB_DEBUG_PORT"]
    listing = requests.get(f"http://127.0.0.1:{port}/debug/pprof/", timeout=10)
    assert listing.status_code == 200 and "goroutine" in listing.text  # the real listing
    assert "FerretDB/" not in listing.text


def test_documents_come_back_exactly_as_stored(mongo_db):
    """Patch 7 decodes what FerretDB stored in one pass, and leaves to
    encoding/json whatever it does not decode the same way (escaped keys,
    ...): every kind of value must come back as it went in, through both
    paths, in a find and in an aggregation."""
    stored = datetime(2026, 12, 5, 8, 30, 15, 123000, tzinfo=timezone.utc)
    docs = [
        {"_id": "plain", "s": "text", "i": 7, "l": 2**40, "f": 0.1, "t": True, "n": None,
         "d": stored, "o": ObjectId("0123456789abcdef01234567"), "b": b"\x00\xff",
         "nested": {"a": [1, "two", {"three": 3.5}, {}], "empty": {}}, "list": []},
        # Keys JSON writes with escapes (<, &, U+2028) are the encoding/json path.
        # (FerretDB 1.24 cannot store keys with quotes, backslashes or controls.)
        {"_id": "escapes", "a<b": "v", "a&b": {"line\u2028sep": ["<&>"]}, "quote": 'say "hi"',
         "backslash": "\\", "tab": "a\tb\nc", "ctl": "\x01\x1f", "html": "<a href='x'>&amp;</a>",
         "seps": "\u2028\u2029", "accents": "café पूजा 東京 🙂", "ключ": {"ü": ["\\\"", "é"]}},
        {"_id": "limits", "i32max": 2**31 - 1, "i32min": -2**31, "i64max": 2**63 - 1,
         "i64min": -2**63, "zero": 0.0, "tiny": 5e-324,
         "huge": 1.7976931348623157e308,
         "int_like_double": 3.0, "exp": 1e21, "neg": -12.5e-7, "false": False},
    ]
    mongo_db.roundtrip.insert_many(docs)
    by_find = {d["_id"]: d for d in mongo_db.roundtrip.find()}
    by_pipeline = {d["_id"]: d for d in mongo_db.roundtrip.aggregate([{"$match": {}}])}
    for doc in docs:
        for got in (by_find[doc["_id"]], by_pipeline[doc["_id"]]):
            assert got == doc
            assert list(got) == list(doc)  # the order of the keys too
            for key, value in doc.items():
                assert isinstance(got[key], type(value)), key  # 3.0 stays a float


def test_concurrent_reads_of_documents_with_many_schemas_agree(mongo_db):
    """Patch 7 keeps decoded schemas in one cache that every connection of
    FerretDB shares (emptied when it holds 1,024). Eight clients reading
    documents of 1,500 different shapes at once all get them back whole."""
    docs = [{"_id": f"d{n:05d}", f"field_{n % 1500}": n, "nested": {f"k{n % 7}": [str(n)]}}
            for n in range(3000)]
    mongo_db.shapes.insert_many(docs)
    expected = {d["_id"]: d for d in docs}

    def read_all(_):
        client = MongoClient(mongo_db.client.address[0], mongo_db.client.address[1],
                             tz_aware=True)
        try:
            return {d["_id"]: d for d in client[mongo_db.name].shapes.find().batch_size(200)}
        finally:
            client.close()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(read_all, range(8)))
    assert all(result == expected for result in results)


def test_id_in_finds_updates_and_deletes_exactly_the_listed_documents(mongo_db):
    mongo_db.things.insert_many([{"_id": f"id-{n}", "n": n} for n in range(20)]
                                + [{"_id": 5, "n": "number five"}])
    found = mongo_db.things.find({"_id": {"$in": ["id-3", "id-3", "id-11", "absent"]}})
    assert sorted(doc["n"] for doc in found) == [3, 11]
    # A value that is not a string is not pushed down, and still matches.
    found = mongo_db.things.find({"_id": {"$in": ["id-4", 5]}})
    assert sorted(str(doc["n"]) for doc in found) == ["4", "number five"]
    assert not _uses_index(mongo_db, {"_id": {"$in": ["id-4", 5]}})

    updated = mongo_db.things.update_many({"_id": {"$in": ["id-1", "id-2"]}}, {"$set": {"x": 1}})
    assert updated.modified_count == 2
    assert sorted(doc["_id"] for doc in mongo_db.things.find({"x": 1})) == ["id-1", "id-2"]
    deleted = mongo_db.things.delete_many({"_id": {"$in": [f"id-{n}" for n in range(10)]}})
    assert deleted.deleted_count == 10
    assert mongo_db.things.count_documents({}) == 11



def test_an_id_with_other_conditions_uses_the_index_and_still_applies_them(mongo_db):
    """Account-scoped lookups ({_id, account_id}) go through the `_id` index
    too; the other conditions still decide what matches."""
    mongo_db.things.insert_many([{"_id": f"id-{n}", "n": n,
                                  "account_id": "odd" if n % 2 else "even"} for n in range(20)])
    assert _uses_index(mongo_db, {"_id": "id-7", "account_id": "odd"})
    assert _uses_index(mongo_db, {"account_id": "odd", "_id": {"$in": ["id-7", "id-8"]}})
    assert not _uses_index(mongo_db, {"account_id": "odd"})

    assert mongo_db.things.find_one({"_id": "id-7", "account_id": "odd"})["n"] == 7
    assert mongo_db.things.find_one({"_id": "id-7", "account_id": "even"}) is None
    found = mongo_db.things.find({"account_id": "odd", "_id": {"$in": ["id-7", "id-8"]}})
    assert [doc["n"] for doc in found] == [7]
    assert mongo_db.things.count_documents({"_id": {"$in": ["id-1", "id-2", "id-3"]},
                                            "account_id": "odd"}) == 2
    assert mongo_db.things.update_one({"_id": "id-8", "account_id": "odd"},
                                      {"$set": {"x": 1}}).matched_count == 0
    assert mongo_db.things.delete_many({"_id": {"$in": ["id-1", "id-2", "id-3"]},
                                        "account_id": "odd"}).deleted_count == 2
    left = mongo_db.things.find({"_id": {"$in": ["id-1", "id-2", "id-3"]}})
    assert [doc["_id"] for doc in left] == ["id-2"]


def test_a_string_equality_reads_through_an_index_on_its_field(mongo_db):
    """Patch 5: `{account_id: "a", ...}` (or an `$in` of strings) reaches
    SQLite, which reads those accounts' documents through an index on the
    field, where unpatched FerretDB decoded every document of the collection
    to filter it."""
    mongo.ensure_indexes(mongo_db, {"things": [IndexModel([("account_id", ASCENDING),
                                                           ("email", ASCENDING)])]})
    mongo_db.things.insert_many([{"account_id": f"acct-{n % 10}", "email": f"e{n}", "n": n}
                                 for n in range(200)])

    plan = _plan(mongo_db, "things", {"account_id": "acct-3", "n": {"$gte": 0}})
    assert "USING INDEX" in plan and "account_id" in plan, plan
    assert sorted(d["n"] for d in mongo_db.things.find({"account_id": "acct-3"})) == \
        list(range(3, 200, 10))
    assert mongo_db.things.count_documents({"account_id": "acct-3"}) == 20

    either = {"account_id": {"$in": ["acct-3", "acct-4"]}}
    plan = _plan(mongo_db, "things", either)
    assert "USING INDEX" in plan and "account_id" in plan, plan
    assert mongo_db.things.count_documents(either) == 40
    emails = {"account_id": "acct-3", "email": {"$in": ["e3", "e13", "e14", "absent"]}}
    assert sorted(d["n"] for d in mongo_db.things.find(emails)) == [3, 13]


def _prefix_page_plan(db, filter_: dict) -> str:
    return " | ".join(db.command("explain", {"find": "things", "filter": filter_,
                                             "sort": {"_id": 1}, "limit": 51})
                      ["queryPlanner"]["Plan"])


def test_a_prefix_range_reads_through_an_index_and_matches_exactly_what_mongodb_does(mongo_db):
    """Patch 10: a search page `{account_id, key: {$gte: p, $lt: p+1}}` sorted
    by `_id` reads the few documents it matches through the key's index, where
    FerretDB decoded the whole account. A prefix with a character JSON escapes
    stays with FerretDB's own filter; either way the answer is MongoDB's."""
    from services.contacts.domain import prefix_range
    mongo.ensure_indexes(mongo_db, {"things": [IndexModel([("account_id", ASCENDING),
                                                           ("key", ASCENDING)])]})
    keys = ["ann", "ann.lee@x", "anna", "ano", "an", "ANN", "ann<b", "ann lee", "annü", "anm",
            ["zzz", "ann1"], ["zzz"], 5, None, {"ann": 1}, "a<b", "a<", "a&b", "jürgen", "jüx",
            "李四", "ann\u2028", "ann\"q"]
    docs = [{"_id": f"id-{n:03d}", "account_id": "a", **({} if key is None else {"key": key})}
            for n, key in enumerate(keys)]
    docs += [{"_id": "id-other", "account_id": "b", "key": "ann"}]
    mongo_db.things.insert_many(docs)

    def matches(value, bounds):
        """MongoDB's reading of a range: a string within it, or an array with
        a string at or above its start and one (maybe another) below its end."""
        strings = [v for v in (value if isinstance(value, list) else [value])
                   if isinstance(v, str)]
        return (any(v >= bounds["$gte"] for v in strings)
                and any(v < bounds["$lt"] for v in strings))

    for prefix in ["ann", "ann ", "ann l", "annü", "an", "a<", "a&", "jü", "李", "ann\u2028",
                   "ann\"", "zz"]:
        query = {"account_id": "a", "key": prefix_range(prefix)}
        expected = [d["_id"] for d in docs
                    if d["account_id"] == "a" and matches(d.get("key"), query["key"])]
        found = [d["_id"] for d in mongo_db.things.find(query).sort("_id", ASCENDING)]
        assert found == expected, prefix
        backwards = [d["_id"] for d in mongo_db.things.find(query).sort("_id", -1)]
        assert backwards == expected[::-1], prefix
        if len(expected) > 1:   # a page after a cursor, as GET /contacts asks
            after = {**query, "_id": {"$gt": expected[0]}}
            assert [d["_id"] for d in mongo_db.things.find(after).sort("_id", ASCENDING)
                    .limit(51)] == expected[1:], prefix
        assert mongo_db.things.count_documents(query) == len(expected), prefix

    plan = _prefix_page_plan(mongo_db, {"account_id": "a", "key": prefix_range("ann l")})
    assert "USING INDEX" in plan and "key" in plan, plan
    escaped = _prefix_page_plan(mongo_db, {"account_id": "a", "key": prefix_range("a<")})
    assert "key" not in escaped, escaped      # left to the handler


def test_a_prefix_with_many_matches_pages_both_ways_as_mongodb_does(mongo_db):
    """Past 2,000 matches patch 10 walks the `_id` index with the range in SQL
    instead of sorting what the key's index gives: pages after a cursor, in
    either order, are still exactly MongoDB's."""
    from services.contacts.domain import prefix_range
    mongo.ensure_indexes(mongo_db, {"things": [IndexModel([("account_id", ASCENDING),
                                                           ("key", ASCENDING)])]})
    rng = random.Random(38)
    docs = [{"_id": f"{rng.getrandbits(64):016x}{n:06d}", "account_id": "a",
             "key": f"{'common' if n % 3 else 'rare'}{n}"} for n in range(6300)]
    mongo_db.things.insert_many(docs)
    query = {"account_id": "a", "key": prefix_range("common")}
    matching = sorted(d["_id"] for d in docs if d["key"].startswith("common"))
    assert len(matching) > 2000
    for order, expected in ((ASCENDING, matching), (-1, matching[::-1])):
        cursor = expected[len(expected) // 2]
        bound = {"$gt": cursor} if order == ASCENDING else {"$lt": cursor}
        page = [d["_id"] for d in mongo_db.things.find({**query, "_id": bound})
                .sort("_id", order).limit(51)]
        assert page == expected[len(expected) // 2 + 1:][:51]
    assert mongo_db.things.count_documents(query) == len(matching)


def test_field_equalities_in_sql_match_exactly_what_mongodb_matches(mongo_db):
    """A field that holds an array matches when an element is the string; a
    missing field, another type or a document does not; values and
    names the patch leaves to FerretDB's own filter (a space, a quote,
    non-ASCII, a dotted path) still match as before. Reads, counts, updates
    and deletes all see the same documents."""
    mongo.ensure_indexes(mongo_db, {"things": [IndexModel([("tag", ASCENDING)])]})
    docs = [{"_id": "plain", "tag": "red"},
            {"_id": "in-array", "tag": ["blue", "red"]},
            {"_id": "mixed-array", "tag": [{"c": 1}, "red"]},
            {"_id": "other", "tag": "blue"},
            {"_id": "missing"},
            {"_id": "number", "tag": 7},
            {"_id": "document", "tag": {"red": 1}},
            {"_id": "spaced", "tag": "dark red"},
            {"_id": "quoted", "tag": 'say "red"'},
            {"_id": "accented", "tag": "rouge é"},
            {"_id": "dotted", "a": {"b": "red"}}]
    mongo_db.things.insert_many(docs)

    def ids(filter_):
        return sorted(d["_id"] for d in mongo_db.things.find(filter_))

    assert ids({"tag": "red"}) == ["in-array", "mixed-array", "plain"]
    assert ids({"tag": {"$in": ["red", "blue"]}}) == ["in-array", "mixed-array", "other", "plain"]
    assert ids({"tag": {"$in": ["red", 7]}}) == ["in-array", "mixed-array", "number", "plain"]
    assert ids({"tag": {"$in": ["dark red", "absent"]}}) == ["spaced"]
    assert ids({"tag": {"$in": []}}) == []
    assert ids({"tag": "red", "_id": {"$in": ["in-array", "other"]}}) == ["in-array"]
    assert ids({"tag": "red", "$or": [{"_id": "plain"}, {"_id": "other"}]}) == ["plain"]
    assert ids({"tag": 7}) == ["number"]
    assert ids({"tag": "dark red"}) == ["spaced"]
    assert ids({"tag": 'say "red"'}) == ["quoted"]
    assert ids({"tag": "rouge é"}) == ["accented"]
    assert ids({"a.b": "red"}) == ["dotted"]
    red = ("plain", "in-array", "mixed-array")
    assert ids({"tag": {"$ne": "red"}}) == sorted(d["_id"] for d in docs if d["_id"] not in red)
    assert mongo_db.things.count_documents({"tag": "blue"}) == 2

    assert mongo_db.things.update_many({"tag": "blue"}, {"$set": {"seen": True}}).modified_count == 2
    assert ids({"seen": True}) == ["in-array", "other"]
    assert mongo_db.things.delete_many({"tag": "red"}).deleted_count == 3
    assert ids({}) == sorted(d["_id"] for d in docs if d["_id"] not in red)


def test_an_update_command_of_more_statements_than_connections_completes(mongo_uri, mongo_db):
    """Patch 6: unpatched, FerretDB kept every statement's read open until the
    command ended, one SQLite connection each of its pool of 100, and a
    151-statement update waited forever (a timeout here, not a hang)."""
    from pymongo import MongoClient, UpdateOne
    mongo_db.things.insert_many([{"_id": f"id-{n}", "account_id": "a", "n": n}
                                 for n in range(151)])
    impatient = MongoClient(mongo_uri, socketTimeoutMS=20_000)[mongo_db.name]
    try:
        result = impatient.things.bulk_write(
            [UpdateOne({"_id": f"id-{n}", "account_id": "a"}, {"$set": {"n": -n - 1}})
             for n in range(151)], ordered=False)
    finally:
        impatient.client.close()
    assert result.modified_count == 151
    assert sorted(d["n"] for d in mongo_db.things.find()) == sorted(-n - 1 for n in range(151))


def test_find_by_ids_returns_every_stored_document_however_many_ids(mongo_db):
    mongo_db.things.insert_many([{"_id": f"id-{n}", "n": n} for n in range(0, 2_500, 2)])
    wanted = [f"id-{n}" for n in range(2_500)] + ["id-4", "id-4"]
    found = mongo.find_by_ids(mongo_db.things, wanted)
    assert sorted(found) == sorted(f"id-{n}" for n in range(0, 2_500, 2))
    assert found["id-4"]["n"] == 4
    assert mongo.find_by_ids(mongo_db.things, []) == {}


def _explain_sorted(db, collection: str, filter_: dict, order: int = 1) -> dict:
    return db.command("explain", {"find": collection, "filter": filter_,
                                  "sort": {"_id": order}, "limit": 8})


def test_pages_sorted_by_id_are_read_in_index_order_from_the_cursor(mongo_db):
    """Keyset pagination (`_id` past the cursor, sorted by `_id`, limited):
    the patched FerretDB reads it through the `_id` index from the cursor
    on, in both directions, where unpatched it read and sorted everything."""
    seeded = random.Random(7)
    ids = [f"{seeded.getrandbits(64):016x}" for _ in range(300)]
    mongo_db.things.insert_many([{"_id": id_, "account_id": "a" if n % 3 else "b"}
                                 for n, id_ in enumerate(ids)])
    mine = sorted(id_ for n, id_ in enumerate(ids) if n % 3)

    forward, after = [], None
    while True:
        query = {"account_id": "a", **({"_id": {"$gt": after}} if after else {})}
        page = [d["_id"] for d in mongo_db.things.find(query).sort("_id", 1).limit(8)]
        forward += page
        if len(page) < 8:
            break
        after = page[-1]
    assert forward == mine

    before = mine[100]
    page = [d["_id"] for d in mongo_db.things.find({"account_id": "a", "_id": {"$lt": before}})
            .sort("_id", -1).limit(8)]
    assert page == mine[92:100][::-1]

    # a cursor over several batches (getMore), and a skip, keep the order
    assert [d["_id"] for d in mongo_db.things.find({"account_id": "a"}).sort("_id", 1)
            .batch_size(16)] == mine
    assert [d["_id"] for d in mongo_db.things.find({"account_id": "a"}).sort("_id", -1)
            .skip(5).limit(3)] == mine[::-1][5:8]

    first = _explain_sorted(mongo_db, "things", {"account_id": "a"})
    assert first["sortPushdown"] and first["filterPushdown"]  # the account, in SQL (patch 5)
    first_plan = " | ".join(first["queryPlanner"]["Plan"])
    assert "_id_" in first_plan and "TEMP B-TREE" not in first_plan, first_plan
    deep = _explain_sorted(mongo_db, "things", {"account_id": "a", "_id": {"$gt": before}})
    assert deep["sortPushdown"] and deep["filterPushdown"]
    assert any("USING INDEX" in step and ">?" in step for step in deep["queryPlanner"]["Plan"])


def test_an_id_that_does_not_sort_like_its_json_text_turns_id_order_off(mongo_db):
    """The index orders `_id`s by their JSON text, which is MongoDB's order
    only for plain printable strings: "ab!" is after "ab" in MongoDB but
    before it as JSON ('"ab!"' < '"ab"'). One such `_id` and the collection
    is sorted in memory again, correctly."""
    mongo_db.things.insert_many([{"_id": id_} for id_ in ["ab", "abc", "b", "a#"]])
    assert _explain_sorted(mongo_db, "things", {})["sortPushdown"]

    mongo_db.things.insert_one({"_id": "ab!"})
    assert not _explain_sorted(mongo_db, "things", {})["sortPushdown"]
    assert not _explain_sorted(mongo_db, "things", {"_id": {"$gt": "ab"}})["filterPushdown"]
    found = mongo_db.things.find({"_id": {"$gt": "ab"}}).sort("_id", 1)
    assert [d["_id"] for d in found] == ["ab!", "abc", "b"]

    mongo_db.generated.insert_many([{"n": 1}, {"_id": "z"}])   # an ObjectId and a string
    assert not _explain_sorted(mongo_db, "generated", {})["sortPushdown"]
    assert [d["_id"] for d in mongo_db.generated.find().sort("_id", 1)][0] == "z"


def test_a_bound_that_does_not_sort_like_its_json_text_is_left_to_the_filter(mongo_db):
    mongo_db.things.insert_many([{"_id": id_} for id_ in ["a", "a-b", "ab", "b"]])
    plan = _explain_sorted(mongo_db, "things", {"_id": {"$gt": "a b"}})
    assert plan["sortPushdown"] and not plan["filterPushdown"]
    # the bound that sorts like its JSON text still narrows the read
    assert _explain_sorted(mongo_db, "things", {"_id": {"$gt": "a b", "$lt": "b"}})["filterPushdown"]
    found = mongo_db.things.find({"_id": {"$gt": "a b", "$lt": "b"}}).sort("_id", 1)
    assert [d["_id"] for d in found] == ["a-b", "ab"]


ORDERED_ID_CHARACTERS = "".join(chr(c) for c in range(ord("#"), ord("~") + 1) if chr(c) not in "\\<>&")


def test_id_order_pushed_down_is_mongodb_order_for_every_allowed_character(mongo_db):
    """Every character an `_id` may hold while the order is pushed down, in
    ids that are prefixes of one another too: the index's JSON-text order must
    be the byte order MongoDB sorts strings by, for a sort and for a range."""
    seeded = random.Random(11)
    ids = {"", "a", "a#", "a~", "ab", "b"}
    while len(ids) < 400:
        stem = seeded.choice(sorted(ids))   # grow existing ids: many shared prefixes
        ids.add(stem + "".join(seeded.choices(ORDERED_ID_CHARACTERS, k=seeded.randint(1, 3))))
    mongo_db.things.insert_many([{"_id": id_} for id_ in ids])
    assert _explain_sorted(mongo_db, "things", {})["sortPushdown"]

    by_bytes = sorted(ids, key=str.encode)
    assert [d["_id"] for d in mongo_db.things.find().sort("_id", 1)] == by_bytes
    for bound in seeded.sample(by_bytes, 20):
        assert _explain_sorted(mongo_db, "things", {"_id": {"$gte": bound}})["filterPushdown"]
        found = [d["_id"] for d in mongo_db.things.find({"_id": {"$gt": bound}}).sort("_id", -1)]
        assert found == [id_ for id_ in by_bytes if id_.encode() > bound.encode()][::-1]
