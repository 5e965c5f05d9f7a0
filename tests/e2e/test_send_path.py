"""The whole send path through the real gateway and every running service:
campaigns -> fan-out (contacts) -> senders -> SMTP sink (Maildir) -> progress.

Each test uses a fresh account and addresses unique to the test, and reads
the sink's Maildir by the X-Sink-Rcpt-To header, so tests can share the stack.
The contacts calls (lists, CSV import, suppression, unsubscribe) are in the
helpers below, in one place.
"""
from __future__ import annotations

import contextlib
import email
import email.policy
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.timeout(900)
REPO = Path(__file__).resolve().parents[2]
MAIN_AUDIENCE = int(os.environ.get("SANDESH_E2E_AUDIENCE", "2000"))


# -- the gateway ---------------------------------------------------------------
class Gateway:
    def __init__(self, base: str, api_key: str, account_id: str):
        self.base = base.rstrip("/") + "/api/v1"
        self.account_id = account_id
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.api_key = api_key

    def call(self, method: str, path: str, expect: int | tuple = (200, 201, 202), **kwargs):
        response = self.session.request(method, self.base + path, timeout=60, **kwargs)
        expected = (expect,) if isinstance(expect, int) else expect
        assert response.status_code in expected, (method, path, response.status_code,
                                                  response.text[:500])
        return response.json() if response.content else None


@pytest.fixture
def gateway(stack_env) -> Gateway:
    base = stack_env["SANDESH_GATEWAY_URL"]
    token = Path(stack_env.get("SANDESH_OPERATOR_TOKEN_FILE",
                               REPO / "run" / "operator-token")).read_text().strip()
    response = requests.post(f"{base}/api/v1/accounts", timeout=30,
                             headers={"Authorization": f"Bearer {token}"},
                             json={"name": f"e2e {uuid.uuid4().hex[:8]}",
                                   "postal_address": "1 Test Street, Springfield"})
    assert response.status_code == 201, response.text
    body = response.json()
    return Gateway(base, body["api_key"]["key"], body["account"]["id"])


# -- contacts (the contacts service's API) ------------------------------------
def make_list(gw: Gateway, name: str) -> str:
    return gw.call("POST", "/lists", json={"name": name})["id"]


def import_contacts(gw: Gateway, list_id: str, rows: list[tuple[str, str]],
                    timeout: float = 300) -> dict:
    """CSV upload into a list; waits for the import to finish."""
    csv = "email,name\n" + "".join(f"{address},{name}\n" for address, name in rows)
    started = gw.call("POST", f"/lists/{list_id}/imports",
                      files={"file": ("contacts.csv", csv.encode(), "text/csv")})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = gw.call("GET", f"/imports/{started['id']}")
        if state.get("status") in ("done", "failed", "cancelled"):
            assert state["status"] != "failed", state
            return state
        time.sleep(0.5)
    raise AssertionError(f"import {started['id']} did not finish")


def find_contact(gw: Gateway, address: str) -> dict:
    found = gw.call("GET", "/contacts", params={"email_prefix": address})["items"]
    assert found, address
    return found[0]


def suppress(gw: Gateway, address: str) -> None:
    gw.call("POST", "/suppressions", json={"email": address, "reason": "manual"})


def unsubscribe(gw: Gateway, list_id: str, address: str) -> None:
    contact = find_contact(gw, address)
    gw.call("PUT", f"/contacts/{contact['id']}/lists/{list_id}",
            json={"status": "unsubscribed"})


# -- campaigns ---------------------------------------------------------------
def dkim_domain(stack_env) -> str:
    """A sending domain the local stack has a DKIM key for."""
    key_dir = Path(stack_env["SANDESH_DKIM_KEY_DIR"])
    records = sorted(key_dir.glob("*._domainkey.*.txt"))
    assert records, f"no DKIM key in {key_dir}"
    return records[0].name.split("._domainkey.", 1)[1].removesuffix(".txt")


def make_campaign(gw: Gateway, stack_env, list_ids: list[str], **overrides) -> str:
    template = gw.call("POST", "/templates", json={
        "name": "E2E", "subject": "Hello {{ name | default('friend') }}",
        "preheader": "A test", "html": '<p>Hi {{ name | default("friend") }},</p>'
                                       '<p><a href="https://example.com/offer">Offer</a></p>'})
    body = {"name": "E2E campaign", "template_id": template["id"],
            "from_email": f"news@{dkim_domain(stack_env)}", "from_name": "Sandesh E2E",
            "audience": {"list_ids": list_ids}, "postal_address": "1 Test Street",
            **overrides}
    return gw.call("POST", "/campaigns", json=body)["id"]


