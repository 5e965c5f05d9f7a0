"""`make run`: start the local stack under supervisord (once), wait, create topics, summarise.

    python -m devstack.run [--for run|test]

Running it again while this checkout's supervisord is alive starts nothing
twice: it starts only what is not RUNNING, then waits and prints the summary.
"""
from __future__ import annotations

import argparse
import base64
import os
import shutil
import string
import subprocess
import sys
import time
import uuid

from devstack import config, env as stackenv, guard, procs, supervisor, wait
from devstack.config import ConfigError, fail
from devstack.topics import ensure_topics, sweep_leftovers

ORDER_HINT = "SANDESH_ONLY_INFRA=1 make run starts only Kafka, FerretDB and the SMTP sink"


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


# --- before the first start ---------------------------------------------------

def missing_service_code() -> list[str]:
    """Entry points the service programs need that are not in the tree."""
    def module_exists(dotted: str) -> bool:
        base = config.REPO_DIR.joinpath(*dotted.split("."))
        return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()

    needed = ["shared.gunicorn_conf"]
    needed += [f"services.{name}.app" for name in config.WEB_SERVICES]
    needed += [f"services.{name}.worker" for name in config.WORKER_SERVICES + ["sender"]]
    return [m for m in needed if not module_exists(m)]


def prepare_run_dir(ports: dict[str, int], senders: int) -> dict[str, str]:
    run = config.RUN_DIR
    for sub in ("logs", "kafka/data", "ferretdb/data", "maildir/tmp", "maildir/new", "maildir/cur",
                "smtp-sink", "prom"):
        (run / sub).mkdir(parents=True, exist_ok=True)
    (run / "dkim").mkdir(mode=0o700, exist_ok=True)
    kept = stackenv.ensure_secrets(run)
    stack_env = stackenv.build_stack_env(ports, kept, senders, run)
    stackenv.write_stack_env(stack_env, run)

    template = config.DEPLOY_DIR / "kafka" / "server.properties.template"
    (run / "kafka" / "server.properties").write_text(string.Template(template.read_text()).substitute(
        kafka_port=ports["kafka"], kafka_controller_port=ports["kafka_controller"],
        log_dirs=run / "kafka" / "data"))
    return stack_env


def _kafka_cluster_id() -> str:
    """A random id as Kafka writes them (22 URL-safe base64 characters), never
    starting with "-": the storage tool would take one for an option and fail
    ("--cluster-id: expected one argument"), once in 64 fresh stacks. Kafka's
    own Uuid.randomUuid() avoids them the same way."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def format_kafka_storage() -> None:
    data = config.RUN_DIR / "kafka" / "data"
    if (data / "meta.properties").exists():
        return
    say("Formatting Kafka's KRaft storage (first run only)…")
    cluster_id = _kafka_cluster_id()
    java = shutil.which("java") or "java"
    result = subprocess.run(
        [java, "-Xmx256m", f"-Dlog4j2.configurationFile={config.DEPLOY_DIR / 'kafka' / 'log4j2.properties'}",
         "-cp", f"{config.KAFKA_LIB_DIR}/*", "kafka.tools.StorageTool", "format",
         "-t", cluster_id, "-c", str(config.RUN_DIR / "kafka" / "server.properties")],
        capture_output=True, text=True)
    if result.returncode != 0:
        print((result.stdout + result.stderr).strip()[-3000:])
        fail("Formatting Kafka's storage failed (output above). `make clean-data` wipes run/ "
             "and starts over.")


def start_supervisord() -> None:
    say("Starting supervisord (programs: `make status`, logs: run/logs/)")
    result = subprocess.run([str(config.VENV_BIN / "supervisord"), "-c", str(config.SUPERVISORD_CONF)],
                            capture_output=True, text=True, cwd=config.REPO_DIR)
    if result.returncode != 0:
        print((result.stdout + result.stderr).strip())
        fail("supervisord did not start (output above; see run/logs/supervisord.log).")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if supervisor.rpc().getState()["statename"] == "RUNNING":
                return
        except Exception:  # socket not there yet
            pass
        time.sleep(0.2)
    fail("supervisord started but does not answer; see run/logs/supervisord.log, then `make stop`.")


# --- every run ------------------------------------------------------------------

def start_stopped(names: list[str]) -> None:
    """Start the given group:process names that are not already up."""
    infos = supervisor.process_infos()
    server = supervisor.rpc()
    for name in names:
        if infos.get(name, {}).get("statename") not in ("RUNNING", "STARTING"):
            try:
                server.startProcess(name, False)
            except Exception as exc:  # e.g. ALREADY_STARTED in a race: fine
                if "ALREADY_STARTED" not in str(exc):
                    fail(f"supervisord could not start {name}: {exc}")


def sweep_throwaway_topics(bootstrap: str) -> None:
    """Earlier test and benchmark runs' topics, gone before anything starts."""
    try:
        swept = sweep_leftovers(bootstrap)
    except Exception as exc:  # a slow broker costs the sweep, never the start
        print(f"    note: could not delete earlier runs' test and bench topics: {exc}", flush=True)
        return
    if swept:
        say(f"Deleted the {len(swept)} throwaway Kafka topics (test.*, bench.*) earlier runs left")


