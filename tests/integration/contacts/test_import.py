"""CSV import end to end in-process: upload through the API, processing by the
worker's function against the real FerretDB, progress and rejected rows."""
import codecs
import csv
import io
import json
from datetime import timedelta

import pytest

from services.contacts import domain, handlers, imports, privacy, usecases
from services.contacts.import_files import rejected_path
from services.contacts.store import PLATFORM, ContactsStore
from shared.events import new_event
from shared.pii import email_hash, normalise_email
from shared.topics import PRIVACY_ACKS
from tests.integration.contacts.conftest import SALT, published

V1 = "/api/v1"

MESSY = (
    "\ufeffEmail,Full Name,City,Age\r\n"
    "ann@example.com,Ann,Pune,31\r\n"
    "BOB@Example.COM ,\"Bob \"\"the builder\"\"\",Goa,40\r\n"
    "carol@example.com,\"Carol\nSecond line\",Pune,\r\n"     # a line break in a name: rejected
    "not-an-address,Nobody,Pune,20\r\n"                       # bad email
    "dave@example.com,Dave\r\n"                               # short row: kept
    "erin@example.com,Erin,Pune,22,extra,cells\r\n"           # long row: rejected
    "ann@EXAMPLE.com,Ann again,Pune,31\r\n"                   # duplicate in the file
    "frank@example.com,Frank,Pune,old\r\n"                    # bad number
    "blocked@example.com,Blocked,Pune,50\r\n"                 # suppressed
    "\r\n"                                                    # blank line: not a row
    "=cmd@example.com,=HYPERLINK(\"x\"),Pune,1\r\n"           # a valid address, formula-looking
    "existing@example.com,Existing,Mumbai,60\r\n"             # already on the list
    "@SUM(A1),-2+3,Pune,1\r\n"                                # bad address, formula-looking
).encode("utf-8")


