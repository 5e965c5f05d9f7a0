"""Import a CSV into a list through the gateway, with a progress bar.

    .venv/bin/python -m services.contacts.cli import contacts.csv --list <list id> \\
        [--mode add|upsert] [--mapping '{"email": "E-mail"}'] [--rejected rejected.csv]

The API key comes from --key or SANDESH_API_KEY, the gateway from --url or
SANDESH_GATEWAY_URL (default http://127.0.0.1:8080). The file is streamed
(never read into memory), the import runs in the contacts worker, and this
command polls its progress until it ends; rejected rows are saved with
--rejected.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid

import requests

BAR = 30
FINAL = ("done", "failed", "cancelled")


class MultipartBody:
    """A multipart/form-data body read piece by piece, with a known length,
    so requests streams it with a Content-Length (the server refuses an
    oversized upload before storing it)."""

    def __init__(self, fields: dict[str, str], path: str):
        self.boundary = uuid.uuid4().hex
        head = b"".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode() for name, value in fields.items())
        head += (f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; '
                 f'filename="{os.path.basename(path)}"\r\nContent-Type: text/csv\r\n\r\n').encode()
        self.parts = [head, path, f"\r\n--{self.boundary}--\r\n".encode()]
        self.length = len(head) + os.path.getsize(path) + len(self.parts[2])
        self._current = None

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = 64 * 1024) -> bytes:
        while self.parts or self._current:
            if self._current is None:
                part = self.parts.pop(0)
                if isinstance(part, bytes):
                    return part
                self._current = open(part, "rb")
            chunk = self._current.read(size if size and size > 0 else 64 * 1024)
            if chunk:
                return chunk
            self._current.close()
            self._current = None
        return b""


def render(job: dict) -> str:
    fraction = float(job.get("progress") or 0.0)
    filled = int(BAR * fraction)
    c = job.get("counters") or {}
    return (f"\r[{'#' * filled}{'.' * (BAR - filled)}] {fraction * 100:5.1f}% {job['status']:<9} "
            f"read {c.get('read', 0):,}  created {c.get('created', 0):,}  "
            f"updated {c.get('updated', 0):,}  duplicate {c.get('skipped_duplicate', 0):,}  "
            f"suppressed {c.get('skipped_suppressed', 0):,}  rejected {c.get('rejected', 0):,}")


def api_error(response: requests.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{response.status_code} {error['code']}: {error['message']} {error.get('details') or ''}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code}: {response.text[:300]}"


def run_import(args) -> int:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {args.key}"
    fields = {"mode": args.mode}
    for name in ("mapping", "delimiter", "encoding", "policy_version"):
        if getattr(args, name):
            fields[name] = getattr(args, name)
    if args.no_header:
        fields["has_header"] = "false"
    body = MultipartBody(fields, args.file)
    response = session.post(f"{args.url}/api/v1/lists/{args.list}/imports", data=body,
                            headers={"Content-Type": body.content_type,
                                     "Content-Length": str(len(body))}, timeout=(5, 600))
    if response.status_code != 202:
        print(f"upload refused: {api_error(response)}", file=sys.stderr)
        return 1
    job = response.json()
    print(f"import {job['id']} uploaded ({len(body):,} bytes); processing…", file=sys.stderr)
    while True:
        print(render(job), end="", file=sys.stderr, flush=True)
        if job["status"] in FINAL:
            break
        time.sleep(args.interval)
        response = session.get(f"{args.url}/api/v1/imports/{job['id']}", timeout=(5, 30))
        if response.status_code != 200:
            print(f"\npolling failed: {api_error(response)}", file=sys.stderr)
            return 1
        job = response.json()
    print(file=sys.stderr)
    if job["status"] != "done":
        print(f"import {job['status']}: {job.get('error') or ''}", file=sys.stderr)
    if args.rejected and (job.get("counters") or {}).get("rejected"):
        with session.get(f"{args.url}/api/v1/imports/{job['id']}/rejected", stream=True,
                         timeout=(5, 300)) as rejected, open(args.rejected, "wb") as out:
            for chunk in rejected.iter_content(64 * 1024):
                out.write(chunk)
        print(f"rejected rows written to {args.rejected}", file=sys.stderr)
    print(json.dumps({"id": job["id"], "status": job["status"], **(job.get("counters") or {})}))
    return 0 if job["status"] == "done" else 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.contacts.cli",
                                     description="Sandesh contacts command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="import a CSV into a list, with a progress bar")
    imp.add_argument("file")
    imp.add_argument("--list", required=True, help="the list id")
    imp.add_argument("--mode", choices=["add", "upsert"], default="add")
    imp.add_argument("--mapping", help='JSON, e.g. {"email": "E-mail", "fields": {"city": 3}}')
    imp.add_argument("--delimiter")
    imp.add_argument("--encoding", choices=["utf-8", "windows-1252", "latin-1"])
    imp.add_argument("--no-header", action="store_true", help="the first row is data")
    imp.add_argument("--policy-version", help="the consent policy version the contacts agreed to")
    imp.add_argument("--rejected", help="where to save the rejected rows (CSV)")
    imp.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    imp.add_argument("--url", default=os.environ.get("SANDESH_GATEWAY_URL",
                                                     "http://127.0.0.1:8080"))
    imp.add_argument("--key", default=os.environ.get("SANDESH_API_KEY"))
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("give an API key with --key or SANDESH_API_KEY")
    if not os.path.isfile(args.file):
        parser.error(f"no such file: {args.file}")
    return run_import(args)


if __name__ == "__main__":
    sys.exit(main())
