"""Operator CLI for campaigns, through the gateway like any client.

    python -m services.campaigns.cli send <campaign id> [--watch]
    python -m services.campaigns.cli pause|resume|cancel <campaign id>
    python -m services.campaigns.cli status <campaign id> [--json]
    python -m services.campaigns.cli watch <campaign id>

The API key comes from --api-key or SANDESH_API_KEY; the gateway from
--gateway, SANDESH_GATEWAY_URL or the local stack's run/stack.env.
Exit status: 0 done, 1 the API refused (its message on stderr), 2 usage.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import requests

FINISHED = ("sent", "cancelled")


class Api:
    def __init__(self, gateway: str, api_key: str):
        self.base = gateway.rstrip("/") + "/api/v1"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_key}"

    def call(self, method: str, path: str, body=None) -> dict:
        response = self.session.request(method, self.base + path, json=body, timeout=30)
        payload = response.json() if response.content else {}
        if response.status_code >= 400:
            error = payload.get("error", {})
            raise ApiRefused(response.status_code, error.get("message", response.text),
                             error.get("details"))
        return payload


class ApiRefused(Exception):
    def __init__(self, status: int, message: str, details):
        super().__init__(f"{status}: {message}" + (f" {json.dumps(details)}" if details else ""))


def _duration(seconds) -> str:
    if seconds is None:
        return "--"
    seconds = math.ceil(seconds)  # work left never shows as 0m00s
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def progress_line(campaign: dict, width: int = 30) -> str:
    p = campaign["progress"]
    fraction = min(1.0, (p.get("percent") or 0.0) / 100.0)
    filled = int(round(fraction * width))
    bar = "#" * filled + "." * (width - filled)
    total = p["audience_size"] if p["audience_size"] is not None else "?"
    rate = f"{p['rate_per_second']:.0f}/s" if p.get("rate_per_second") else "-/s"
    line = (f"[{bar}] {fraction * 100:5.1f}% {p['accounted']}/{total} {campaign['status']:<9} "
            f"sent {p['sent']} failed {p['failed']} skipped {p['skipped']} "
            f"deferred {p['deferred']} bounced {p['bounced']}  {rate} "
            f"left {_duration(p.get('eta_seconds'))}")
    if campaign.get("cancel_reason"):  # the platform cancelled it (schedule, pause limit)
        line += f"  ({campaign['cancel_reason']})"
    return line


def watch(api: Api, campaign_id: str, interval: float = 1.0, out=sys.stderr,
          timeout: float | None = None) -> dict:
    """Redraw one progress line until the campaign is sent or cancelled."""
    tty = out.isatty()
    deadline = time.monotonic() + timeout if timeout else None
    last = ""
    while True:
        campaign = api.call("GET", f"/campaigns/{campaign_id}")
        line = progress_line(campaign)
        if tty:
            out.write("\r" + line.ljust(len(last)))
        elif line != last:
            out.write(line + "\n")
        out.flush()
        last = line
        if campaign["status"] in FINISHED or (deadline and time.monotonic() > deadline):
            if tty:
                out.write("\n")
            return campaign
        time.sleep(interval)


def _gateway_default() -> str | None:
    if os.environ.get("SANDESH_GATEWAY_URL"):
        return os.environ["SANDESH_GATEWAY_URL"]
    try:
        from devstack.env import load_stack_env
        return load_stack_env().get("SANDESH_GATEWAY_URL")
    except Exception:  # no local stack here: the flag is then required
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.campaigns.cli",
                                     description="Send, pause, resume, cancel and watch "
                                                 "campaigns.")
    parser.add_argument("--gateway", default=_gateway_default())
    parser.add_argument("--api-key", default=os.environ.get("SANDESH_API_KEY"))
    sub = parser.add_subparsers(dest="command", required=True)
    send = sub.add_parser("send", help="send a draft campaign now")
    send.add_argument("--watch", action="store_true", help="then watch its progress")
    for name, text in (("pause", "pause a sending campaign"), ("resume", "resume it"),
                       ("cancel", "cancel it"), ("watch", "progress bar until it finishes"),
                       ("status", "print its status and progress")):
        sub.add_parser(name, help=text)
    for command in sub.choices.values():
        command.add_argument("campaign_id")
    sub.choices["status"].add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not args.gateway or not args.api_key:
        parser.error("give --gateway and --api-key (or SANDESH_GATEWAY_URL, SANDESH_API_KEY)")
    api = Api(args.gateway, args.api_key)
    try:
        if args.command in ("send", "pause", "resume", "cancel"):
            campaign = api.call("POST", f"/campaigns/{args.campaign_id}/{args.command}")
            print(f"campaign {campaign['id']} is {campaign['status']}")
            if args.command == "send" and args.watch:
                watch(api, args.campaign_id)
        elif args.command == "watch":
            campaign = watch(api, args.campaign_id)
            print(f"campaign {campaign['id']} is {campaign['status']}")
        else:
            campaign = api.call("GET", f"/campaigns/{args.campaign_id}")
            print(json.dumps(campaign, indent=2) if args.json else progress_line(campaign))
    except ApiRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    except requests.RequestException as exc:
        print(f"gateway unreachable: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
