"""`make demo`: the whole platform in one run, through the gateway.

Creates an account, imports a generated list, writes a template and a
campaign, sends it, shows progress as it goes, then prints the final counts
and where the received messages are.

    python -m services.campaigns.demo [--contacts 1000] [--timeout 900]

It gives up (exit status 2) when the import or the campaign is not done
within --timeout seconds, instead of watching forever.
"""
from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

import requests

from devstack.env import load_stack_env
from services.campaigns.cli import FINISHED, Api, ApiRefused, watch

REPO = Path(__file__).resolve().parents[2]
HTML = """<html><body>
<h1>Hello {{ name | default("there") }}!</h1>
<p>Spring is here{% if fields.city %} in {{ fields.city }}{% endif %}: 20% off everything.</p>
<p><a href="https://shop.example.com/spring">Shop the sale</a></p>
</body></html>"""


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def create_account(gateway: str) -> tuple[str, str]:
    token_file = REPO / "run" / "operator-token"
    token = token_file.read_text().strip()
    response = requests.post(f"{gateway}/api/v1/accounts", timeout=30,
                             headers={"Authorization": f"Bearer {token}"},
                             json={"name": "Demo shop",
                                   "postal_address": "Demo Shop, 1 Market Street, Pune"})
    response.raise_for_status()
    body = response.json()
    return body["account"]["id"], body["api_key"]["key"]


class ImportFailed(Exception):
    pass


class TimedOut(Exception):
    pass


def import_list(api: Api, count: int, marker: str, deadline: float) -> str:
    list_id = api.call("POST", "/lists", {"name": f"Demo list {marker}"})["id"]
    rows = "".join(f"demo{i}.{marker}@demo.example.com,Person {i}\n" for i in range(count))
    response = api.session.post(f"{api.base}/lists/{list_id}/imports", timeout=60, files={
        "file": ("demo.csv", ("email,name\n" + rows).encode(), "text/csv")})
    if response.status_code >= 400:
        raise ApiRefused(response.status_code, response.text[:300], None)
    import_id = response.json()["id"]
    while True:
        state = api.call("GET", f"/imports/{import_id}")
        counters = state.get("counters") or {}
        print(f"    import {state.get('status')}: {counters.get('read', 0)} rows read, "
              f"{counters.get('created', 0)} created", flush=True)
        if state.get("status") == "done":
            return list_id
        if state.get("status") in ("failed", "cancelled"):  # a send to it would prove nothing
            raise ImportFailed(f"the import {import_id} ended {state['status']}: "
                               f"{state.get('error') or 'no reason given'}")
        if time.monotonic() > deadline:
            raise TimedOut(f"the import {import_id} is still {state.get('status')}")
        time.sleep(1)


def sending_domain(env: dict) -> str:
    records = sorted(Path(env["SANDESH_DKIM_KEY_DIR"]).glob("*._domainkey.*.txt"))
    if not records:
        return "example.com"
    return records[0].name.split("._domainkey.", 1)[1].removesuffix(".txt")


def received_for(maildir: Path, marker: str) -> int:
    new = maildir / "new"
    if not new.exists():
        return 0
    return sum(1 for path in new.iterdir() if marker.encode() in path.read_bytes()[:3000])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo")
    parser.add_argument("--contacts", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds for the whole demo before giving up (default 900)")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.timeout
    env = load_stack_env()
    gateway = env["SANDESH_GATEWAY_URL"]
    marker = uuid.uuid4().hex[:8]
    try:
        step("Creating an account (operator token from run/operator-token)")
        account_id, key = create_account(gateway)
        api = Api(gateway, key)
        print(f"    account {account_id}; API key {key[:12]}... (export SANDESH_API_KEY "
              f"to use the CLI)")
        step(f"Importing a generated list of {args.contacts} contacts")
        list_id = import_list(api, args.contacts, marker, deadline)
        step("Creating a template and a campaign")
        template = api.call("POST", "/templates", {
            "name": "Spring sale", "subject": "{{ name | default('Hello') }}, spring is here",
            "preheader": "20% off everything this week", "html": HTML})
        campaign = api.call("POST", "/campaigns", {
            "name": f"Spring sale {marker}", "template_id": template["id"],
            "from_email": f"news@{sending_domain(env)}", "from_name": "Demo Shop",
            "audience": {"list_ids": [list_id]},
            "postal_address": "Demo Shop, 1 Market Street, Pune",
            "limits": {"per_domain_concurrency": 8}})
        print(f"    template {template['id']} v{template['version']}, campaign {campaign['id']}")
        step("Sending (python -m services.campaigns.cli watch <id> shows the same bar)")
        api.call("POST", f"/campaigns/{campaign['id']}/send")
        done = watch(api, campaign["id"], interval=0.5, out=sys.stdout,
                     timeout=max(1.0, deadline - time.monotonic()))
        if done["status"] not in FINISHED:
            raise TimedOut(f"campaign {campaign['id']} is still {done['status']}")
    except (ApiRefused, ImportFailed, requests.RequestException) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    except TimedOut as exc:
        print(f"demo gave up after {args.timeout:.0f} s: {exc}", file=sys.stderr)
        return 2
    progress = done["progress"]
    step(f"Campaign {done['status']}")
    for key in ("audience_size", "sent", "failed", "skipped", "deferred", "bounced"):
        print(f"    {key:<14}{progress[key]}")
    maildir = Path(env["SANDESH_MAILDIR"])
    print(f"    received by the SMTP sink: {received_for(maildir, marker)} messages in "
          f"{maildir / 'new'} (one file per message)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