def wait_for(gw: Gateway, campaign_id: str, statuses=("sent",), timeout: float = 600,
             until=None) -> dict:
    deadline = time.monotonic() + timeout
    campaign = None
    while time.monotonic() < deadline:
        campaign = gw.call("GET", f"/campaigns/{campaign_id}")
        if campaign["status"] in statuses and (until is None or until(campaign)):
            return campaign
        time.sleep(0.5)
    raise AssertionError(f"campaign not {statuses} in {timeout}s: {campaign}")


@contextlib.contextmanager
def extra_campaigns_worker(stack_env, **settings: str):
    """A second campaigns worker beside the stack's, sweeping every 0.5 s,
    with these SANDESH_* settings of its own."""
    env = {**os.environ, **stack_env, "SANDESH_CAMPAIGNS_SWEEP_SECONDS": "0.5", **settings}
    worker = subprocess.Popen([sys.executable, "-m", "services.campaigns.worker"], cwd=REPO,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield worker
    finally:
        worker.terminate()
        worker.wait(30)


# -- the sink ----------------------------------------------------------------
def received(stack_env, marker: str) -> list[email.message.EmailMessage]:
    """Messages in the sink's Maildir to addresses containing `marker`."""
    new = Path(stack_env["SANDESH_MAILDIR"]) / "new"
    found = []
    for path in new.iterdir() if new.exists() else []:
        raw = path.read_bytes()
        head = raw[:4000].split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        if marker.encode() not in head:
            continue
        message = email.message_from_bytes(raw, policy=email.policy.default)
        if marker in (message.get("X-Sink-Rcpt-To") or ""):
            message.raw_bytes = raw
            found.append(message)
    return found


def by_recipient(messages) -> dict[str, list]:
    result: dict[str, list] = {}
    for message in messages:
        result.setdefault(message["X-Sink-Rcpt-To"].strip(), []).append(message)
    return result


def addresses(marker: str, count: int, domain: str = "e2e.example.com") -> list[str]:
    return [f"r{i}.{marker}@{domain}" for i in range(count)]


def verify_dkim(message, stack_env) -> bool:
    import dkim
    from services.sender.dkim import txt_record_lookup
    raw = message.raw_bytes
    # The sink's own trace headers were added after signing; DKIM ignores
    # unsigned headers, so the signature still verifies.
    return dkim.verify(raw, dnsfunc=txt_record_lookup(Path(stack_env["SANDESH_DKIM_KEY_DIR"])))


def usage_of(gw: Gateway, timeout: float = 60) -> dict:
    """GET /usage; on a loaded machine the gateway may answer 504 for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        response = gw.session.get(gw.base + "/usage", timeout=60)
        if response.status_code != 504 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text[:300]
            return response.json()
        time.sleep(1)


def unsubscribe_uris(message) -> tuple[str, str]:
    """List-Unsubscribe: <one-click URL>, <mailto:...> (RFC 2369, RFC 8058)."""
    value = " ".join(str(message["List-Unsubscribe"]).split())
    uris = [part.strip().removeprefix("<").removesuffix(">") for part in value.split(",")]
    assert len(uris) == 2, value
    return uris[0], uris[1]


def http_tracking_allowed(stack_env) -> bool:
    """The sender accepts a plain-http tracking URL only with this allowance
    (on by default in a local stack, SANDESH_ENV=local); see docs/sender.md."""
    explicit = stack_env.get("SANDESH_ALLOW_HTTP_TRACKING_URL", "")
    if explicit:
        return explicit.lower() in ("1", "true", "yes", "on")
    return stack_env.get("SANDESH_ENV", "local") == "local"


# -- the tests -----------------------------------------------------------------
def test_a_campaign_reaches_every_recipient_once_signed_with_unsubscribe_headers(
        gateway, stack_env):
    marker = uuid.uuid4().hex[:10]
    list_id = make_list(gateway, "main")
    rows = [(address, f"Person {i}") for i, address in enumerate(addresses(marker,
                                                                             MAIN_AUDIENCE))]
    suppressed, unsubscribed = rows[0][0], rows[1][0]
    import_contacts(gateway, list_id, rows)
    suppress(gateway, suppressed)
    unsubscribe(gateway, list_id, unsubscribed)
    campaign_id = make_campaign(gateway, stack_env, [list_id],
                                limits={"per_domain_concurrency": 8})
    gateway.call("POST", f"/campaigns/{campaign_id}/send")
    done = wait_for(gateway, campaign_id)
    expected = {address for address, _ in rows} - {suppressed, unsubscribed}
    progress = done["progress"]
    assert progress["audience_size"] == len(expected)
    assert progress["sent"] == len(expected) and progress["failed"] == 0
    got = by_recipient(received(stack_env, marker))
    assert set(got) == expected
    assert all(len(copies) == 1 for copies in got.values())
    public = stack_env["SANDESH_PUBLIC_TRACKING_URL"].rstrip("/")
    assert public.startswith("https://") or http_tracking_allowed(stack_env), public
    for copies in got.values():
        message = copies[0]
        one_click, mailto = unsubscribe_uris(message)
        assert one_click.startswith(f"{public}/u/") and len(one_click) > len(public) + 3
        assert mailto.startswith("mailto:unsubscribe@") and "?subject=unsubscribe" in mailto
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["Message-ID"]
        assert verify_dkim(message, stack_env), message["Message-ID"]
    page = requests.get(one_click, timeout=30)  # the header's URL is the live unsubscribe page
    assert page.status_code == 200, page.text[:300]
    usage = usage_of(gateway)
    assert usage["mailings_sent"] == len(expected) and usage["mailings_bytes"] > 0


def test_a_contact_that_reconsents_after_a_suppression_is_mailed_again(gateway, stack_env):
    """Lifting an account's suppression reaches the sender too: the next
    campaign mails the contact that re-consented, and still not the one
    whose entry stays."""
    marker = uuid.uuid4().hex[:10]
    list_id = make_list(gateway, "reconsent")
    back, stays, control = addresses(marker, 3)
    import_contacts(gateway, list_id, [(back, "Back"), (stays, "Stays"), (control, "Control")])
    suppress(gateway, back)
    suppress(gateway, stays)
    unsubscribe(gateway, list_id, back)  # and later signs up again, with a re-consent
    contact = find_contact(gateway, back)
    gateway.call("PUT", f"/contacts/{contact['id']}/lists/{list_id}", json={
        "status": "subscribed", "reconsent": True,
        "consent": {"wording": "Yes, send me the newsletter again", "via": "form"}})
    campaign_id = make_campaign(gateway, stack_env, [list_id])
    gateway.call("POST", f"/campaigns/{campaign_id}/send")
    done = wait_for(gateway, campaign_id)
    assert done["progress"]["audience_size"] == 2 and done["progress"]["sent"] == 2, done["progress"]
    assert set(by_recipient(received(stack_env, marker))) == {back, control}


def test_a_campaign_to_a_lists_members_mails_none_who_left_that_list(gateway, stack_env):
    """A segment "member of News" reached a contact who unsubscribed from
    News while Offers kept them subscribed."""
    marker = uuid.uuid4().hex[:10]
    news, offers = make_list(gateway, "News"), make_list(gateway, "Offers")
    reader, leaver, offers_only = addresses(marker, 3)
    for list_id in (news, offers):
        import_contacts(gateway, list_id, [(reader, "Reader"), (leaver, "Leaver")])
    import_contacts(gateway, offers, [(offers_only, "Offers")])
    unsubscribe(gateway, news, leaver)
    segment = gateway.call("POST", "/segments", json={"name": "News readers", "definition": {
        "field": "list", "op": "member", "value": news}})
    campaign_id = make_campaign(gateway, stack_env, [],
                                audience={"list_ids": [], "segment_id": segment["id"]})
    gateway.call("POST", f"/campaigns/{campaign_id}/send")
    done = wait_for(gateway, campaign_id)
    assert done["progress"]["audience_size"] == 1 and done["progress"]["sent"] == 1, done["progress"]
    assert set(by_recipient(received(stack_env, marker))) == {reader}


def paused_campaign(gw: Gateway, stack_env, marker: str, name: str,
                    rows: list[tuple[str, str]]) -> tuple[str, dict]:
    """A campaign to `rows` at 20 a second, paused once its first message is
    out: (campaign id, the pause's answer). The rest waits, parked."""
    list_id = make_list(gw, name)
    import_contacts(gw, list_id, rows)
    campaign_id = make_campaign(gw, stack_env, [list_id], limits={"per_second": 20})
    gw.call("POST", f"/campaigns/{campaign_id}/send")
    wait_for(gw, campaign_id, ("sending",), until=lambda c: c["progress"]["sent"] > 0)
    return campaign_id, gw.call("POST", f"/campaigns/{campaign_id}/pause")


def test_pause_holds_and_resume_finishes(gateway, stack_env):
    marker = uuid.uuid4().hex[:10]
    rows = [(a, "P") for a in addresses(marker, 300)]
    campaign_id, _ = paused_campaign(gateway, stack_env, marker, "pause", rows)
    time.sleep(5)  # what was in flight at the pause lands
    held = len(received(stack_env, marker))
    time.sleep(5)
    assert len(received(stack_env, marker)) == held < len(rows)
    assert gateway.call("GET", f"/campaigns/{campaign_id}")["status"] == "paused"
    gateway.call("POST", f"/campaigns/{campaign_id}/resume", json=None)
    wait_for(gateway, campaign_id, timeout=300)
    got = by_recipient(received(stack_env, marker))
    assert set(got) == {a for a, _ in rows} and all(len(v) == 1 for v in got.values())


def test_cancel_stops_the_rest(gateway, stack_env):
    marker = uuid.uuid4().hex[:10]
    list_id = make_list(gateway, "cancel")
    rows = [(a, "C") for a in addresses(marker, 300)]
    import_contacts(gateway, list_id, rows)
    campaign_id = make_campaign(gateway, stack_env, [list_id], limits={"per_second": 20})
    gateway.call("POST", f"/campaigns/{campaign_id}/send")
    wait_for(gateway, campaign_id, ("sending",), until=lambda c: c["progress"]["sent"] > 0)
    gateway.call("POST", f"/campaigns/{campaign_id}/cancel")
    done = wait_for(gateway, campaign_id, ("cancelled",),
                    until=lambda c: c["progress"]["audience_size"] is not None
                    and c["progress"]["queued"] == 0, timeout=300)
    assert done["progress"]["skipped"] > 0
    assert len(received(stack_env, marker)) == done["progress"]["sent"] < len(rows)
    # A launched campaign keeps its record; a draft can go.
    gateway.call("DELETE", f"/campaigns/{campaign_id}", expect=409)
    draft_id = make_campaign(gateway, stack_env, [list_id])
    gateway.call("DELETE", f"/campaigns/{draft_id}", expect=204)
    gateway.call("GET", f"/campaigns/{draft_id}", expect=404)


def contacts_db(stack_env):
    from shared import mongo
    prefix = stack_env.get("SANDESH_MONGO_DB_PREFIX", "sandesh_")
    return mongo.client(stack_env["SANDESH_MONGO_URI"])[prefix + "contacts"]


def sent_then(gateway, stack_env, action: str, audience: int = 10_000):
    """A campaign to `audience` new contacts, sent, then paused or cancelled
    at once: while contacts still fans it out. (marker, rows, campaign id)"""
    marker = uuid.uuid4().hex[:10]
    list_id = make_list(gateway, f"{action} during the fan-out")
    rows = [(a, action) for a in addresses(marker, audience)]
    import_contacts(gateway, list_id, rows)
    campaign_id = make_campaign(gateway, stack_env, [list_id])
    gateway.call("POST", f"/campaigns/{campaign_id}/send")
    gateway.call("POST", f"/campaigns/{campaign_id}/{action}")
    return marker, rows, campaign_id


def test_a_cancel_during_the_fan_out_stops_producing_jobs(gateway, stack_env):
    """A cancel right after send lands while contacts still fans out a big
    audience: the fan-out stops, announces what it produced, and every job
    it produced is accounted for (sent before the cancel, or skipped)."""
    marker, rows, campaign_id = sent_then(gateway, stack_env, "cancel")
    done = wait_for(gateway, campaign_id, ("cancelled",),
                    until=lambda c: c["progress"]["audience_size"] is not None
                    and c["progress"]["queued"] == 0, timeout=300)
    progress = done["progress"]
    assert progress["audience_size"] < len(rows), progress   # the fan-out stopped early
    accounted = progress["sent"] + progress["skipped"] + progress["failed"]
    assert accounted == progress["audience_size"], progress
    assert len(received(stack_env, marker)) == progress["sent"]


def test_a_pause_during_the_fan_out_stops_producing_jobs_until_the_resume(gateway, stack_env):
    """A pause right after send lands while contacts still fans out a big
    audience: the fan-out stops (the senders park only what it produced)
    and announces nothing; the resume goes on, and everyone gets one message."""
    marker, rows, campaign_id = sent_then(gateway, stack_env, "pause")
    fanouts = contacts_db(stack_env).fanouts
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        fanout = fanouts.find_one({"_id": campaign_id}) or {}
        if fanout.get("paused_after") is not None or fanout.get("done"):
            break
        time.sleep(0.5)
    assert not fanout.get("done") and fanout.get("paused_after") is not None, fanout
    assert fanout["paused_after"] < len(rows)
    paused = gateway.call("GET", f"/campaigns/{campaign_id}")
    assert paused["status"] == "paused"
    assert paused["progress"]["audience_size"] is None, paused["progress"]
    gateway.call("POST", f"/campaigns/{campaign_id}/resume", json=None)
    done = wait_for(gateway, campaign_id, timeout=600)
    assert done["progress"]["audience_size"] == done["progress"]["sent"] == len(rows)
    got = by_recipient(received(stack_env, marker))
    assert set(got) == {a for a, _ in rows} and all(len(v) == 1 for v in got.values())


def test_kill_9_of_the_contacts_worker_mid_fan_out_loses_and_repeats_nobody(gateway, stack_env):
    """The launch is committed as soon as the fan-out is recorded, so what
    carries a fan-out across a crash is its lease and its recorded batches:
    the restarted worker's thread claims it once the lease expires and
    produces the rest, and every recipient gets exactly one message."""
    from devstack import wait
    from devstack.supervisor import supervisorctl
    marker = uuid.uuid4().hex[:10]
    list_id = make_list(gateway, "contacts killed during the fan-out")
    rows = [(a, "F") for a in addresses(marker, 20_000)]
    import_contacts(gateway, list_id, rows)
    campaign_id = make_campaign(gateway, stack_env, [list_id])
    batches = contacts_db(stack_env).fanout_batches
    gateway.call("POST", f"/campaigns/{campaign_id}/send")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and batches.count_documents({"campaign_id": campaign_id}) < 2:
        time.sleep(0.05)
    subprocess.run(supervisorctl("signal", "KILL", "contacts:contacts-worker"), check=True,
                   capture_output=True)   # supervisord starts it again
    fanout = contacts_db(stack_env).fanouts.find_one({"_id": campaign_id})
    assert not fanout["done"], "the fan-out ended before the kill; the test proves nothing"
    done = wait_for(gateway, campaign_id, timeout=600)
    assert done["progress"]["audience_size"] == done["progress"]["sent"] == len(rows)
    assert contacts_db(stack_env).fanouts.find_one({"_id": campaign_id})["attempts"] >= 2
    got = by_recipient(received(stack_env, marker))
    assert set(got) == {a for a, _ in rows} and all(len(v) == 1 for v in got.values())
    wait.wait_all(wait.service_checks(stack_env, only="contacts"))   # back for the next tests


def _merge_faults(fail_recipients: dict) -> None:
    from devstack.sink_faults import faults_path, set_faults
    path = faults_path()
    current = json.loads(path.read_text()) if path.exists() else {}
    merged = {**current.get("fail_recipients", {}), **fail_recipients}
    set_faults(current.get("transient_rate", 0.0), current.get("permanent_rate", 0.0),
               merged, current.get("seed"))


def _drop_faults(recipients) -> None:
    from devstack.sink_faults import faults_path, set_faults
    path = faults_path()
    if not path.exists():
        return
    current = json.loads(path.read_text())
    rest = {k: v for k, v in current.get("fail_recipients", {}).items() if k not in recipients}
    set_faults(current.get("transient_rate", 0.0), current.get("permanent_rate", 0.0), rest,
               current.get("seed"))


def test_transient_failures_for_a_fifth_still_deliver_everyone(gateway, stack_env):
    marker = uuid.uuid4().hex[:10]
    rows = [(a, "T") for a in addresses(marker, 200)]
    flaky = {a: {"code": 451, "times": 2} for a, _ in rows[::5]}   # 20% answer 451 twice
    _merge_faults(flaky)
    try:
        list_id = make_list(gateway, "transient")
        import_contacts(gateway, list_id, rows)
        campaign_id = make_campaign(gateway, stack_env, [list_id])
        gateway.call("POST", f"/campaigns/{campaign_id}/send")
        done = wait_for(gateway, campaign_id, timeout=600)
    finally:
        _drop_faults(flaky)
    assert done["progress"]["sent"] == len(rows) and done["progress"]["deferred"] >= len(flaky)
    got = by_recipient(received(stack_env, marker))
    assert set(got) == {a for a, _ in rows} and all(len(v) == 1 for v in got.values())


def test_permanent_failures_are_failed_and_the_campaign_completes(gateway, stack_env):
    marker = uuid.uuid4().hex[:10]
    rows = [(a, "F") for a in addresses(marker, 100)]
    rejected = {a: 550 for a, _ in rows[:10]}
    _merge_faults(rejected)
    try:
        list_id = make_list(gateway, "permanent")
        import_contacts(gateway, list_id, rows)
        campaign_id = make_campaign(gateway, stack_env, [list_id])
        gateway.call("POST", f"/campaigns/{campaign_id}/send")
        done = wait_for(gateway, campaign_id, timeout=300)
    finally:
        _drop_faults(rejected)
    assert (done["progress"]["sent"], done["progress"]["failed"]) == (90, 10)
    assert set(by_recipient(received(stack_env, marker))) == {a for a, _ in rows[10:]}


def _start_sender(stack_env, port: int) -> subprocess.Popen:
    env = {**os.environ, **stack_env, "SANDESH_SENDER_PORT": str(port)}
    return subprocess.Popen([sys.executable, "-m", "services.sender.worker"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _sent_by(port: int) -> float:
    """Jobs a sender process reports as sent on its /metrics."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("sandesh_sender_jobs_total{") and 'outcome="sent"' in line)


def _wait_until_in_the_group(stack_env, sender: subprocess.Popen, deadline: float = 90) -> None:
    """Until this sender process is a member of the senders' consumer group
    with partitions assigned, the group stable: its start-up and its join
    take longer on a loaded machine than any fixed sleep allows for (and a
    member killed just before lingers in the group until its session ends)."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": stack_env["SANDESH_KAFKA_BOOTSTRAP"]})
    group = stack_env.get("SANDESH_SENDER_GROUP", "sender")
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        found = admin.describe_consumer_groups([group])[group].result(timeout=10)
        ours = [m for m in found.members if m.client_id.endswith(f"-{sender.pid}")]
        if found.state == ConsumerGroupState.STABLE and ours \
                and ours[0].assignment.topic_partitions:
            return
        time.sleep(0.5)
    raise AssertionError(f"sender {sender.pid} did not join the {group} group")


def test_two_senders_share_the_work_and_kill_9_of_one_loses_nobody(gateway, stack_env):
    """A second sender joins and sends part of the campaign; killed with
    SIGKILL mid-campaign, every recipient still gets a message, and any
    duplicate (in flight at the kill) carries the same Message-ID."""
    marker = uuid.uuid4().hex[:10]
    rows = [(a, "K") for a in addresses(marker, 600)]
    list_id = make_list(gateway, "kill")
    import_contacts(gateway, list_id, rows)
    extra = _start_sender(stack_env, 18095)
    try:
        _wait_until_in_the_group(stack_env, extra)
        campaign_id = make_campaign(gateway, stack_env, [list_id], limits={"per_second": 60})
        gateway.call("POST", f"/campaigns/{campaign_id}/send")
        # The second sender takes its share. Not always from the start: its
        # first batch may meet a window the other took whole, and then it
        # parks all of its jobs, which go back behind those the other
        # parked first (a few seconds at the campaign's limit).
        wait_for(gateway, campaign_id, ("sending",),
                 until=lambda c: c["progress"]["sent"] > len(rows) // 4 and _sent_by(18095) > 0)
    finally:
        extra.send_signal(signal.SIGKILL)
        extra.wait(10)
    done = wait_for(gateway, campaign_id, timeout=600)
    assert done["progress"]["sent"] == len(rows)
    got = by_recipient(received(stack_env, marker))
    assert set(got) == {a for a, _ in rows}
    duplicates = {a: v for a, v in got.items() if len(v) > 1}
    assert len(duplicates) <= 50, len(duplicates)
    for copies in duplicates.values():
        assert len({c["Message-ID"] for c in copies}) == 1