def upload(client, list_id, data: bytes, **form):
    body = {k: (json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in form.items()}
    body["file"] = (io.BytesIO(data), "contacts.csv")
    return client.post(f"{V1}/lists/{list_id}/imports", data=body,
                       content_type="multipart/form-data")


def expire_lease(store: ContactsStore, import_id: str) -> None:
    """As if the worker that ran the import died a while ago."""
    lease = store.imports.find_one({"_id": import_id})["lease_until"]
    store.imports.update_one({"_id": import_id},
                             {"$set": {"lease_until": lease - timedelta(hours=1)}})


def run_worker(app, settings, producer=None, batch_rows=3):
    runtime = app.extensions["runtime"]
    store = ContactsStore(runtime.db)
    while imports.run_pending(store, producer or runtime.producer(), SALT,
                              settings["SANDESH_IMPORT_DIR"], "test-worker", batch_rows, 60):
        pass


@pytest.fixture
def setup(client):
    list_id = client.post(f"{V1}/lists", {"name": "Imported"}).get_json()["id"]
    client.post(f"{V1}/fields", {"key": "city", "type": "text"})
    client.post(f"{V1}/fields", {"key": "age", "type": "number"})
    client.post(f"{V1}/suppressions", {"email": "blocked@example.com"})
    client.post(f"{V1}/contacts", {"email": "existing@example.com", "list_ids": [list_id],
                                   "fields": {"city": "Delhi"}})
    return list_id


def rejected_rows(client, import_id):
    r = client.get(f"{V1}/imports/{import_id}/rejected")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    return list(csv.reader(io.StringIO(r.get_data(as_text=True))))[1:]


def test_a_messy_file_imports_its_good_rows_and_explains_the_rest(client, app, settings, setup,
                                                                  broker):
    r = upload(client, setup, MESSY, mode="add")
    assert r.status_code == 202, r.get_json()
    job = r.get_json()
    assert job["status"] == "pending"
    run_worker(app, settings)
    job = client.get(f"{V1}/imports/{job['id']}").get_json()
    assert job["status"] == "done", job
    assert job["counters"] == {"read": 12, "created": 4, "updated": 0, "skipped_duplicate": 2,
                               "skipped_suppressed": 1, "rejected": 5}
    assert job["dialect"] == {"encoding": "utf-8", "delimiter": ",", "has_header": True}
    rejected = {int(row[0]): row for row in rejected_rows(client, job["id"])}
    assert sorted(rejected) == [4, 5, 7, 9, 14]       # record numbers; the header is 1
    assert "line breaks" in rejected[4][1] and rejected[4][3] == "Carol\nSecond line"
    assert "invalid email" in rejected[5][1] and "cells" in rejected[7][1]
    assert "age" in rejected[9][1]
    assert rejected[14][2:] == ["'@SUM(A1)", "'-2+3", "Pune", "1"]
    found = {c["email"]: c for c in
             client.get(f"{V1}/contacts?list_id={setup}&limit=50").get_json()["items"]}
    assert set(found) == {"ann@example.com", "BOB@example.com",
                          "dave@example.com", "existing@example.com", "=cmd@example.com"}
    assert found["BOB@example.com"]["name"] == 'Bob "the builder"'
    assert found["ann@example.com"]["fields"] == {"city": "Pune", "age": 31}
    assert found["existing@example.com"]["fields"] == {"city": "Delhi"}   # add mode: untouched
    created = [e for e in published(broker) if e["type"] == "contact.created"
               and e["data"]["via"] == "import"]
    assert len(created) == 4
    assert not any("@" in json.dumps(e) for e in published(broker))
    export = client.get(f"{V1}/lists/{setup}/export")
    assert export.status_code == 200 and export.mimetype == "text/csv"
    exported = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    assert len(exported) == 5
    evil = [row for row in exported if "cmd@" in row["email"]][0]
    assert evil["email"] == "'=cmd@example.com" and evil["name"].startswith("'=HYPERLINK")
    assert {row["list_status"] for row in exported} == {"subscribed"}


def test_latin1_semicolons_and_upsert(client, app, settings, setup, broker):
    data = ("email;name;city\n"
            "existing@example.com;José;Pune\n"
            "zoé@example.com;Zoé;Goa\n").encode("latin-1")
    job = upload(client, setup, data, mode="upsert").get_json()
    run_worker(app, settings)
    job = client.get(f"{V1}/imports/{job['id']}").get_json()
    assert job["dialect"] == {"encoding": "windows-1252", "delimiter": ";", "has_header": True}
    assert job["counters"]["created"] == 1 and job["counters"]["updated"] == 1
    items = client.get(f"{V1}/contacts?list_id={setup}").get_json()["items"]
    by_email = {c["email"]: c for c in items}
    assert by_email["existing@example.com"]["name"] == "José"
    assert by_email["existing@example.com"]["fields"]["city"] == "Pune"
    assert by_email["zoé@example.com"]["name"] == "Zoé"
    # found by the names and addresses the import wrote, folded
    found = lambda q: [c["email"] for c in client.get(f"{V1}/contacts?{q}").get_json()["items"]]
    assert found("name=jose") == ["existing@example.com"] and found("name=ZOE") == ["zoé@example.com"]
    assert found("email_prefix=zoe") == ["zoé@example.com"]
    # the update counts a revision, which contact.updated tells the sender
    existing = by_email["existing@example.com"]
    stored = ContactsStore(app.extensions["runtime"].db).contacts.find_one({"_id": existing["id"]})
    assert stored["revision"] == 1
    assert [e["data"] for e in published(broker) if e["type"] == "contact.updated"
            and e["subject"] == existing["id"]] == [
        {"contact_id": existing["id"], "fields": ["city", "name"], "revision": 1}]


def test_a_stray_byte_in_a_utf8_file_costs_its_row_and_mangles_no_other(client, app, settings,
                                                                          setup):
    """One byte that was not UTF-8 read the whole file as windows-1252, and
    an upsert wrote "JosÃ©" over a contact's good name, every accent of the
    file so, with nothing rejected. Rows merged by a stray CR were lost."""
    data = ("email,name,city\n"
            "existing@example.com,José,Zürich\n").encode() + b"bad@example.com,Bad\xffByte,X\n" + \
        b"cr@example.com,Cee,Y\rlf@example.com,Elle,Z\n" + b'oops@example.com,"Ann"e,W\n'
    job = upload(client, setup, data, mode="upsert").get_json()
    run_worker(app, settings)
    job = client.get(f"{V1}/imports/{job['id']}").get_json()
    assert job["status"] == "done" and job["dialect"]["encoding"] == "utf-8"
    assert (job["counters"]["updated"], job["counters"]["created"],
            job["counters"]["rejected"]) == (1, 2, 2)
    by_email = {c["email"]: c for c in client.get(f"{V1}/contacts?list_id={setup}&limit=50")
                .get_json()["items"]}
    assert by_email["existing@example.com"]["name"] == "José"
    assert by_email["existing@example.com"]["fields"]["city"] == "Zürich"
    assert {"cr@example.com", "lf@example.com"} <= set(by_email) and "bad@example.com" not in by_email
    rejected = {int(row[0]): row for row in rejected_rows(client, job["id"])}
    assert "not UTF-8" in rejected[3][1] and rejected[3][2] == "bad@example.com"
    assert "closing quote" in rejected[6][1]
    assert rejected[6][2] == 'oops@example.com,"Ann"e,W'   # the row as read: what to mend


def test_a_headerless_files_bad_first_row_costs_that_row_only(client, app, settings, setup):
    """The email column was guessed from the first row alone: a bad one
    failed the import, and every good row with it."""
    job = upload(client, setup, b"not-an-address,Ann\nbob@example.com,Bob\n").get_json()
    run_worker(app, settings)
    job = client.get(f"{V1}/imports/{job['id']}").get_json()
    assert job["status"] == "done", job
    assert (job["counters"]["created"], job["counters"]["rejected"]) == (1, 1)
    [rejected] = rejected_rows(client, job["id"])
    assert rejected[0] == "1" and "invalid email" in rejected[1]
    assert rejected[2:] == ["not-an-address", "Ann"]


def test_a_header_naming_a_field_twice_fails_the_import_saying_so(client, app, settings, setup):
    """"city" twice: the first column was the field's, and the other's
    values were dropped without a word."""
    job = upload(client, setup, b"email,city,city\nann@example.com,,Delhi\n").get_json()
    run_worker(app, settings)
    job = client.get(f"{V1}/imports/{job['id']}").get_json()
    assert job["status"] == "failed" and "fields.city" in job["error"], job
    assert "rename" in job["error"]


def test_an_upload_form_gets_the_checks_a_json_body_gets(client, setup, settings):
    """A second file under `file` was never imported, a second `mode` was
    dropped for the first, and a NUL went into the consent log: all 202."""
    from werkzeug.datastructures import MultiDict

    def post(fields):
        return client.post(f"{V1}/lists/{setup}/imports", data=MultiDict(fields),
                           content_type="multipart/form-data")

    def a_file(name="a.csv"):
        return io.BytesIO(b"email\nann@example.com\n"), name

    for fields, field in (([("file", a_file()), ("file", a_file("b.csv"))], "file"),
                          ([("file", a_file()), ("mode", "upsert"), ("mode", "add")], "mode"),
                          ([("file", a_file()), ("policy_version", "v1\x00x")], "policy_version")):
        answer = post(fields)
        assert answer.status_code == 400, answer.get_json()
        assert field in answer.get_json()["error"]["details"], answer.get_json()
    assert stored_files(settings) == {}
    assert post([("file", a_file()), ("mode", "upsert")]).status_code == 202


def test_a_date_past_year_9999_in_utc_costs_only_its_own_row(client, app, settings, setup):
    """Such a date parses, but storing it (in UTC) overflowed: the whole
    batch failed, then the import, and every good row after it was lost."""
    client.post(f"{V1}/fields", {"key": "renews", "type": "date"})
    data = ("email,renews\n"
            "g1@example.com,2030-01-02T10:00:00+05:30\n"
            "late@example.com,9999-12-31T23:00:00-05:00\n"
            "g2@example.com,2031-06-01\n").encode()
    job = upload(client, setup, data).get_json()
    run_worker(app, settings)
    job = client.get(f"{V1}/imports/{job['id']}").get_json()
    assert job["status"] == "done", job
    assert job["counters"]["created"] == 2 and job["counters"]["rejected"] == 1, job
    [row] = rejected_rows(client, job["id"])
    assert row[0] == "3" and "renews" in row[1] and "out of range" in row[1]
    found = {c["email"]: c["fields"]["renews"] for c in
             client.get(f"{V1}/contacts?list_id={setup}&limit=50").get_json()["items"]
             if "renews" in c["fields"]}
    assert found == {"g1@example.com": "2030-01-02T04:30:00+00:00",
                     "g2@example.com": "2031-06-01T00:00:00+00:00"}


def test_a_number_of_thousands_of_digits_costs_only_its_own_row(client, app, settings, setup):
    """int() refuses a string of over 4,300 digits with a bare ValueError,
    which failed the batch five times over, then the import: every good row
    after it was lost and the row itself never listed."""
    data = ("email,age\n"
            "g1@example.com,5\n"
            f"huge@example.com,{'1' * 5000}\n"
            f"big@example.com,{'9' * 20}\n"
            f"padded@example.com,{'0' * 30}7\n"
            "g2@example.com,8\n").encode()
    job = upload(client, setup, data).get_json()
    run_worker(app, settings, batch_rows=2)
    job = client.get(f"{V1}/imports/{job['id']}").get_json()
    assert job["status"] == "done", job
    assert job["counters"]["created"] == 3 and job["counters"]["rejected"] == 2, job
    assert [(row[0], row[1]) for row in rejected_rows(client, job["id"])] == [
        ("3", "age: number out of range"), ("4", "age: number out of range")]
    ages = {c["email"]: c["fields"].get("age") for c in
            client.get(f"{V1}/contacts?list_id={setup}&limit=50").get_json()["items"]}
    assert {e: ages[e] for e in ("g1@example.com", "padded@example.com", "g2@example.com")} == \
        {"g1@example.com": 5, "padded@example.com": 7, "g2@example.com": 8}


def test_an_export_imports_back_as_it_was(client, other, app, settings, setup):
    """The export escapes cells against formulas (`'-5`): read back as they
    were written, a negative number was rejected and cost its row, and an
    address -ann@... came back as a new one with a quote in it."""
    people = [("-ann@example.com", "-Ann", -5), ("eq@example.com", "=SUM(A1)", 7),
              ("plain@example.com", "'Quoted", 3)]
    for email, name, age in people:
        client.post(f"{V1}/contacts", {"email": email, "name": name, "list_ids": [setup],
                                       "fields": {"age": age}})
    exported = client.get(f"{V1}/lists/{setup}/export").get_data()
    assert b"'-Ann" in exported and b"'-5" in exported

    other.post(f"{V1}/fields", {"key": "age", "type": "number"})
    theirs = other.post(f"{V1}/lists", {"name": "Back"}).get_json()["id"]
    mapping = {"email": "email", "name": "name", "fields": {"age": "fields.age"}}
    job = upload(other, theirs, exported, mapping=mapping).get_json()
    run_worker(app, settings)
    job = other.get(f"{V1}/imports/{job['id']}").get_json()
    assert job["status"] == "done" and job["counters"]["rejected"] == 0, job
    back = {c["email"]: (c["name"], c["fields"].get("age")) for c in
            other.get(f"{V1}/contacts?list_id={theirs}&limit=50").get_json()["items"]}
    assert {e: back[e] for e, _, _ in people} == {e: (n, a) for e, n, a in people}


def test_a_latin1_file_whose_first_accent_is_far_down_keeps_it(client, app, settings, setup):
    rows = "".join(f"plain{i}@example.com,{'Plain name ' * 18}\n" for i in range(320))
    data = ("email,name\n" + rows + "zoé@example.com,Zoé Müller\n").encode("latin-1")
    assert data.index("é".encode("latin-1")) > 64 * 1024
    job = upload(client, setup, data).get_json()
    run_worker(app, settings, batch_rows=500)
    job = client.get(f"{V1}/imports/{job['id']}").get_json()
    assert job["dialect"]["encoding"] == "windows-1252" and job["counters"]["created"] == 321, job
    found = client.get(f"{V1}/contacts?email_prefix=zo").get_json()["items"]
    assert [(c["email"], c["name"]) for c in found] == [("zoé@example.com", "Zoé Müller")]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_a_utf16_file_as_excel_writes_unicode_text_imports_every_row(client, app, settings,
                                                                      setup, encoding):
    """It failed whole: "no column of the first row looks like an address"."""
    text = "email\tname\r\nzoe@example.com\tZoë Çelik\r\nli@example.com\t李娜\r\n"
    bom = codecs.BOM_UTF16_LE if encoding == "utf-16-le" else codecs.BOM_UTF16_BE
    job = upload(client, setup, bom + text.encode(encoding)).get_json()
    run_worker(app, settings)
    job = client.get(f"{V1}/imports/{job['id']}").get_json()
    assert job["status"] == "done" and job["counters"]["created"] == 2, job
    found = {c["email"]: c["name"] for c in
             client.get(f"{V1}/contacts?list_id={setup}&limit=50").get_json()["items"]}
    assert found["zoe@example.com"] == "Zoë Çelik" and found["li@example.com"] == "李娜"


def test_the_first_row_of_an_address_wins_when_its_duplicate_is_in_the_next_batch(
        client, app, settings, setup):
    """Batches are written two at a time; one holding an address that the
    batch before it also holds waits for it. Without that wait the later
    row could create the contact and the first be skipped as its duplicate."""
    data = "email,name\n" + "".join(f"pair{i}@example.com,First {i}\n"
                                     f"pair{i}@example.com,Second {i}\n" for i in range(30))
    job = upload(client, setup, data.encode()).get_json()
    run_worker(app, settings, batch_rows=1)
    job = client.get(f"{V1}/imports/{job['id']}").get_json()
    assert job["status"] == "done", job
    assert (job["counters"]["created"], job["counters"]["skipped_duplicate"]) == (30, 30), job
    names = {c["email"]: c["name"] for c in
             client.get(f"{V1}/contacts?email_prefix=pair&limit=100").get_json()["items"]}
    assert names == {f"pair{i}@example.com": f"First {i}" for i in range(30)}


def test_no_header_with_an_explicit_mapping(client, app, settings, setup):
    data = b"Pune,x1@example.com,X One\nGoa,x2@example.com,X Two\n"
    job = upload(client, setup, data, mapping={"email": 1, "name": 2, "fields": {"city": 0}},
                 has_header="false").get_json()
    run_worker(app, settings)
    job = client.get(f"{V1}/imports/{job['id']}").get_json()
    assert job["counters"]["created"] == 2, job
    bad = upload(client, setup, b"a,b\n", mapping={"email": "nope"}).get_json()
    run_worker(app, settings)
    bad = client.get(f"{V1}/imports/{bad['id']}").get_json()
    assert bad["status"] == "failed" and "email" in bad["error"]  # only the header tells
    for mapping, says in (({"email": 0, "phone": 1}, "phone"), ({"fields": {"shoe": 1}}, "shoe"),
                          ({"email": -1}, "no column -1"), ({"name": [1]}, "column name"),
                          ({"fields": [1]}, "fields")):
        refused = upload(client, setup, b"a,b\n", mapping=mapping)   # known before reading
        assert refused.status_code == 400, (mapping, refused.get_json())
        assert says in refused.get_json()["error"]["details"]["mapping"][0]
    for mapping in ('{"email": ' + "1" * 5000 + "}", "[" * 100_000):
        refused = upload(client, setup, b"a,b\n", mapping=mapping)
        assert refused.status_code == 400 and "mapping" in refused.get_json()["error"]["details"]


def test_trailing_empty_cells_pass_and_a_short_first_row_sets_no_width(client, app, settings,
                                                                      setup):
    """Spreadsheets end rows with empty cells (t1@...,T One,): each such row
    was rejected as wider than the header. Without a header, a short first
    row made every longer row after it "too wide"."""
    data = b"email,name\nt1@example.com,T One,\nt2@example.com,T Two, ,\nt3@example.com,T3,x\n"
    job = upload(client, setup, data).get_json()
    run_worker(app, settings)
    job = client.get(f"{V1}/imports/{job['id']}").get_json()
    assert (job["counters"]["created"], job["counters"]["rejected"]) == (2, 1), job
    [(number, reason, *_)] = rejected_rows(client, job["id"])
    assert number == "4" and "3 cells where the header has 2" in reason
    data = b"h1@example.com\nh2@example.com,H Two\n"
    job = upload(client, setup, data, mapping={"email": 0, "name": 1},
                 has_header="false").get_json()
    run_worker(app, settings)
    job = client.get(f"{V1}/imports/{job['id']}").get_json()
    assert job["counters"]["created"] == 2, job


def test_an_outage_delays_an_import_however_often_it_strikes(client, app, settings, setup,
                                                            monkeypatch):
    """Each claim during an outage counted as an attempt, and the fifth
    gave the import up: a Kafka outage of ~15 minutes lost the rest of the
    file. Outages now only delay it; five real failures still end it."""
    from kafka.errors import KafkaTimeoutError
    from pymongo.errors import ServerSelectionTimeoutError
    rows = "".join(f"out{i}@example.com,Out {i}\n" for i in range(10))
    job = upload(client, setup, ("email,name\n" + rows).encode()).get_json()
    store = ContactsStore(app.extensions["runtime"].db)
    real_write = imports._write

    def expire_lease():
        store.imports.update_one({"_id": job["id"]},
                                 {"$set": {"lease_until": imports.EPOCH}})

    def run_through(error):
        def failing(*args, **kwargs):
            raise error
        monkeypatch.setattr(imports, "_write", failing)
        for _ in range(imports.MAX_ATTEMPTS + 2):
            expire_lease()
            with pytest.raises(type(error)):
                run_worker(app, settings)
        monkeypatch.setattr(imports, "_write", real_write)

    run_through(KafkaTimeoutError("broker down"))
    run_through(ServerSelectionTimeoutError("database down"))
    expire_lease()
    run_worker(app, settings)
    done = client.get(f"{V1}/imports/{job['id']}").get_json()
    assert done["status"] == "done" and done["counters"]["created"] == 10, done

    doomed = upload(client, setup, b"email\nlast@example.com\n").get_json()
    monkeypatch.setattr(imports, "_write", lambda *a, **k: 1 / 0)
    for _ in range(imports.MAX_ATTEMPTS):
        store.imports.update_one({"_id": doomed["id"]}, {"$set": {"lease_until": imports.EPOCH}})
        try:
            run_worker(app, settings)
        except ZeroDivisionError:
            pass
    failed = client.get(f"{V1}/imports/{doomed['id']}").get_json()
    assert failed["status"] == "failed" and "5 failures" in failed["error"], failed


def test_a_killed_worker_resumes_without_duplicates(client, app, settings, setup, monkeypatch):
    rows = "".join(f"user{i}@example.com,User {i},Pune,{i}\n" for i in range(40))
    data = ("email,name,city,age\n" + rows + "broken,x,y,z\n").encode()
    job = upload(client, setup, data).get_json()
    real_checkpoint = imports._checkpoint
    calls = {"n": 0}

    def dying_checkpoint(ctx, *position):
        calls["n"] += 1
        if calls["n"] == 5:         # the 4th batch is written, its checkpoint never is
            raise SystemExit("killed")
        real_checkpoint(ctx, *position)

    monkeypatch.setattr(imports, "_checkpoint", dying_checkpoint)
    with pytest.raises(SystemExit):
        run_worker(app, settings, batch_rows=7)
    monkeypatch.setattr(imports, "_checkpoint", real_checkpoint)
    store = ContactsStore(app.extensions["runtime"].db)
    halfway = store.imports.find_one({"_id": job["id"]})
    assert halfway["status"] == "running" and 0 < halfway["checkpoint"]["row"] < 41
    expire_lease(store, job["id"])
    run_worker(app, settings, batch_rows=7)
    done = client.get(f"{V1}/imports/{job['id']}").get_json()
    assert done["status"] == "done"
    assert done["counters"] == {"read": 41, "created": 40, "updated": 0, "skipped_duplicate": 0,
                                "skipped_suppressed": 0, "rejected": 1}
    assert store.contacts.count_documents({"account_id": client.account_id,
                                           "email": {"$regex": "^user"}}) == 40
    assert [row[0] for row in rejected_rows(client, job["id"])] == ["42"]


def test_changes_written_by_a_run_that_died_before_announcing_them_are_announced(
        client, app, settings, setup, broker, monkeypatch):
    """An update written, then the worker killed before its events went
    out: the resumed run found nothing left to change and said nothing, so
    the senders never heard of the new revision (and mailed the old address
    in the jobs already queued)."""
    ids = {}
    for i in range(3):
        ids[f"known{i}@example.com"] = client.post(f"{V1}/contacts", {
            "email": f"known{i}@example.com", "name": "Old", "list_ids": [setup]}).get_json()["id"]
    job = upload(client, setup, "".join(["email,name\n"] + [f"{address},New\n" for address in ids])
                 .encode(), mode="upsert").get_json()
    real_announce = imports._announce

    def killed_before_announcing(*args):
        raise SystemExit("killed")

    monkeypatch.setattr(imports, "_announce", killed_before_announcing)
    with pytest.raises(SystemExit):
        run_worker(app, settings, batch_rows=10)
    monkeypatch.setattr(imports, "_announce", real_announce)
    store = ContactsStore(app.extensions["runtime"].db)
    expire_lease(store, job["id"])
    run_worker(app, settings, batch_rows=10)
    assert client.get(f"{V1}/imports/{job['id']}").get_json()["counters"]["updated"] == 3
    announced = {e["subject"]: e["data"] for e in published(broker)
                 if e["type"] == "contact.updated"}
    assert announced == {cid: {"contact_id": cid, "fields": ["name"], "revision": 1}
                         for cid in ids.values()}
    assert {c["revision"] for c in store.contacts.find({"_id": {"$in": list(ids.values())}})} == {1}


def test_uploads_over_the_limit_are_refused_before_storing(client, setup, settings, monkeypatch):
    import os
    big = b"email\n" + b"someone@example.com\n" * 12000          # > 200,000 bytes
    r = upload(client, setup, big)
    assert r.status_code == 413 and r.get_json()["error"]["code"] == "payload_too_large"
    stored = [f for _, _, files in os.walk(settings["SANDESH_IMPORT_DIR"]) for f in files]
    assert stored == []
    r = client.post(f"{V1}/lists/{setup}/imports", data={"mode": "add"},
                    content_type="multipart/form-data")
    assert r.status_code == 400 and "file" in r.get_json()["error"]["details"]
    r = upload(client, setup, b"email\na@b.example\n", mode="merge")
    assert r.status_code == 400 and "mode" in r.get_json()["error"]["details"]
    # Within the limit as UTF-16, over it once rewritten as UTF-8.
    cjk = codecs.BOM_UTF16_LE + ("email\tname\r\n" + "a@b.example\t" + "李" * 70_000).encode(
        "utf-16-le")
    assert len(cjk) < int(settings["SANDESH_MAX_UPLOAD_BYTES"])
    r = upload(client, setup, cjk)
    assert r.status_code == 413 and "as UTF-8" in r.get_json()["error"]["message"]
    assert [f for _, _, files in os.walk(settings["SANDESH_IMPORT_DIR"]) for f in files] == []
    # An upload within the limit whose other field is over what a field may
    # hold in memory: the answer said the upload was over the limit.
    from services.contacts import files_api
    monkeypatch.setattr(files_api, "MAX_FORM_FIELD_BYTES", 50_000)   # under this test's upload limit
    r = upload(client, setup, b"email\na@b.example\n", consent_wording="x" * 100_000)
    assert r.status_code == 413
    assert r.get_json()["error"]["message"] == \
        "a form field other than file is larger than 50000 bytes, or the form has more than " \
        "1000 parts"


def test_imports_are_isolated(client, other, setup):
    job = upload(client, setup, b"email\nq@example.com\n").get_json()
    assert upload(other, setup, b"email\nq@example.com\n").status_code == 404
    for path in (f"/imports/{job['id']}", f"/imports/{job['id']}/rejected",
                 f"/lists/{setup}/imports"):
        assert other.get(V1 + path).status_code == 404
    assert other.post(f"{V1}/imports/{job['id']}/cancel").status_code == 404


def test_a_chunked_upload_over_the_limit_is_413_and_leaves_no_partial_file(client, setup,
                                                                           settings):
    import os
    boundary = "sandeshboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"big.csv\"\r\nContent-Type: text/csv\r\n\r\n").encode() + \
        b"email\n" + b"someone@example.com\n" * 12000 + f"\r\n--{boundary}--\r\n".encode()
    assert len(body) > int(settings["SANDESH_MAX_UPLOAD_BYTES"])
    # Chunked, as gunicorn hands it over: no usable Content-Length, input terminated.
    r = client.post(f"{V1}/lists/{setup}/imports", input_stream=io.BytesIO(body),
                    content_type=f"multipart/form-data; boundary={boundary}",
                    headers={"Transfer-Encoding": "chunked"},
                    environ_overrides={"wsgi.input_terminated": True})
    assert r.status_code == 413, r.get_data(as_text=True)[:300]
    assert r.get_json()["error"]["code"] == "payload_too_large"
    stored = [f for _, _, files in os.walk(settings["SANDESH_IMPORT_DIR"]) for f in files]
    assert stored == []
    assert client.get(f"{V1}/lists/{setup}/imports").get_json()["items"] == []


