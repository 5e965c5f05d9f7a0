"""The port-ownership guard: never start on, or test against, someone else's servers.

    python3 -m devstack.guard --for test

If this checkout's supervisord is not running, every port the stack needs
must be free; a port held by another process (another checkout's stack, a
system Kafka or MongoDB, ...) stops us with a message saying what to do.
Standard library only: `make test` runs it before installing anything.
"""
from __future__ import annotations

import argparse

from devstack import config, procs
from devstack.config import ConfigError, fail


def supervisor_uses_inet() -> bool:
    # A unix socket path must fit in sun_path (108 bytes); deep checkouts fall
    # back to supervisord's HTTP server on 127.0.0.1:SANDESH_SUPERVISOR_PORT.
    return len(str(config.SUPERVISOR_SOCK).encode()) > 100


def needed_ports(ports: dict[str, int], senders: int, infra_only: bool) -> list[tuple[int, str, str]]:
    """(port, what, environment variable) for every port the stack will listen on."""
    keys = list(config.INFRA_PORT_KEYS)
    if not infra_only:
        keys += config.WEB_SERVICES
    if supervisor_uses_inet():
        keys.append("supervisor")
    needed = [(ports[k], config.PORTS_BY_KEY[k].label, config.PORTS_BY_KEY[k].env) for k in keys]
    if not infra_only:
        for i in range(senders):
            needed.append((ports["sender"] + i, f"sender-{i} health/metrics", "SANDESH_SENDER_PORT"))
    seen: dict[int, str] = {}
    for port, what, env in needed:
        if port in seen:
            raise ConfigError(f"port {port} would be used by both {seen[port]} and {what}: "
                              f"change {env} (senders use SANDESH_SENDER_PORT + 0..SANDESH_SENDERS-1)")
        seen[port] = what
    return needed


def check_ports_free(ports: dict[str, int], senders: int, infra_only: bool, target: str) -> None:
    busy = [(port, what, env) for port, what, env in needed_ports(ports, senders, infra_only)
            if procs.port_busy(port)]
    if not busy:
        return
    lines = []
    for port, what, env in busy:
        lines.append(f"port {port} ({what}) is in use by {procs.describe_holders(port)}, "
                     "not this checkout's stack.")
    port, what, env = busy[0]
    suggestion = port + 10000 if port + 10000 <= 65535 else port - 1000
    lines.append(f"Stop that stack (`make stop` in its checkout) or pick other ports, "
                 f"e.g. {env}={suggestion} make {target}")
    fail("\n  ".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m devstack.guard")
    parser.add_argument("--for", dest="target", default="run")
    args = parser.parse_args(argv)
    if procs.supervisord_pid() is not None:
        return  # our own stack holds the ports; devstack.run checks it further
    try:
        check_ports_free(config.ports_from_environ(), config.senders_from_environ(),
                         config.only_infra(), args.target)
    except ConfigError as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