def verify_ownership(stack_env: dict[str, str], progs: list[supervisor.Program]) -> None:
    """Every port answers from one of our own processes, not a stranger's."""
    infos = supervisor.process_infos()
    ports = stackenv.ports_from_stack_env(stack_env)
    owners = {ports["kafka"]: "kafka:kafka", ports["kafka_controller"]: "kafka:kafka",
              ports["mongo"]: "ferretdb:ferretdb", ports["ferretdb_debug"]: "ferretdb:ferretdb",
              ports["smtp"]: "smtp-sink:smtp-sink"}
    names = {n for p in progs for n in p.full_names}
    for name in config.WEB_SERVICES:
        if f"{name}:{name}-web" in names:
            owners[ports[name]] = f"{name}:{name}-web"
    for name in config.WORKER_SERVICES:
        if f"{name}:{name}-worker" in names:
            owners[ports[f"{name}_worker"]] = f"{name}:{name}-worker"
    for i in range(int(stack_env.get("SANDESH_SENDERS", "1"))):
        if f"sender:sender-{i}" in names:
            owners[ports["sender"] + i] = f"sender:sender-{i}"
    for port, process in owners.items():
        holders = procs.listener_pids(port)
        pid = infos.get(process, {}).get("pid") or 0
        if holders and pid and not holders & procs.descendants(pid):
            fail(f"port {port} answers, but from {procs.describe_holders(port)}, not from this "
                 f"checkout's {process.split(':')[1]} (pid {pid}). Stop the other process or pick "
                 "other ports (see docs/local-stack.md), then `make stop && make run`.")


def explicit_overrides_differ(stack_env: dict[str, str]) -> list[str]:
    differ = []
    for p in config.PORTS:
        wanted = os.environ.get(p.env, "").strip()
        if wanted and wanted != stack_env.get(p.env):
            differ.append(f"{p.env}={wanted} (running: {stack_env.get(p.env)})")
    wanted = os.environ.get("SANDESH_SENDERS", "").strip()
    if wanted and wanted != stack_env.get("SANDESH_SENDERS"):
        differ.append(f"SANDESH_SENDERS={wanted} (running: {stack_env.get('SANDESH_SENDERS')})")
    return differ