def test_an_import_never_resubscribes_the_opted_out_and_logs_its_consent(client, app, settings,
                                                                         setup):
    runtime = app.extensions["runtime"]
    ports = usecases.Ports(ContactsStore(runtime.db), runtime.producer(), SALT)
    left = client.post(f"{V1}/contacts", {"email": "left@example.com",
                                          "list_ids": [setup]}).get_json()
    client.put(f"{V1}/contacts/{left['id']}/lists/{setup}", {"status": "unsubscribed"})
    bounced = client.post(f"{V1}/contacts", {"email": "bounced@example.com"}).get_json()
    handlers.bounced(ports, new_event(
        "delivery.bounced", source="sender", subject="j", account_id=client.account_id,
        data={"job_id": "j" * 32, "campaign_id": "c" * 32, "contact_id": bounced["id"],
              "attempt": 1, "bounce_type": "hard"}))
    complainer = usecases.parse_address(ports, "complained@example.com")
    usecases.suppress(ports, PLATFORM, complainer.hash, "complaint", "platform")
    data = b"email\nleft@example.com\nbounced@example.com\ncomplained@example.com\nnew@example.com\n"
    job = upload(client, setup, data, policy_version="2024-05",
                 consent_wording="Send me the monthly letter").get_json()
    run_worker(app, settings)
    job = client.get(f"{V1}/imports/{job['id']}").get_json()
    assert job["counters"] == {"read": 4, "created": 1, "updated": 0, "skipped_duplicate": 0,
                               "skipped_suppressed": 3, "rejected": 0}, job
    members = {c["email"]: c["lists"][setup]["status"] for c in
               client.get(f"{V1}/contacts?list_id={setup}&limit=50").get_json()["items"]}
    assert members["left@example.com"] == "unsubscribed"
    assert "bounced@example.com" not in members and "complained@example.com" not in members
    assert client.get(f"{V1}/contacts?email_prefix=complained").get_json()["items"] == []
    assert members["new@example.com"] == "subscribed"
    [new] = client.get(f"{V1}/contacts?email_prefix=new@").get_json()["items"]
    [entry] = client.get(f"{V1}/contacts/{new['id']}/consent").get_json()["items"]
    assert (entry["action"], entry["via"], entry["import_id"], entry["list_id"]) == \
        ("subscribe", "import", job["id"], setup)
    assert (entry["policy_version"], entry["wording"], entry["actor"]) == \
        ("2024-05", "Send me the monthly letter", "key-test")
    for opted_out in (left, bounced):
        log = client.get(f"{V1}/contacts/{opted_out['id']}/consent").get_json()["items"]
        assert all(e.get("import_id") != job["id"] for e in log)


