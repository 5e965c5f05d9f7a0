"""`make restart [SERVICE=name]`: restart one program group, or all Sandesh services.

    make restart SERVICE=contacts   # contacts-web and contacts-worker, e.g. after a code change
    make restart SERVICE=kafka      # an infrastructure program works too
    make restart                    # every Sandesh service (not Kafka, FerretDB, the sink)

Then waits until what was restarted is ready again.
"""
from __future__ import annotations

import subprocess
import sys

from devstack import config, procs, supervisor, wait
from devstack.config import fail
from devstack.env import load_stack_env


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    service = argv[0].strip() if argv and argv[0].strip() else None
    if procs.supervisord_pid() is None:
        fail("The local stack is not running here: start it with `make run`.")
    has_services = supervisor.conf_has_services()
    known = config.INFRA_PROGRAMS + (config.SERVICE_GROUPS if has_services else [])
    if service is not None and service not in known:
        extra = "" if has_services else " (the Sandesh services are not started: SANDESH_ONLY_INFRA=1)"
        fail(f"unknown SERVICE={service}; choose one of: {', '.join(known)}{extra}")
    if service is None and not has_services:
        fail("no Sandesh services run in this stack (SANDESH_ONLY_INFRA=1); "
             "use e.g. `make restart SERVICE=kafka`.")
    targets = [f"{g}:*" for g in ([service] if service else config.SERVICE_GROUPS)]
    print(f"==> Restarting {service or 'all Sandesh services'}", flush=True)
    subprocess.run(supervisor.supervisorctl("restart", *targets), check=False)

    env = load_stack_env()
    checks = [c for c in wait.infra_checks(env) if c.process.split(":")[0] == service]
    if has_services and service not in config.INFRA_PROGRAMS:
        checks += [c for c in wait.service_checks(env)
                   if service is None or c.process.split(":")[0] == service]
    wait.wait_all(checks)
    wait.settle(checks)
    print("Ready.")


if __name__ == "__main__":
    main()
