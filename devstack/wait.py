"""Readiness: wait until each part of the stack answers, and say what we wait for.

    python -m devstack.wait            # wait for everything in run/supervisord.conf

Kafka: the admin client lists topics. FerretDB: `ping`. SMTP sink: NOOP.
Web services: GET /readyz is 200. Senders: GET /readyz on SANDESH_SENDER_PORT + n.
Kafka workers: GET /readyz on SANDESH_<SERVICE>_WORKER_PORT (without one: RUNNING
in supervisord).
"""
from __future__ import annotations

import logging
import re
import smtplib
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from typing import Callable

from devstack import config, supervisor
from devstack.config import fail

TIMEOUT = 120.0  # cold JVM / first import on a 2-core machine
REPORT_EVERY = 5.0


@dataclass
class Check:
    what: str  # for humans
    process: str  # supervisorctl name, group:process
    probe: Callable[[], bool] | None  # None: being RUNNING is enough

    @property
    def log_file(self):
        return config.LOG_DIR / f"{self.process.split(':')[1]}.log"


def kafka_probe(bootstrap: str) -> Callable[[], bool]:
    def probe() -> bool:
        from devstack.topics import admin_client

        admin = admin_client(bootstrap, 3000)
        try:
            admin.list_topics()
            return True
        finally:
            admin.close()
    return probe


def mongo_probe(uri: str) -> Callable[[], bool]:
    def probe() -> bool:
        from pymongo import MongoClient

        client = MongoClient(uri, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000)
        try:
            return client.admin.command("ping").get("ok") == 1
        finally:
            client.close()
    return probe


def smtp_probe(host: str, port: int) -> Callable[[], bool]:
    def probe() -> bool:
        with smtplib.SMTP(host, port, timeout=3) as smtp:
            return smtp.noop()[0] == 250
    return probe


class NotReady(Exception):
    """A probe got an answer, and it says 'not ready'."""


def http_probe(url: str) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return response.status == 200
        except urllib.error.HTTPError as exc:
            body = exc.read(400).decode("utf-8", "replace").strip()
            raise NotReady(f"HTTP {exc.code} {body}") from None
    return probe


def infra_checks(env: dict[str, str]) -> list[Check]:
    return [
        Check("Kafka", "kafka:kafka", kafka_probe(env["SANDESH_KAFKA_BOOTSTRAP"])),
        Check("FerretDB", "ferretdb:ferretdb", mongo_probe(env["SANDESH_MONGO_URI"])),
        Check("SMTP sink", "smtp-sink:smtp-sink",
              smtp_probe(env["SANDESH_SMTP_HOST"], int(env["SANDESH_SMTP_PORT"]))),
    ]


def service_checks(env: dict[str, str], only: str | None = None) -> list[Check]:
    checks = []
    for name in config.WEB_SERVICES:
        url = env[f"SANDESH_{name.upper()}_URL"] + "/readyz"
        checks.append(Check(f"{name} ({url})", f"{name}:{name}-web", http_probe(url)))
        if name in config.WORKER_SERVICES:
            port = env.get(f"SANDESH_{name.upper()}_WORKER_PORT")
            worker_url = f"http://{config.HOST}:{port}/readyz" if port else None
            checks.append(Check(f"{name}-worker" + (f" ({worker_url})" if port else ""),
                                f"{name}:{name}-worker", http_probe(worker_url) if port else None))
    base = int(env["SANDESH_SENDER_PORT"])
    for i in range(int(env.get("SANDESH_SENDERS", "1"))):
        url = f"http://{config.HOST}:{base + i}/readyz"
        checks.append(Check(f"sender-{i} ({url})", f"sender:sender-{i}", http_probe(url)))
    if only:
        checks = [c for c in checks if c.process.split(":")[0] == only]
    return checks


def tail(path, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines)).rstrip()
    except OSError:
        return f"({path} does not exist yet)"


ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Reconnect|Failure|Timeout)\w*: ")


def last_error(path) -> str | None:
    """The last 'SomeError: message' line of a log (a traceback's conclusion)."""
    lines = tail(path, 400).splitlines()
    found = [line for line in lines if ERROR_LINE.match(line) and "HaltServer" not in line]
    return found[-1] if found else None


def _give_up(check: Check, why: str, last_answer: str | None = None) -> None:
    print(f"\n--- last 20 lines of {check.log_file.relative_to(config.REPO_DIR)} ---\n"
          f"{tail(check.log_file)}\n---", flush=True)
    error = last_error(check.log_file)
    if error:
        print(f"last error in that log: {error}", flush=True)
    if last_answer:
        print(f"last answer to the readiness probe: {last_answer}", flush=True)
    fail(f"{check.what} {why}. Its log is above; `make logs` follows all logs, `make status` "
         "shows every program.")


def wait_for(check: Check, timeout: float = TIMEOUT) -> None:
    started = time.monotonic()
    last_report = started
    quiet = logging.getLogger("kafka")
    quiet_level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # kafka-python logs each refused connection
    last_answer = None
    try:
        while True:
            state = supervisor.process_infos().get(check.process, {}).get("statename", "MISSING")
            if state in ("FATAL", "MISSING"):
                _give_up(check, f"did not start (supervisord state {state})")
            if state == "RUNNING":
                try:
                    if check.probe is None or check.probe():
                        return
                except Exception as exc:  # not answering yet: that is what we wait for
                    last_answer = f"{type(exc).__name__}: {exc}"[:400]
            now = time.monotonic()
            if now - started > timeout:
                _give_up(check, f"was not ready after {timeout:.0f} s (supervisord state {state})",
                         last_answer)
            if now - last_report >= REPORT_EVERY:
                said = f": {last_answer[:100]}" if last_answer else ""
                print(f"    … waiting for {check.what} ({now - started:.0f} s, {state}{said})", flush=True)
                last_report = now
            time.sleep(0.5)
    finally:
        quiet.setLevel(quiet_level)


def wait_all(checks: list[Check]) -> None:
    for check in checks:
        print(f"==> Waiting for {check.what}", flush=True)
        wait_for(check)


def settle(checks: list[Check], seconds: float = 3.0) -> None:
    """Fail if something that was ready stops or restarts right after.

    A service can answer /readyz from its first gunicorn worker while its
    second one fails to boot and takes the whole program down a moment later.
    """
    before = supervisor.process_infos()
    time.sleep(seconds)
    after = supervisor.process_infos()
    for check in checks:
        old, new = before.get(check.process, {}), after.get(check.process, {})
        if new.get("statename") != "RUNNING" or new.get("pid") != old.get("pid"):
            _give_up(check, f"was ready, then stopped or restarted (now {new.get('statename')})")


def main() -> None:
    from devstack.env import StackEnvMissing, load_stack_env
    from devstack.procs import supervisord_pid

    if supervisord_pid() is None:
        fail("The local stack is not running here: start it with `make run`.")
    try:
        env = load_stack_env()
    except StackEnvMissing as exc:
        fail(str(exc))
    checks = infra_checks(env)
    if supervisor.conf_has_services():
        checks += service_checks(env)
    wait_all(checks)
    print("Everything is ready.")


if __name__ == "__main__":
    main()