def test_a_list_of_existing_contacts_imports_into_another_list(client, app, settings, setup):
    """Every row an existing contact: one batch of updates, one per contact,
    more than the local FerretDB's 100 connections (it hung on that, patch 6
    in devstack/ferretdb_patches.py)."""
    data = ("email,city\n" + "".join(f"again{n}@example.com,Pune\n" for n in range(150))).encode()
    upload(client, setup, data)
    run_worker(app, settings, batch_rows=200)
    second = client.post(f"{V1}/lists", {"name": "Second"}).get_json()["id"]

    job = upload(client, second, data).get_json()
    run_worker(app, settings, batch_rows=200)

    job = client.get(f"{V1}/imports/{job['id']}").get_json()
    assert job["status"] == "done", job
    assert job["counters"] == {"read": 150, "created": 0, "updated": 150, "skipped_duplicate": 0,
                               "skipped_suppressed": 0, "rejected": 0}, job
    members = client.get(f"{V1}/contacts?list_id={second}&limit=200").get_json()["items"]
    assert len(members) == 150
    assert all(c["lists"][second]["status"] == "subscribed" and setup in c["lists"]
               for c in members)


def test_workers_claiming_at_the_same_time_take_each_import_once(mongo_db):
    """Four workers poll the import queue at once on the real FerretDB: each
    pending import is taken by exactly one of them."""
    import threading

    store = ContactsStore(mongo_db)
    now = domain.now()
    ids = [domain.ordered_id() for _ in range(6)]
    store.imports.insert_many([imports.new_import("acct", "list", i, "/nowhere", 1, {"mode": "add"},
                                                  "test", now) for i in ids])
    taken: dict[str, list[str]] = {}
    barrier = threading.Barrier(4)

    def worker(name):
        barrier.wait()
        mine = []
        while (job := imports.claim(store, name, 600, domain.now())) is not None:
            mine.append(job["_id"])
        taken[name] = mine

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [i for mine in taken.values() for i in mine]
    assert sorted(claimed) == sorted(ids)
    owners = {d["_id"]: (d["lease_owner"], d["attempts"]) for d in store.imports.find()}
    assert all(owners[i] == (name, 1) for name, mine in taken.items() for i in mine)


