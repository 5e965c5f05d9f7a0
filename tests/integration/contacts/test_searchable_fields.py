"""Searchable custom fields, on the real FerretDB: the field's index is built
when it is declared or made searchable, kept while any account's field of
that key is searchable, dropped after; and a search for one value reads
through it."""
import threading
from concurrent.futures import ThreadPoolExecutor

from services.contacts import domain
from services.contacts.store import (SEAT_INDEX, ContactsStore, ensure_contacts_indexes, field_index,
                                     is_ferretdb)
from tests.integration.contacts.conftest import Client
from tests.integration.contacts.test_api import V1, found_ids, make_contact

CITY_INDEX = field_index("city").document["name"]


def contact_indexes(app) -> set[str]:
    return set(app.extensions["runtime"].db["contacts"].index_information())


def declare_city(client, **extra) -> dict:
    r = client.post(f"{V1}/fields", {"key": "city", "type": "text", **extra})
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def test_a_search_for_one_value_reads_through_the_fields_index(app, client, other):
    assert declare_city(client, searchable=True)["searchable"] is True
    assert CITY_INDEX in contact_indexes(app)
    declare_city(other, searchable=True)

    for i in range(40):
        make_contact(client, f"c{i}@example.com", fields={"city": "Pune" if i % 2 else "New York"})
    rare = make_contact(client, "rare@example.com", fields={"city": "Solapur"})
    make_contact(other, "theirs@example.com", fields={"city": "Solapur"})

    assert found_ids(client, "field=city&value=Solapur") == {rare["id"]}
    assert len(found_ids(client, "field=city&value=New%20York")) == 20
    assert found_ids(client, "field=city&value=Nowhere") == set()
    paged, cursor = [], ""   # the matches read first, sorted, then paged by the cursor
    while True:
        body = client.get(f"{V1}/contacts?field=city&value=Pune&limit=7{cursor}").get_json()
        paged += [c["id"] for c in body["items"]]
        if not body["next_cursor"]:
            break
        cursor = f"&cursor={body['next_cursor']}"
    assert len(paged) == 20 and paged == sorted(set(paged))

    db = app.extensions["runtime"].db
    explained = db.command("explain", {
        "find": "contacts", "filter": {"account_id": client.account_id, "fields.city": "Solapur"},
        "sort": {"_id": 1}, "limit": 51})
    if is_ferretdb(db):   # read through both of the index's first fields (patch 12)
        plan = " | ".join(explained["queryPlanner"]["Plan"])
        assert f"{CITY_INDEX} (<expr>=? AND <expr>>? AND <expr><?)" in plan, plan
        assert "detail=SCAN" not in plan, plan
    else:
        assert CITY_INDEX in str(explained["queryPlanner"]["winningPlan"])

    # a segment on the city: its preview reads through the index as well
    segment = client.post(f"{V1}/segments", {"name": "Solapur", "definition": {
        "all": [{"field": "fields.city", "op": "eq", "value": "Solapur"}]}}).get_json()
    preview = client.get(f"{V1}/segments/{segment['id']}/preview").get_json()
    assert preview["count"] == 1 and [c["id"] for c in preview["sample"]] == [rare["id"]]
    compiled = ContactsStore(db).compile_segment(client.account_id, segment["id"])
    explained = db.command("explain", {"find": "contacts", "filter": compiled,
                                       "sort": {"_id": 1}, "limit": 10})
    if is_ferretdb(db):
        plan = " | ".join(explained["queryPlanner"]["Plan"])
        assert f"{CITY_INDEX} (<expr>=? AND <expr>>? AND <expr><?)" in plan, plan