def summary(stack_env: dict[str, str], with_services: bool, seconds: float) -> None:
    e = stack_env
    print()
    print(f"Sandesh local stack is up ({seconds:.0f} s; stack id {e['SANDESH_STACK_ID']})")
    rows = []
    if with_services:
        rows += [("Gateway", e["SANDESH_GATEWAY_URL"] + "/api/v1"),
                 ("Tracking", e["SANDESH_TRACKING_URL"])]
    else:
        rows += [("Services", "not started (SANDESH_ONLY_INFRA=1): infrastructure only")]
    rows += [
        ("Kafka", e["SANDESH_KAFKA_BOOTSTRAP"]),
        ("MongoDB (FerretDB)", e["SANDESH_MONGO_URI"]),
        ("SMTP sink", f"{e['SANDESH_SMTP_HOST']}:{e['SANDESH_SMTP_PORT']}"),
        ("Received mail", f"{e['SANDESH_MAILDIR']}/new/ (Maildir)"),
        ("Operator token", f"{e['SANDESH_OPERATOR_TOKEN']}  (kept in {e['SANDESH_OPERATOR_TOKEN_FILE']})"),
        ("Environment", f"{config.STACK_ENV}  (set -a; . run/stack.env; set +a)"),
        ("Logs", f"{config.LOG_DIR}/*.log  (make logs)"),
        ("Stop", "make stop"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.run")
    parser.add_argument("--for", dest="target", default="run", help="make target, for messages")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        ports = config.ports_from_environ()
        senders = config.senders_from_environ()
    except ConfigError as exc:
        fail(str(exc))
    infra_only = config.only_infra()

    freshly_started = procs.supervisord_pid() is None
    if not freshly_started:
        say("The local stack is already running here: checking every program is up")
        stack_env = stackenv.load_stack_env()
        differ = explicit_overrides_differ(stack_env)
        if differ:
            print(f"    note: ignoring {', '.join(differ)}; the running stack keeps run/stack.env. "
                  f"To change it: make stop && ... make {args.target}")
        ports = stackenv.ports_from_stack_env(stack_env)
        senders = int(stack_env.get("SANDESH_SENDERS", "1"))
        with_services = not infra_only or supervisor.conf_has_services()
        if with_services and (missing := missing_service_code()):
            fail(f"the service code is not there yet ({', '.join(missing)}). {ORDER_HINT}.")
        progs = supervisor.programs(ports, senders, with_services)
        if supervisor.write_conf(supervisor.render(stack_env, progs, ports["supervisor"])):
            say("Programs changed: applying run/supervisord.conf (supervisorctl update)")
            subprocess.run(supervisor.supervisorctl("update"), check=False)
        start_stopped([n for p in progs if p.priority == 10 for n in p.full_names])
    else:
        procs.clear_stale_files()
        try:
            guard.check_ports_free(ports, senders, infra_only, args.target)
        except ConfigError as exc:
            fail(str(exc))
        with_services = not infra_only
        if with_services and (missing := missing_service_code()):
            fail(f"the service code is not there yet ({', '.join(missing)}). {ORDER_HINT}.")
        stack_env = prepare_run_dir(ports, senders)
        format_kafka_storage()
        progs = supervisor.programs(ports, senders, with_services)
        supervisor.write_conf(supervisor.render(stack_env, progs, ports["supervisor"]))
        start_supervisord()

    wait.wait_all(wait.infra_checks(stack_env))
    if freshly_started:
        sweep_throwaway_topics(stack_env["SANDESH_KAFKA_BOOTSTRAP"])
    say("Creating Kafka topics (those not there yet) and aligning their retention")
    try:
        created, existing, altered = ensure_topics(stack_env["SANDESH_KAFKA_BOOTSTRAP"])
    except Exception as exc:
        fail(f"creating the Kafka topics failed: {exc}. See run/logs/kafka.log.")
    print(f"    created: {', '.join(created) or '-'}; already there: {len(existing)}; "
          f"configs aligned: {', '.join(altered) or '-'}", flush=True)
    if with_services:
        say("Starting the Sandesh services")
        start_stopped([n for p in progs if p.priority == 50 for n in p.full_names])
        service_checks = wait.service_checks(stack_env)
        wait.wait_all(service_checks)
        wait.settle(service_checks)
    verify_ownership(stack_env, progs)
    summary(stack_env, with_services, time.monotonic() - started)


if __name__ == "__main__":
    main()