def test_a_cancelled_import_announces_and_logs_consent_for_every_row_it_wrote(
        client, app, settings, setup, broker, monkeypatch):
    """Cancel flipped the status at once: the worker's next checkpoint
    failed, and the batch it had already written stayed subscribed with no
    consent entry, no events and no count. Now it stops once all it wrote
    is announced."""
    data = ("email\n" + "".join(f"c{i}@example.com\n" for i in range(30))).encode()
    job = upload(client, setup, data).get_json()
    real_checkpoint = imports._checkpoint
    checkpoints = []

    def cancel_after_the_first_batch(ctx, *args):
        real_checkpoint(ctx, *args)
        checkpoints.append(args[0])
        if len(checkpoints) == 2:  # the header, then the first batch
            answer = client.post(f"{V1}/imports/{job['id']}/cancel").get_json()
            assert answer["status"] == "running" and answer["cancel_requested"] is True

    monkeypatch.setattr(imports, "_checkpoint", cancel_after_the_first_batch)
    run_worker(app, settings)
    job = client.get(f"{V1}/imports/{job['id']}").get_json()
    assert job["status"] == "cancelled", job
    db = app.extensions["runtime"].db
    written = {c["_id"] for c in db["contacts"].find({"origin.import_id": job["id"]})}
    assert 3 <= len(written) < 30  # it stopped early, after at least the first batch
    consented = {cid for entry in db["consent"].find({"import_id": job["id"]})
                 for cid in entry["contact_ids"]}
    assert consented == written
    assert job["counters"]["created"] == len(written)
    announced = {e["data"]["contact_id"] for e in published(broker)
                 if e["type"] == "contact.created" and e["data"]["contact_id"] in written}
    assert announced == written
    assert client.post(f"{V1}/imports/{job['id']}/cancel").get_json()["status"] == "cancelled"


