"""Tracking hot-path benchmark: open pixel and click against the tracking
app under gunicorn (as deployed locally: shared/gunicorn_conf.py, the same
workers and threads), and the same load against a bare WSGI app that only
answers the GIF under the same gunicorn settings (the ceiling).

    .venv/bin/python bench/tracking/run.py [--seconds 5] [--connections 8]

Needs the local stack (Kafka, FerretDB). The benchmark's tracking app uses
its own database and sends its hit events to a throwaway topic, so the live
stats worker never sees them. Prints requests/s, p50/p99 and the ratios.
Targets: ratio >= 0.6, p99 < 20 ms.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from devstack.env import load_stack_env  # noqa: E402
from services.tracking.store import TrackingStore  # noqa: E402
from shared import mongo  # noqa: E402
from shared import tracking_tokens as tt  # noqa: E402
from shared.kafka.admin import delete_topics, ensure_topics  # noqa: E402
from shared.topics import DAY_MS, TopicSpec  # noqa: E402

WORKERS = os.environ.get("SANDESH_WEB_WORKERS", "2")  # the local stack's tracking setting
THREADS = os.environ.get("SANDESH_WEB_THREADS", "4")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(app: str, port: int, env: dict) -> subprocess.Popen:
    process = subprocess.Popen(
        [str(REPO / ".venv/bin/gunicorn"), "-c", "python:shared.gunicorn_conf",
         "--bind", f"127.0.0.1:{port}", app],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return process
        except Exception:
            if process.poll() is not None:
                raise RuntimeError(f"{app} did not start: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.3)
    process.terminate()
    raise RuntimeError(f"{app} did not answer within 60 s")


def load(port: int, paths: list[str], seconds: float, connections: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(paths))
    try:
        out = subprocess.run(
            [sys.executable, str(REPO / "bench/tracking/load.py"), "--port", str(port),
             "--paths-file", f.name, "--connections", str(connections),
             "--seconds", str(seconds)],
            check=True, capture_output=True, text=True, timeout=seconds + 120)
        return json.loads(out.stdout)
    finally:
        os.unlink(f.name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()

    stack = load_stack_env()
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench_{run_id}_"
    topic = f"bench.tracking.{run_id}"
    ensure_topics(stack["SANDESH_KAFKA_BOOTSTRAP"], {topic: TopicSpec(12, DAY_MS)})
    keys = "k1:" + base64.b64encode(secrets.token_bytes(32)).decode()
    env = {**os.environ, **stack, "SANDESH_MONGO_DB_PREFIX": prefix, "SANDESH_TRACKING_KEYS": keys,
           "SANDESH_TRACKING_HITS_TOPIC": topic, "SANDESH_WEB_WORKERS": WORKERS,
           "SANDESH_WEB_THREADS": THREADS, "SANDESH_LOG_LEVEL": "WARNING",
           "PYTHONPATH": str(REPO)}
    prom_dir = tempfile.mkdtemp(prefix="bench-prom-")
    env["PROMETHEUS_MULTIPROC_DIR"] = prom_dir

    ring = tt.Keyring.from_env(keys)
    account, campaign = uuid.uuid4().hex, uuid.uuid4().hex
    db = mongo.database(stack["SANDESH_MONGO_URI"], prefix + "tracking")
    TrackingStore(db).save_campaign(campaign, account, [f"https://example.com/p/{i}" for i in range(5)],
                                    datetime.now(timezone.utc))
    sent_at = int(time.time())   # version 2 tokens, as the sender writes them
    contexts = [tt.LinkContext(account, campaign, uuid.uuid4().hex, uuid.uuid4().hex, sent_at)
                for _ in range(2000)]
    opens = [f"/t/o/{tt.open_token(ring, c)}" for c in contexts]
    clicks = [f"/t/c/{tt.click_token(ring, c, i % 5)}" for i, c in enumerate(contexts)]

    tracking_port, bare_port = free_port(), free_port()
    servers = []
    results = {}
    landed = 0
    try:
        servers.append(start_gunicorn("services.tracking.app:create_app()", tracking_port, env))
        servers.append(start_gunicorn("bench.tracking.bare_app:app", bare_port, env))
        # /healthz of the bare app answers the GIF too: good enough as a liveness probe.
        results["bare"] = load(bare_port, opens, args.seconds, args.connections)
        results["open"] = load(tracking_port, opens, args.seconds, args.connections)
        # Let the publishers drain the open events, so the click run pays only for its own.
        _wait_for_events(stack["SANDESH_KAFKA_BOOTSTRAP"], topic, results["open"]["requests"])
        results["click"] = load(tracking_port, clicks, args.seconds, args.connections)
        landed = _wait_for_events(stack["SANDESH_KAFKA_BOOTSTRAP"], topic,
                                  results["open"]["requests"] + results["click"]["requests"])
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        mongo.client(stack["SANDESH_MONGO_URI"]).drop_database(prefix + "tracking")
        delete_topics(stack["SANDESH_KAFKA_BOOTSTRAP"], [topic])

    bare = results["bare"]["rps"]
    print(f"gunicorn workers={WORKERS} threads={THREADS}, {args.connections} keep-alive "
          f"connections from a separate process, {args.seconds:g} s per run")
    print(f"{'target':<8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}  statuses")
    for name in ("bare", "open", "click"):
        r = results[name]
        ratio = r["rps"] / bare if bare else 0
        print(f"{name:<8}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{ratio:>8.2f}  "
              f"{r['statuses']} errors={r['errors']}")
    hits = results["open"]["requests"] + results["click"]["requests"]
    print(f"events on the hits topic: {landed} for {hits} measured hits "
          f"(plus warm-up hits; none may be missing)")
    for name in ("open", "click"):
        r = results[name]
        ok = r["rps"] / bare >= 0.6 and r["p99_ms"] < 20
        print(f"{name}: ratio {r['rps'] / bare:.2f} (target >= 0.6), p99 {r['p99_ms']:.1f} ms "
              f"(target < 20): {'met' if ok else 'NOT met'}")


def _wait_for_events(bootstrap: str, topic: str, at_least: int, timeout: float = 60) -> int:
    """Events on the topic (end offsets), waiting up to `timeout` for `at_least`."""
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        deadline = time.monotonic() + timeout
        while True:
            count = sum(consumer.end_offsets(partitions).values())
            if count >= at_least or time.monotonic() > deadline:
                return count
            time.sleep(0.5)
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