def test_the_index_lives_while_any_account_searches_the_key(app, client, other):
    mine = declare_city(client)
    assert mine["searchable"] is False and CITY_INDEX not in contact_indexes(app)

    r = client.patch(f"{V1}/fields/{mine['id']}", {"searchable": True})
    assert r.status_code == 200 and r.get_json()["searchable"] is True
    assert CITY_INDEX in contact_indexes(app)
    theirs = declare_city(other, searchable=True)

    assert client.patch(f"{V1}/fields/{mine['id']}", {"searchable": False}).status_code == 200
    assert CITY_INDEX in contact_indexes(app)    # the other account still searches it
    assert other.delete(f"{V1}/fields/{theirs['id']}").status_code == 204
    assert CITY_INDEX not in contact_indexes(app)

    # made searchable again, then deleted: gone with it
    assert client.patch(f"{V1}/fields/{mine['id']}", {"searchable": True}).status_code == 200
    assert client.patch(f"{V1}/fields/{mine['id']}", {"searchable": True}).status_code == 200
    assert CITY_INDEX in contact_indexes(app)
    assert client.delete(f"{V1}/fields/{mine['id']}").status_code == 204
    assert CITY_INDEX not in contact_indexes(app)


def test_an_index_dropped_meanwhile_is_built_again_by_the_last_check(app, client):
    """unindex_field checks again after its drop: a field made searchable
    between the first check and the drop keeps its index."""
    mine = declare_city(client, searchable=True)
    store = ContactsStore(app.extensions["runtime"].db)
    first_check = store.fields.find_one
    calls = []

    def find_one(*args, **kwargs):
        calls.append(args)
        return None if len(calls) == 1 else first_check(*args, **kwargs)

    store.fields.find_one = find_one   # the first check misses the searchable field
    store.unindex_field("city")
    assert len(calls) == 2 and CITY_INDEX in contact_indexes(app)
    assert client.get(f"{V1}/fields/{mine['id']}").get_json()["searchable"] is True


def test_searchable_takes_a_boolean_only(client):
    r = client.post(f"{V1}/fields", {"key": "city", "type": "text", "searchable": "maybe"})
    assert r.status_code == 400
    assert "searchable" in r.get_json()["error"]["details"]
    field = declare_city(client)
    r = client.patch(f"{V1}/fields/{field['id']}", {"searchable": [1]})
    assert r.status_code == 400 and "searchable" in r.get_json()["error"]["details"]


def test_an_index_the_database_refuses_leaves_the_field_unsearchable(app, client):
    """A 409 naming `searchable`: on create the field is not kept, on patch
    it stays unsearchable. (Here the name is taken by another index; on
    MongoDB the 65th index of a collection is refused the same way.)"""
    app.extensions["runtime"].db["contacts"].create_index([("account_id", 1)], name=CITY_INDEX)
    r = client.post(f"{V1}/fields", {"key": "city", "type": "text", "searchable": True})
    assert r.status_code == 409, r.get_json()
    error = r.get_json()["error"]
    assert error["code"] == "index_refused" and "searchable" in error["details"]
    assert client.get(f"{V1}/fields").get_json()["items"] == []

    field = declare_city(client)
    r = client.patch(f"{V1}/fields/{field['id']}", {"searchable": True})
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "index_refused"
    assert client.get(f"{V1}/fields/{field['id']}").get_json()["searchable"] is False


def test_an_account_has_at_most_five_searchable_fields(client, other):
    made = [client.post(f"{V1}/fields", {"key": f"f{i}", "type": "text", "searchable": True})
            for i in range(5)]
    assert all(r.status_code == 201 for r in made)
    r = client.post(f"{V1}/fields", {"key": "f5", "type": "text", "searchable": True})
    assert r.status_code == 409, r.get_json()
    assert r.get_json()["error"]["code"] == "too_many_searchable"
    assert "searchable" in r.get_json()["error"]["details"]

    plain = declare_city(client)
    assert client.patch(f"{V1}/fields/{plain['id']}", {"searchable": True}).status_code == 409
    assert other.post(f"{V1}/fields", {"key": "f5", "type": "text",
                                       "searchable": True}).status_code == 201   # its own five
    # one made unsearchable frees its place; patching a searchable one again is no new one
    first = made[0].get_json()
    assert client.patch(f"{V1}/fields/{first['id']}", {"searchable": False}).status_code == 200
    assert client.patch(f"{V1}/fields/{plain['id']}", {"searchable": True}).status_code == 200
    assert client.patch(f"{V1}/fields/{plain['id']}", {"searchable": True}).status_code == 200