def stored_files(settings) -> dict[str, int]:
    """Every file under the import directory, with its permission bits (but
    the empty lock files of rejected_rows' scrubs, which hold nothing)."""
    import os
    root = settings["SANDESH_IMPORT_DIR"]
    return {os.path.relpath(os.path.join(d, f), root): os.stat(os.path.join(d, f)).st_mode & 0o777
            for d, _, files in os.walk(root) for f in files if f != ".scrub.lock"}


@pytest.mark.parametrize("mapping", [
    '{"email": "\\ud800"}', '{"email": 99999999999999999999}',
    '{"email": 0, "fields": {"age": 99999999999999999999}}', '{"email": 0, "fields": []}',
    '{"email": null}'])   # failed only once the worker read the file
def test_a_mapping_no_database_could_store_is_a_400_and_keeps_no_file(client, setup, settings,
                                                                       mapping):
    """These were 500s, and each left the uploaded addresses on disk with no
    import naming them, so nothing ever deleted them."""
    r = client.post(f"{V1}/lists/{setup}/imports", content_type="multipart/form-data",
                    data={"mapping": mapping,
                          "file": (io.BytesIO(b"email,age\nm@example.com,3\n"), "c.csv")})
    assert r.status_code == 400, r.get_data(as_text=True)[:300]
    assert list(r.get_json()["error"]["details"]) == ["mapping"]
    assert stored_files(settings) == {}


def test_no_upload_outlives_its_import_and_the_rejected_rows_are_private(client, app, settings,
                                                                         setup):
    """The upload was deleted only after a successful import: one that
    failed or was cancelled kept every address for good. The rejected rows
    (kept for the account to fetch) were world-readable."""
    failed = upload(client, setup, b"email,name\nf@example.com,F\n",
                    mapping={"email": "no such column"}).get_json()
    cancelled = upload(client, setup, b"email\nc@example.com\n").get_json()
    client.post(f"{V1}/imports/{cancelled['id']}/cancel")
    done = upload(client, setup, b"email,name\nd@example.com,D\nnot-an-address,X\n").get_json()
    run_worker(app, settings)
    assert client.get(f"{V1}/imports/{failed['id']}").get_json()["status"] == "failed"
    assert client.get(f"{V1}/imports/{done['id']}").get_json()["status"] == "done"
    account = client.account_id
    assert stored_files(settings) == {
        f"{account}/{failed['id']}.rejected.csv": 0o600,
        f"{account}/{done['id']}.rejected.csv": 0o600}


def test_deleting_an_account_deletes_its_import_files(client, app, settings, setup):
    done = upload(client, setup, b"email,name\nd@example.com,D\nnot-an-address,X\n").get_json()
    run_worker(app, settings)
    pending = upload(client, setup, b"email\np@example.com\n").get_json()
    assert set(stored_files(settings)) == {f"{client.account_id}/{done['id']}.rejected.csv",
                                           f"{client.account_id}/{pending['id']}.csv"}
    privacy.handle_privacy_request(app.extensions["runtime"], new_event(
        "privacy.requested", source="sandesh.privacy", subject="r1", account_id=client.account_id,
        data={"request_id": "r1", "kind": "erasure", "subject": {"kind": "account"}}))
    assert stored_files(settings) == {}


def test_a_pending_import_cancelled_is_never_started(client, app, settings, setup):
    job = upload(client, setup, b"email\nnever@example.com\n").get_json()
    assert client.post(f"{V1}/imports/{job['id']}/cancel").get_json()["status"] == "cancelled"
    assert client.post(f"{V1}/imports/{job['id']}/cancel").status_code == 200   # twice is fine
    run_worker(app, settings)
    assert client.get(f"{V1}/contacts?email_prefix=never").get_json()["items"] == []


def test_cancelling_an_import_that_is_done_is_a_409(client, app, settings, setup):
    """It answered 200 and did nothing."""
    job = upload(client, setup, b"email\ndone@example.com\n").get_json()
    run_worker(app, settings)
    answer = client.post(f"{V1}/imports/{job['id']}/cancel")
    assert answer.status_code == 409 and answer.get_json()["error"]["code"] == "invalid_state"
    assert client.get(f"{V1}/imports/{job['id']}").get_json()["status"] == "done"


def erase_contact(app, client, contact_id: str) -> None:
    """What the contacts worker does with a privacy.requested erasure."""
    privacy.handle_privacy_request(app.extensions["runtime"], new_event(
        "privacy.requested", source="sandesh.privacy", subject="r1", account_id=client.account_id,
        data={"request_id": "r1", "kind": "erasure",
              "subject": {"kind": "contact", "contact_id": contact_id}}))


def test_an_erasure_takes_the_persons_rows_out_of_every_imports_rejected_rows(
        client, app, settings, setup):
    """The rejected rows keep the cells as uploaded, for the account to
    fetch: an erased person's address and name stayed there. Finished
    imports are scrubbed by the erasure, one not run yet at its end."""
    rows = (b"email,name,age\n"
            b"Ann.Lee@Example.com,Ann Lee,not a number\n"       # rejected: her address
            b"keep@example.com,Keep,also not\n"                 # rejected: someone else
            b"Ann Lee,ann.lee@example.com,3,extra\n")           # rejected (width): her address
    finished = upload(client, setup, rows).get_json()
    run_worker(app, settings)
    assert len(rejected_rows(client, finished["id"])) == 3
    ann = client.post(f"{V1}/contacts", {"email": "ann.lee@example.com", "name": "Ann Lee"})
    not_run_yet = upload(client, setup, rows).get_json()
    erase_contact(app, client, ann.get_json()["id"])
    left = rejected_rows(client, finished["id"])
    assert [row[2] for row in left] == ["keep@example.com"]
    assert "ann" not in json.dumps(left).lower()
    run_worker(app, settings)
    assert client.get(f"{V1}/imports/{not_run_yet['id']}").get_json()["counters"]["rejected"] == 3
    assert [row[2] for row in rejected_rows(client, not_run_yet["id"])] == ["keep@example.com"]
    assert stored_files(settings) == {f"{client.account_id}/{job['id']}.rejected.csv": 0o600
                                      for job in (finished, not_run_yet)}


