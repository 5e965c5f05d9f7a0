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
        keys += config.WEB_SERVICES + [f"{name}_worker" for name in config.WORKER_SERVICES]
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


def _free_alternative(port: int, taken: set[int]) -> int:
    for candidate in (port + 10000, port + 20000, port + 30000, port - 1000, port + 1000):
        if 1024 < candidate <= 65535 and candidate not in taken and not procs.port_busy(candidate):
            return candidate
    return port + 10000


def check_ports_free(ports: dict[str, int], senders: int, infra_only: bool, target: str) -> None:
    needed = needed_ports(ports, senders, infra_only)
    busy = [(port, what, env) for port, what, env in needed if procs.port_busy(port)]
    if not busy:
        return
    lines = [f"port {port} ({what}) is in use by {procs.describe_holders(port)}, "
             "not this checkout's stack." for port, what, env in busy]
    taken = {port for port, _, _ in needed}
    moves = {}
    for port, what, env in busy:
        if env not in moves:
            moves[env] = _free_alternative(ports[config.PORTS_BY_KEY_BY_ENV[env].key], taken)
            taken.add(moves[env])
    holders = {procs.stack_of(pid) for port, _, _ in busy for pid in procs.listener_pids(port)}
    other = sorted(h for h in holders if h)
    where = f"`make stop` in {other[0]}" if len(other) == 1 else "`make stop` in its checkout"
    lines.append(f"Stop that stack ({where}) or pick other ports, e.g.\n    "
                 + " ".join(f"{env}={port}" for env, port in moves.items()) + f" make {target}")
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
