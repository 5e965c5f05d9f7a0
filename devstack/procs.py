"""Processes and ports: is our supervisord alive, who holds a port.

Standard library only (it runs before the virtualenv exists, for the port
guard). Who-holds-a-port uses Linux's /proc; elsewhere it just knows less.
"""
from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from devstack import config


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def supervisord_pid() -> int | None:
    """The pid of this checkout's supervisord if it is running, else None."""
    try:
        pid = int(config.SUPERVISORD_PID.read_text().strip())
    except (OSError, ValueError):
        return None
    if not pid_alive(pid):
        return None
    cmd = cmdline(pid)
    if cmd and ("supervisord" not in cmd or str(config.SUPERVISORD_CONF) not in cmd):
        return None  # the pid was reused by some other process
    return pid


def clear_stale_files() -> None:
    """Remove the pid file and socket a dead supervisord left behind."""
    if supervisord_pid() is None:
        for path in (config.SUPERVISORD_PID, config.SUPERVISOR_SOCK):
            path.unlink(missing_ok=True)


def port_busy(port: int, host: str = config.HOST) -> bool:
    """True when something already listens on host:port (or on all addresses)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def listener_pids(port: int) -> set[int]:
    """Pids of processes holding a listening socket on this port (those /proc lets us see)."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    pids: set[int] = set()
    if not wanted:
        return pids
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                try:
                    if os.readlink(fd.path) in wanted:
                        pids.add(int(entry.name))
                        break
                except OSError:
                    continue
        except OSError:
            continue
    return pids


def descendants(pid: int) -> set[int]:
    """pid and all its children, grandchildren, ..."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo.extend(children.get(current, []))
    return found


def stack_of(pid: int) -> str | None:
    """The checkout whose local stack started this process, if it is one."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"SANDESH_REPO_DIR=") and b"SUPERVISOR_ENABLED=1" in environ:
            return item.split(b"=", 1)[1].decode("utf-8", "replace")
    return None


def describe_holders(port: int) -> str:
    pids = sorted(listener_pids(port))
    if not pids:
        return "another process"
    cmd = cmdline(pids[0])
    text = f"another process (pid {pids[0]}: {cmd[:70] + '…' if len(cmd) > 70 else cmd})"
    checkout = stack_of(pids[0])
    if checkout:
        text += f" of the local stack in {checkout}"
    return text