def test_an_access_request_reports_the_persons_rejected_import_rows(client, app, settings,
                                                                     setup, broker):
    """A row refused before any contact was made of it is all the account
    holds of the person, and an erasure takes it out: the access request
    answered "not found" all the same."""
    rows = (b"email,name,age\n"
            b"Ann.Lee@Example.com,Ann Lee,not a number\n"   # rejected: her address
            b"keep@example.com,Keep,also not\n")            # rejected: someone else
    job = upload(client, setup, rows).get_json()
    run_worker(app, settings)
    broker.topics.clear()
    privacy.handle_privacy_request(app.extensions["runtime"], new_event(
        "privacy.requested", source="sandesh.privacy", subject="r1", account_id=client.account_id,
        data={"request_id": "r1", "kind": "access", "subject": {
            "kind": "contact", "email_hash": email_hash(normalise_email("ann.lee@example.com"),
                                                        SALT)}}))
    [answer] = [event["data"] for event in published(broker, PRIVACY_ACKS)]
    assert answer["status"] == "done", answer
    assert answer["export"]["rejected_import_rows"] == [{
        "import_id": job["id"], "row": "2", "reason": answer["export"]["rejected_import_rows"][0]
        ["reason"], "cells": ["Ann.Lee@Example.com", "Ann Lee", "not a number"]}]
    assert "keep@" not in json.dumps(answer)


def test_an_access_request_reports_rows_with_the_contacts_former_address(client, app, settings,
                                                                          setup, broker):
    """An erasure takes out the rows holding the addresses the contact had
    before a correction; its access request did not report them."""
    job = upload(client, setup, b"email,name,age\nann.old@example.com,Ann,not a number\n").get_json()
    run_worker(app, settings)
    ann = client.post(f"{V1}/contacts", {"email": "ann.old@example.com", "name": "Ann"}).get_json()
    assert client.patch(f"{V1}/contacts/{ann['id']}", {"email": "ann.new@example.com"}).status_code == 200
    broker.topics.clear()
    privacy.handle_privacy_request(app.extensions["runtime"], new_event(
        "privacy.requested", source="sandesh.privacy", subject="r1", account_id=client.account_id,
        data={"request_id": "r1", "kind": "access",
              "subject": {"kind": "contact", "contact_id": ann["id"]}}))
    [answer] = [event["data"] for event in published(broker, PRIVACY_ACKS)]
    assert [(row["import_id"], row["cells"][0]) for row in answer["export"]["rejected_import_rows"]] \
        == [(job["id"], "ann.old@example.com")]


def test_rejected_rows_left_unscrubbed_when_an_import_ended_are_scrubbed_by_the_sweep(
        client, app, settings, setup, monkeypatch):
    """The erasure skips an import still to run; when the import's own scrub
    at its end failed (or its worker died), nothing scrubbed the file again."""
    rows = b"email,name,age\nann.lee@example.com,Ann Lee,not a number\nkeep@example.com,K,x\n"
    job = upload(client, setup, rows).get_json()
    ann = client.post(f"{V1}/contacts", {"email": "ann.lee@example.com"}).get_json()
    erase_contact(app, client, ann["id"])

    def database_away(*_args):
        raise ConnectionError("database away")
    monkeypatch.setattr(ContactsStore, "erased_in_account", database_away)
    run_worker(app, settings)
    assert client.get(f"{V1}/imports/{job['id']}").get_json()["status"] == "done"
    assert len(rejected_rows(client, job["id"])) == 2       # the import's scrub failed
    monkeypatch.undo()
    store = ContactsStore(app.extensions["runtime"].db)
    assert imports.rejected_rows.scrub_finished_imports(store, settings["SANDESH_IMPORT_DIR"],
                                                        SALT) >= 1
    assert [row[2] for row in rejected_rows(client, job["id"])] == ["keep@example.com"]
    assert imports.rejected_rows.scrub_finished_imports(
        store, settings["SANDESH_IMPORT_DIR"], SALT, job["id"]) == 0   # done once


def test_which_of_300000_addresses_an_account_erased_is_asked_in_parts(mongo_db):
    """One $in of every hash was past MongoDB's 16 MB at ~220,000."""
    store = ContactsStore(mongo_db)
    erased = domain.address("gone@example.com", SALT).hash
    store.suppressions.insert_one({"account_id": PLATFORM, "email_hash": erased,
                                   "erased_in": ["acct"]})
    hashes = {f"{n:064x}" for n in range(300_000)} | {erased}
    assert store.erased_in_account("acct", hashes) == {erased}
    assert store.erased_in_account("another", hashes) == set()


def test_a_rejected_cell_of_the_full_length_escaped_against_formulas_still_reads_back(
        client, app, settings, setup):
    """Escaping it made the cell one character longer than the csv limit:
    every scrub of the file, so every erasure in the account, failed."""
    from services.contacts import csvread
    longest = b"=" + b"x" * (csvread.MAX_FIELD - 1)
    rows = b"email,name\nann.lee@example.com," + longest + b"\n"
    job = upload(client, setup, rows).get_json()
    run_worker(app, settings)
    assert client.get(f"{V1}/imports/{job['id']}").get_json()["counters"]["rejected"] == 1
    ann = client.post(f"{V1}/contacts", {"email": "ann.lee@example.com"}).get_json()
    erase_contact(app, client, ann["id"])
    assert rejected_rows(client, job["id"]) == []
    assert client.get(f"{V1}/contacts/{ann['id']}").status_code == 404


