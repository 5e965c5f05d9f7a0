"""Data-subject requests end to end, through the real gateway and every
running service: a contact is imported, mailed, opens and clicks; an access
request returns every kind of data held; an erasure request completes with
the address nowhere in any service's database or log, the campaign totals
unchanged, and the address refused when imported again.

A fresh account and an address unique to the test; the stack is shared."""
from __future__ import annotations

import json
import re
import subprocess
import time
import uuid

import pytest
import requests

from tests.e2e.test_send_path import (REPO, Gateway, by_recipient, gateway,  # noqa: F401
                                      make_campaign, make_list, received, wait_for)

pytestmark = pytest.mark.timeout(900)
SERVICE_LOGS = ("gateway", "contacts", "campaigns", "privacy", "sender", "tracking")


def add_contacts(gw: Gateway, list_id: str, rows: list[tuple[str, str]]) -> dict:
    """A CSV import, waited for until it has ended; returns the import."""
    csv = "email,name\n" + "".join(f"{address},{name}\n" for address, name in rows)
    started = gw.session.post(gw.base + f"/lists/{list_id}/imports", timeout=60,
                              files={"file": ("contacts.csv", csv.encode(), "text/csv")})
    assert started.status_code == 202, started.text
    return poll(lambda: gw.call("GET", f"/imports/{started.json()['id']}"),
                lambda s: s.get("status") in ("done", "failed", "cancelled"), 300)


