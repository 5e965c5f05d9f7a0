"""`make stop`: shut our supervisord down and wait until every program has exited.

Harmless when nothing runs. Programs get SIGTERM (their whole process group),
then SIGKILL after 35 s; services (priority 50) stop before the
infrastructure (priority 10).
"""
from __future__ import annotations

import os
import time

from devstack import config, procs, supervisor
from devstack.config import fail

DEADLINE = 120  # two priority tiers x stopwaitsecs 35, plus margin


def leftovers(server_url: str) -> list[str]:
    """Processes our supervisord started that are still running (should be none).

    supervisord puts SUPERVISOR_SERVER_URL in every child's environment, so
    that identifies ours, and only ours, even after they were re-parented.
    """
    marker = f"SUPERVISOR_SERVER_URL={server_url}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = open(f"/proc/{entry.name}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if marker in environ:
            found.append(f"pid {entry.name}: {procs.cmdline(int(entry.name))[:100]}")
    return found


def main() -> None:
    pid = procs.supervisord_pid()
    if pid is None:
        procs.clear_stale_files()
        print("The local stack is not running here: nothing to stop.")
        return
    print("==> Stopping the local stack (services first, then Kafka, FerretDB, the sink)…", flush=True)
    started = time.monotonic()
    server_url = supervisor.server_url()
    try:
        supervisor.rpc().shutdown()
    except Exception as exc:
        fail(f"could not reach supervisord (pid {pid}) to shut it down: {exc}. "
             f"Stop it with `kill {pid}` and try again.")
    while procs.pid_alive(pid):
        if time.monotonic() - started > DEADLINE:
            fail(f"supervisord (pid {pid}) is still stopping after {DEADLINE} s; see "
                 "run/logs/supervisord.log.")
        time.sleep(0.3)
    procs.clear_stale_files()
    left = leftovers(server_url) if os.path.isdir("/proc") else []
    if left:
        fail("stopped supervisord, but these processes of this stack are still running:\n  "
             + "\n  ".join(left) + "\nStop them with `kill <pid>`.")
    print(f"Stopped ({time.monotonic() - started:.0f} s).")


if __name__ == "__main__":
    main()
