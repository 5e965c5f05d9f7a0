"""Contacts through the real gateway and the running contacts web + worker:
CSV import with progress and rejected rows, the CLI, unsubscribe events
arriving from tracking.events, and isolation between accounts."""
from __future__ import annotations

import csv
import io
import json
import time

from services.contacts import cli
from shared import topics
from shared.events import new_event
from shared.kafka.kafka_impl import KafkaSink
from shared.kafka.producer import EventProducer

CSV = ("email;name;city\n"
       "ann@example.com;Ann;Pune\n"
       "broken-address;Nobody;Goa\n"
       "\"bob@example.com\";\"Bob; Junior\";Goa\n"  # the delimiter, quoted
       "ANN@Example.com;Ann twice;Pune\n"
       "=evil@example.com;=1+2;Pune\n").encode("utf-8")


def wait_for(fetch, done, deadline=90):
    end = time.monotonic() + deadline
    while True:
        value = fetch()
        if done(value) or time.monotonic() > end:
            return value
        time.sleep(0.5)


def setup_list(api, name="Customers"):
    r = api.post("/api/v1/lists", json={"name": name})
    assert r.status_code == 201, r.text
    assert api.post("/api/v1/fields", json={"key": "city", "type": "text"}).status_code == 201
    return r.json()["id"]


def test_import_through_the_gateway_with_progress_and_rejected_rows(api):
    list_id = setup_list(api)
    r = api.post(f"/api/v1/lists/{list_id}/imports", data={"mode": "add"},
                 files={"file": ("people.csv", CSV, "text/csv")})
    assert r.status_code == 202, r.text
    job = wait_for(lambda: api.get(f"/api/v1/imports/{r.json()['id']}").json(),
                   lambda j: j["status"] in ("done", "failed"))
    assert job["status"] == "done", job
    assert job["counters"] == {"read": 5, "created": 3, "updated": 0, "skipped_duplicate": 1,
                               "skipped_suppressed": 0, "rejected": 1}
    assert job["progress"] == 1.0
    rejected = api.get(f"/api/v1/imports/{job['id']}/rejected")
    assert rejected.status_code == 200 and "text/csv" in rejected.headers["content-type"]
    rows = list(csv.reader(io.StringIO(rejected.text)))
    assert len(rows) == 2 and rows[1][0] == "3"              # broken-address is record 3
    assert rows[1][1] == "invalid email address: An email address must have an @-sign."
    assert rows[1][2:] == ["broken-address", "Nobody", "Goa"]
    members = api.get(f"/api/v1/contacts?list_id={list_id}").json()["items"]
    assert {m["email"] for m in members} == {"ann@example.com", "bob@example.com",
                                             "=evil@example.com"}
    export = api.get(f"/api/v1/lists/{list_id}/export")
    assert "'=evil@example.com" in export.text and "'=1+2" in export.text
    usage = wait_for(lambda: api.get("/api/v1/usage"), lambda r: r.status_code == 200, 30)
    assert usage.status_code == 200 and usage.json()["contacts"] == 3


def test_the_cli_imports_with_a_progress_bar(api, gateway_url, tmp_path, capsys):
    list_id = setup_list(api, "CLI")
    source = tmp_path / "people.csv"
    source.write_bytes(CSV)
    rejected = tmp_path / "rejected.csv"
    key = api.headers["Authorization"].split()[1]
    code = cli.main(["import", str(source), "--list", list_id, "--url", gateway_url,
                     "--key", key, "--rejected", str(rejected), "--interval", "0.3"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["created"] == 3
    assert "[" in err and "100.0%" in err
    assert "broken-address" in rejected.read_text()


def test_uploads_over_the_limit_are_413(api):
    list_id = setup_list(api, "Big")
    huge = b"email\n" + b"x" * (201 * 1024 * 1024)
    r = api.post(f"/api/v1/lists/{list_id}/imports", data={"mode": "add"},
                 files={"file": ("big.csv", huge, "text/csv")})
    assert r.status_code == 413, r.text[:300]


def test_an_unsubscribe_from_tracking_applies_at_once(stack_env, new_account):
    account, api = new_account("Tracked")
    list_id = setup_list(api, "Tracked")
    contact = api.post("/api/v1/contacts", json={"email": "reader@example.com",
                                                 "list_ids": [list_id]}).json()
    assert contact["lists"][list_id]["status"] == "subscribed"
    producer = EventProducer(KafkaSink(stack_env["SANDESH_KAFKA_BOOTSTRAP"], "e2e-contacts"))
    producer.publish(topics.TRACKING_EVENTS, new_event(
        "tracking.unsubscribed", source="tracking", subject="c" * 32, account_id=account["id"],
        data={"campaign_id": "c" * 32, "contact_id": contact["id"], "job_id": "j" * 32,
              "list_id": list_id}))
    producer.flush()
    after = wait_for(lambda: api.get(f"/api/v1/contacts/{contact['id']}").json(),
                     lambda c: c["lists"][list_id]["status"] == "unsubscribed")
    assert after["lists"][list_id]["status"] == "unsubscribed"
    log = api.get(f"/api/v1/contacts/{contact['id']}/consent").json()["items"]
    assert [e["action"] for e in log] == ["subscribe", "unsubscribe"]


def test_accounts_are_isolated_through_the_gateway(new_account):
    _, mine = new_account("Mine")
    _, theirs = new_account("Theirs")
    list_id = setup_list(mine, "Private")
    contact = mine.post("/api/v1/contacts", json={"email": "p@example.com",
                                                  "list_ids": [list_id]}).json()
    for path in (f"/api/v1/lists/{list_id}", f"/api/v1/contacts/{contact['id']}",
                 f"/api/v1/lists/{list_id}/export", f"/api/v1/contacts/{contact['id']}/consent"):
        assert theirs.get(path).status_code == 404, path
    r = theirs.post(f"/api/v1/lists/{list_id}/imports", files={"file": ("a.csv", b"email\nq@x.com\n")})
    assert r.status_code == 404
    usage = wait_for(lambda: theirs.get("/api/v1/usage"), lambda r: r.status_code == 200, 30)
    assert usage.status_code == 200 and usage.json()["contacts"] == 0