def poll(fetch, done, timeout: float = 120.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    value = fetch()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(every)
        value = fetch()
    assert done(value), f"not reached in {timeout}s: {json.dumps(value, default=str)[:1500]}"
    return value


def request_and_wait(gw: Gateway, body: dict, timeout: float = 180) -> dict:
    made = gw.call("POST", "/privacy/requests", json=body)
    return poll(lambda: gw.call("GET", f"/privacy/requests/{made['id']}"),
                lambda r: r["status"] == "complete", timeout)


def tracking_links(message) -> tuple[str, str]:
    html = message.get_body(("html",)).get_content()
    opens = re.findall(r'src="([^"]+/t/o/[^"]+)"', html)
    clicks = re.findall(r'href="([^"]+/t/c/[^"]+)"', html)
    assert opens and clicks, html[:2000]
    return opens[0].replace("&amp;", "&"), clicks[0].replace("&amp;", "&")


def stats_without_time(gw: Gateway, campaign_id: str) -> dict:
    stats = gw.call("GET", f"/campaigns/{campaign_id}/stats")
    return {k: v for k, v in stats.items() if not k.endswith("_at") and k != "hourly"}


def databases_mentioning(stack_env, needles: list[str]) -> list[str]:
    """Every collection of every sandesh_* database, searched whole."""
    from shared import mongo
    client = mongo.client(stack_env["SANDESH_MONGO_URI"])
    prefix = stack_env.get("SANDESH_MONGO_DB_PREFIX", "sandesh_")
    hits = []
    for name in client.list_database_names():
        if not name.startswith(prefix):
            continue
        for collection in client[name].list_collection_names():
            for doc in client[name][collection].find():
                text = json.dumps(doc, default=str, ensure_ascii=False).lower()
                if any(n in text for n in needles):
                    hits.append(f"{name}.{collection} {doc.get('_id')}")
    return hits


def logs_mentioning(needles: list[str]) -> list[str]:
    hits = []
    for path in sorted((REPO / "run" / "logs").glob("*.log")):
        if not path.name.startswith(SERVICE_LOGS):
            continue
        text = path.read_text(errors="replace").lower()
        hits += [f"{path.name}: {n}" for n in needles if n in text]
    return hits


def test_access_then_erasure_of_a_mailed_contact_who_opened_and_clicked(gateway, stack_env):  # noqa: F811
    marker = uuid.uuid4().hex[:10]
    jane = f"Jane.Erase-{marker}@E2E.Example.com"
    name = f"Jane Erasable {marker}"
    # the address (any case), its local part, and the name
    needles = [f"jane.erase-{marker}", f"erase-{marker}", name.lower(), f"erasable {marker}"]
    rows = [(jane, name)] + \
        [(f"r{i}.{marker}@e2e.example.com", f"Person {i}") for i in range(5)]
    list_id = make_list(gateway, "privacy")
    add_contacts(gateway, list_id, rows)
    campaign_id = make_campaign(gateway, stack_env, [list_id])
    gateway.call("POST", f"/campaigns/{campaign_id}/send")
    wait_for(gateway, campaign_id, timeout=300)
    mails = poll(lambda: by_recipient(received(stack_env, marker)), lambda got: len(got) == 6, 120)
    [message] = [copies[0] for address, copies in mails.items() if "jane" in address.lower()]
    open_url, click_url = tracking_links(message)
    assert requests.get(open_url, timeout=10).status_code == 200
    # the click finds its URL once tracking has read the campaign's link table
    poll(lambda: requests.get(click_url, timeout=10, allow_redirects=False).status_code,
         lambda status: status in (301, 302, 303, 307), 300, every=2)
    stats = poll(lambda: stats_without_time(gateway, campaign_id),
                 lambda s: s["sent"] == 6 and sum(s["opens"][k] for k in ("total_human", "total_machine")) >= 1
                 and sum(s["clicks"][k] for k in ("total_human", "total_machine")) >= 1, 120)

    # access: every kind of data, assembled into one export
    access = request_and_wait(gateway, {"kind": "access", "subject": {"email": jane},
                                        "reason": "e2e access"})
    export = gateway.call("GET", f"/privacy/requests/{access['id']}/export")
    services = export["services"]
    assert services["contacts"]["data"]["contact"]["email"].lower() == jane.lower()
    assert services["contacts"]["data"]["memberships"][0]["list_id"] == list_id
    assert services["contacts"]["data"]["consent_log"]
    assert [m["campaign_id"] for m in services["sender"]["data"]["messages"]] == [campaign_id]
    engagement = {e["event"] for e in services["tracking"]["data"]["engagement"]}
    assert {"opened", "clicked"} <= engagement
    summary = gateway.session.get(gateway.base + f"/privacy/requests/{access['id']}/export",
                                  params={"format": "text"}, timeout=30)
    assert summary.status_code == 200 and "== tracking (done) ==" in summary.text

    # erasure: complete, the address nowhere, totals unchanged
    erasure = request_and_wait(gateway, {"kind": "erasure", "subject": {"email": jane},
                                         "reason": "e2e erasure"})
    assert set(erasure["answers"]) >= {"contacts", "sender", "tracking"}
    assert databases_mentioning(stack_env, needles) == []
    assert logs_mentioning(needles) == []
    assert stats_without_time(gateway, campaign_id) == stats

    # the address cannot come back
    again = make_list(gateway, "privacy again")
    reimport = add_contacts(gateway, again, [(jane.lower(), f"Jane Again {marker}")])
    assert reimport["status"] == "done", reimport
    assert reimport["counters"]["skipped_suppressed"] == 1, reimport["counters"]
    assert reimport["counters"]["created"] == reimport["counters"]["updated"] == 0
    # the local part keeps its case: look for both spellings, and by name
    for search in ({"email_prefix": jane.lower()}, {"email_prefix": jane.split("@")[0]},
                   {"name": name}, {"name": f"Jane Again {marker}"}):
        found = gateway.call("GET", "/contacts", params=search)
        assert found["items"] == [], (search, found)
    check = gateway.call("POST", "/suppressions/check", json={"email": jane})
    assert (check["suppressed"], check["scope"], check["reason"]) == (True, "platform", "erasure"), check
    assert databases_mentioning(stack_env, needles + [f"jane again {marker}"]) == []
    audit = gateway.call("GET", "/privacy/audit")["items"]
    assert {"access.requested", "export.downloaded", "erasure.requested", "erasure.completed"} \
        <= {e["action"] for e in audit}
    assert jane.lower() not in json.dumps(audit).lower()


def test_a_service_stopped_during_an_erasure_answers_after_restart(gateway, stack_env):  # noqa: F811
    from devstack.supervisor import supervisorctl
    list_id = make_list(gateway, "down")
    marker = uuid.uuid4().hex[:10]
    add_contacts(gateway, list_id, [(f"down-{marker}@e2e.example.com", "Down")])
    subprocess.run(supervisorctl("stop", "tracking:tracking-worker"), check=True, capture_output=True)
    try:
        made = gateway.call("POST", "/privacy/requests",
                            json={"kind": "erasure", "subject": {"email": f"down-{marker}@e2e.example.com"}})
        pending = poll(lambda: gateway.call("GET", f"/privacy/requests/{made['id']}"),
                       lambda r: {"contacts", "sender"} <= set(r["answers"]), 120)
        assert pending["status"] == "pending" and pending["waiting_for"] == ["tracking"]
    finally:
        subprocess.run(supervisorctl("start", "tracking:tracking-worker"), check=True, capture_output=True)
    done = poll(lambda: gateway.call("GET", f"/privacy/requests/{made['id']}"),
                lambda r: r["status"] == "complete", 180)
    assert done["answers"]["tracking"]["status"] in ("done", "not_found")