def test_one_file_the_sweep_cannot_scrub_holds_up_no_other_import(client, app, settings, setup):
    from services.contacts import rejected_rows as scrubbing
    rows = b"email,name,age\nann.lee@example.com,Ann,x\nkeep@example.com,K,x\n"
    broken, good, late = (upload(client, setup, rows).get_json() for _ in range(3))
    assert broken["id"] < late["id"]   # the sweep meets the broken file first
    store = ContactsStore(app.extensions["runtime"].db)
    store.imports.update_many({"_id": {"$ne": late["id"]}}, {"$set": {"status": "done"}})
    root = settings["SANDESH_IMPORT_DIR"]
    for job in (broken, good, late):
        path = rejected_path(root, client.account_id, job["id"])
        with open(path, "w", encoding="utf-8") as out:
            out.write("row,reason,cells\r\n2,age: x,ann.lee@example.com,Ann\r\n"
                      "3,age: x,keep@example.com,K\r\n")
    with open(rejected_path(root, client.account_id, broken["id"]), "a") as out:
        out.write('4,x,"' + "y" * 300_000 + '"\r\n')     # past what csv reads
    ann = client.post(f"{V1}/contacts", {"email": "ann.lee@example.com"}).get_json()
    erase_contact(app, client, ann["id"])   # scrubs both
    assert client.get(f"{V1}/contacts/{ann['id']}").status_code == 404   # the erasure went on
    assert [row[2] for row in rejected_rows(client, good["id"])] == ["keep@example.com"]
    # `late` was running through the erasure (skipped by it) and is over now
    store.imports.update_one({"_id": late["id"]}, {"$set": {"status": "done"}})
    for _ in range(scrubbing.MAX_FAILURES + 1):
        scrubbing.scrub_finished_imports(store, root, SALT)
    assert [row[2] for row in rejected_rows(client, late["id"])] == ["keep@example.com"]
    left = store.imports.find_one({"_id": broken["id"]})
    assert left["rejected_scrub_failures"] == scrubbing.MAX_FAILURES   # then left alone
    assert "rejected_scrubbed_at" not in left


def test_an_import_whose_list_is_deleted_fails_and_leaves_no_membership_of_it(
        client, app, settings, setup, monkeypatch):
    """It finished 'done', leaving contacts members of a list that was gone."""
    pending = upload(client, setup, b"email\nfirst@example.com\n").get_json()
    other = client.post(f"{V1}/lists", {"name": "Deleted midway"}).get_json()["id"]
    rows = b"email\n" + b"".join(b"mid%d@example.com\n" % i for i in range(9))
    running = upload(client, other, rows).get_json()
    real = imports._checkpoint
    calls = []

    def delete_after_the_first_batch(ctx, *args):
        real(ctx, *args)
        if ctx.list_id == other:
            calls.append(1)
            if len(calls) == 2:   # the header's checkpoint, then the first batch's
                assert client.delete(f"{V1}/lists/{other}").status_code == 204
    monkeypatch.setattr(imports, "_checkpoint", delete_after_the_first_batch)
    assert client.delete(f"{V1}/lists/{setup}").status_code == 204
    run_worker(app, settings)
    for job_id in (pending["id"], running["id"]):
        job = client.get(f"{V1}/imports/{job_id}").get_json()
        assert job["status"] == "failed" and "deleted" in job["error"], job
    found = client.get(f"{V1}/contacts?email_prefix=mid&limit=50").get_json()["items"]
    assert found and all(other not in c.get("lists", {}) for c in found), found
    assert client.get(f"{V1}/contacts?email_prefix=first").get_json()["items"] == []


def test_a_resumed_import_of_a_deleted_list_drops_what_the_dead_worker_wrote(
        client, app, settings, setup, monkeypatch):
    """The list went, then the worker wrote a batch and died: the worker
    that resumes it found the list gone and failed it, leaving that batch's
    memberships."""
    rows = b"email\n" + b"".join(b"dead%d@example.com\n" % i for i in range(9))
    job = upload(client, setup, rows).get_json()
    real = imports._checkpoint
    calls = {"n": 0}

    def list_deleted_then_killed(ctx, *position):
        calls["n"] += 1
        if calls["n"] == 2:         # the first batch is written, its checkpoint never is
            ContactsStore(app.extensions["runtime"].db).lists.delete_one({"_id": setup})
            raise SystemExit("killed")
        real(ctx, *position)

    monkeypatch.setattr(imports, "_checkpoint", list_deleted_then_killed)
    with pytest.raises(SystemExit):
        run_worker(app, settings)
    monkeypatch.setattr(imports, "_checkpoint", real)
    store = ContactsStore(app.extensions["runtime"].db)
    # What the dead worker left (beside the list's one contact from before)
    assert store.contacts.count_documents({"list_ids": setup, "email": {"$regex": "^dead"}}) > 0
    expire_lease(store, job["id"])
    run_worker(app, settings)
    failed = client.get(f"{V1}/imports/{job['id']}").get_json()
    assert failed["status"] == "failed" and "deleted" in failed["error"], failed
    assert store.contacts.count_documents({"list_ids": setup}) == 0


def erase_address(app, client, email: str) -> None:
    """A privacy.requested erasure naming an address, as contacts gets it."""
    hash_ = email_hash(normalise_email(email), SALT)
    privacy.handle_privacy_request(app.extensions["runtime"], new_event(
        "privacy.requested", source="sandesh.privacy", subject="r2", account_id=client.account_id,
        data={"request_id": "r2", "kind": "erasure",
              "subject": {"kind": "contact", "email_hash": hash_}}))


def before_the_first_call(monkeypatch, owner, name: str, action) -> None:
    """`owner.name` runs `action` once, just before its first call: the
    interleaving a test drives."""
    original = getattr(owner, name)

    def first(*args, **kwargs):
        monkeypatch.setattr(owner, name, original)
        action()
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, first)


def test_an_erasure_between_a_batchs_check_and_its_write_leaves_no_contact(
        client, app, settings, setup, monkeypatch):
    """The batch was checked for suppressed addresses, then an erasure of
    one of them found no contact and answered; then the batch wrote the
    person back, subscribed and with a consent entry."""
    before_the_first_call(monkeypatch, imports, "_write",
                          lambda: erase_address(app, client, "jane@example.com"))
    job = upload(client, setup, b"email,name\njane@example.com,Jane\nkeep@example.com,Keep\n")
    run_worker(app, settings)
    job = client.get(f"{V1}/imports/{job.get_json()['id']}").get_json()
    assert job["status"] == "done" and job["counters"]["created"] == 1, job
    assert job["counters"]["skipped_suppressed"] == 1, job
    emails = {c["email"] for c in client.get(f"{V1}/contacts?list_id={setup}").get_json()["items"]}
    assert "jane@example.com" not in emails and "keep@example.com" in emails


def test_an_erasure_looks_again_for_a_contact_written_while_it_suppressed(
        client, app, monkeypatch):
    """The erasure's look-up found nobody, an import or an API call wrote
    the address before the suppression was in: the erasure now finds it."""
    before_the_first_call(monkeypatch, usecases, "suppress", lambda: client.post(
        f"{V1}/contacts", {"email": "late@example.com", "name": "Late"}))
    erase_address(app, client, "late@example.com")
    assert client.get(f"{V1}/contacts?email_prefix=late").get_json()["items"] == []


def test_a_contact_created_while_its_address_is_erased_is_not_kept(client, app, monkeypatch):
    """The API checked the address, then an erasure of it ran before the
    insert: the contact is refused and not left behind."""
    store = ContactsStore(app.extensions["runtime"].db)
    before_the_first_call(monkeypatch, ContactsStore, "insert_contact",
                          lambda: erase_address(app, client, "racy@example.com"))
    answer = client.post(f"{V1}/contacts", {"email": "racy@example.com"})
    assert answer.status_code == 409 and answer.get_json()["error"]["code"] == "erased"
    assert store.contacts.count_documents({"account_id": client.account_id,
                                           "email": "racy@example.com"}) == 0