def test_requests_at_once_never_make_a_sixth_searchable_field(app, client):
    """Twelve requests at once, half declaring new searchable fields, half
    making plain ones searchable: five pass, to the unit, on five seats."""
    plain = [client.post(f"{V1}/fields", {"key": f"plain{i}", "type": "text"}).get_json()
             for i in range(6)]
    clients = [Client(app.test_client(), client.account_id) for _ in range(12)]
    start = threading.Barrier(12)

    def request(i: int):
        start.wait()
        if i % 2:
            return clients[i].patch(f"{V1}/fields/{plain[i // 2]['id']}", {"searchable": True})
        return clients[i].post(f"{V1}/fields", {"key": f"new{i}", "type": "text", "searchable": True})

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(request, range(12)))
    codes = sorted(r.status_code for r in answers)
    assert codes.count(409) == 7, codes
    assert {r.get_json()["error"]["code"] for r in answers if r.status_code == 409} == \
        {"too_many_searchable"}
    fields = app.extensions["runtime"].db["fields"]
    searchable = list(fields.find({"account_id": client.account_id, "searchable": True}))
    assert sorted(d["search_seat"] for d in searchable) == [0, 1, 2, 3, 4]
    # a refused patch left its field as it was; a refused declaration left no field
    assert fields.count_documents({"account_id": client.account_id}) == 6 + codes.count(201)


def test_fields_from_before_seats_get_theirs_at_start(app, client, other):
    """Fields written before seats have none: the start gives each one, and
    an account's searchable fields past five (the limit was not enforced to
    the unit then) stay searchable without taking a new one's place."""
    db = app.extensions["runtime"].db
    db["fields"].drop_index(SEAT_INDEX.document["name"])
    legacy = [{"_id": f"{i:032x}", "account_id": client.account_id, "key": f"old{i}",
               "label": f"old{i}", "type": "text", "choices": [], "searchable": i < 6,
               "created_at": domain.now()} for i in range(8)]
    db["fields"].insert_many(legacy)
    db["fields"].insert_one({**legacy[0], "_id": domain.new_id(), "account_id": other.account_id})

    ensure_contacts_indexes(db)
    ensure_contacts_indexes(db)   # a second start (another replica) changes nothing
    seats = {d["_id"]: d["search_seat"] for d in db["fields"].find({"account_id": client.account_id})}
    assert sorted(s for s in seats.values() if isinstance(s, int)) == [0, 1, 2, 3, 4]
    assert all(seats[d["_id"]] == d["_id"] for d in legacy[6:])        # plain: their own id
    assert db["fields"].find_one({"account_id": other.account_id})["search_seat"] == 0
    r = client.post(f"{V1}/fields", {"key": "new", "type": "text", "searchable": True})
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "too_many_searchable"
    over = next(d for d in legacy[:6] if isinstance(seats[d["_id"]], str))
    assert client.patch(f"{V1}/fields/{over['_id']}", {"searchable": False}).status_code == 200
    assert client.post(f"{V1}/fields", {"key": "new", "type": "text",
                                        "searchable": True}).status_code == 409   # still five


def test_the_service_start_builds_what_is_missing_and_drops_what_no_field_searches(app, client):
    db = app.extensions["runtime"].db
    declare_city(client, searchable=True)
    db["contacts"].drop_index(CITY_INDEX)                           # a build cut short
    db["contacts"].create_indexes([field_index("zip")])             # a drop cut short
    ensure_contacts_indexes(db)
    names = contact_indexes(app)
    assert CITY_INDEX in names and field_index("zip").document["name"] not in names
