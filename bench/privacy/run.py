"""Time from an erasure request to its completion across every service
(contacts, sender, tracking), through the real gateway of the local stack:
one contact alone, then 1,000 contacts requested at once.

    .venv/bin/python -m bench.privacy.run [--contacts 1000] [--by email|id]

Prints, for each run, the wall time until the last request completed and
the per-request latency (completed_at - created_at, as the privacy service
recorded it): median, p95 and max. A fresh account each run; the contacts
are created through the contacts API first (not timed). Requests the
gateway refuses for its per-key rate limit (429) wait out its Retry-After
and go again, as a client must: creating the contacts and asking 1,000
erasures can pass it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]


def gateway_url() -> str:
    from devstack.env import load_stack_env
    return load_stack_env()["SANDESH_GATEWAY_URL"].rstrip("/") + "/api/v1"


class Api:
    def __init__(self, base: str, key: str):
        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=16)
        self.session.mount("http://", adapter)

    def call(self, method: str, path: str, **kwargs):
        response = self.session.request(method, self.base + path, timeout=120, **kwargs)
        while response.status_code == 429:  # the gateway's per-key limit: as a client must
            time.sleep(float(response.headers.get("Retry-After", "1")))
            response = self.session.request(method, self.base + path, timeout=120, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None


def new_account(base: str) -> Api:
    token = (REPO / "run" / "operator-token").read_text().strip()
    response = requests.post(base + "/accounts", headers={"Authorization": f"Bearer {token}"},
                             json={"name": f"bench privacy {uuid.uuid4().hex[:6]}"}, timeout=30)
    response.raise_for_status()
    return Api(base, response.json()["api_key"]["key"])


def make_contacts(api: Api, count: int) -> list[tuple[str, str]]:
    list_id = api.call("POST", "/lists", json={"name": "bench"})["id"]
    marker = uuid.uuid4().hex[:8]

    def one(n: int) -> tuple[str, str]:
        email = f"bench{n}.{marker}@bench.example.com"
        made = api.call("POST", "/contacts", json={"email": email, "name": f"B {n}",
                                                   "list_ids": [list_id]})
        return made["id"], email
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def erase_all(api: Api, contacts: list[tuple[str, str]], by: str, timeout: float) -> dict:
    def ask(contact: tuple[str, str]) -> str:
        subject = {"contact_id": contact[0]} if by == "id" else {"email": contact[1]}
        return api.call("POST", "/privacy/requests", json={"kind": "erasure", "subject": subject})["id"]

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(ask, contacts))
    asked = time.monotonic() - started
    pending = set(ids)
    done: dict[str, dict] = {}
    deadline = started + timeout
    while pending and time.monotonic() < deadline:
        cursor = None
        while True:
            page = api.call("GET", "/privacy/requests", params={"limit": 500, **({"cursor": cursor} if cursor else {})})
            for request in page["items"]:
                if request["id"] in pending and request["status"] == "complete":
                    pending.discard(request["id"])
                    done[request["id"]] = request
            cursor = page["next_cursor"]
            if not cursor:
                break
        if pending:
            time.sleep(0.5)
    wall = time.monotonic() - started
    latencies = sorted((datetime.fromisoformat(r["completed_at"]) -
                        datetime.fromisoformat(r["created_at"])).total_seconds() for r in done.values())
    return {"requests": len(ids), "completed": len(done), "asked_in_s": asked, "wall_s": wall,
            "latencies": latencies}


def report(label: str, result: dict) -> None:
    lat = result["latencies"]
    line = (f"{label}: {result['completed']}/{result['requests']} complete; all asked in "
            f"{result['asked_in_s']:.1f} s; last complete after {result['wall_s']:.1f} s")
    if lat:
        p95 = lat[min(len(lat) - 1, int(len(lat) * 0.95))]
        line += (f"; per request: median {statistics.median(lat):.2f} s, p95 {p95:.2f} s, "
                 f"max {lat[-1]:.2f} s")
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=1000)
    parser.add_argument("--by", choices=["email", "id"], default="email",
                        help="subject by address (contacts resolves it first) or by contact id")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args(argv)
    base = gateway_url()
    single = new_account(base)
    report("1 contact", erase_all(single, make_contacts(single, 1), args.by, args.timeout))
    bulk = new_account(base)
    contacts = make_contacts(bulk, args.contacts)
    report(f"{args.contacts} contacts at once", erase_all(bulk, contacts, args.by, args.timeout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
