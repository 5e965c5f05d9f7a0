"""Where a benchmark's CPU goes: the local stack's processes, grouped by
role, and the machine as a whole (Linux /proc); and a process's peak memory.

    before = cpu.snapshot()
    ...                                # the measured work
    print(cpu.report(before, cpu.snapshot(), messages=20_000))

On this 2-core machine the send path is CPU-bound through the stack, so a
figure in messages per second means little without the CPU per message of
each process beside it: that is what says which process a change helped.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_SERVICE = re.compile(r"services\.(\w+)\.(worker|app)")


@dataclass(frozen=True)
class Snapshot:
    at: float
    processes: dict[int, tuple[str, float]]  # pid -> (role, CPU seconds so far)
    machine_busy: float                      # CPU seconds the whole machine has been busy
    cores: int


def role(cmdline: str) -> str:
    """The stack process's role, from its command line."""
    found = _SERVICE.search(cmdline)
    if found:
        name, kind = found.groups()
        return f"{name} {'worker' if kind == 'worker' else 'web'}"
    for needle, name in (("smtp_sink", "sink"), ("ferretdb", "ferretdb"),
                         ("kafka", "kafka"), ("supervisord", "supervisord")):
        if needle in cmdline:
            return name
    return "other"


def _stack_processes() -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue  # gone, or not ours to read
        if cwd == str(REPO) or str(REPO) in cmdline:
            found[int(entry.name)] = role(cmdline)
    return found


def pid_of(wanted_role: str) -> int | None:
    """The pid of the stack's process with this role ("ferretdb", "sink"...)."""
    return next((pid for pid, name in _stack_processes().items() if name == wanted_role), None)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    return _stat_seconds(Path(f"/proc/{pid}/stat"))


def _stat_seconds(stat: Path) -> float:
    """User + system CPU seconds from a /proc .../stat file (a process's or a thread's)."""
    fields = stat.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_group(pid: int, tid: int, comm: str) -> str:
    """A thread's group in a sender's split: its OS name without a trailing
    number (smtp-0..7 add up as "smtp"), "main" for the main thread,
    "librdkafka" for its rdk:* threads (the delivery events' producer), and
    "other" for threads named after the interpreter (kafka-python's and
    pymongo's own)."""
    if tid == pid:
        return "main"
    if comm.startswith("rdk:"):
        return "librdkafka"
    if comm.startswith("python"):
        return "other"
    return re.sub(r"-\d+$", "", comm)


def thread_seconds(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (group, user + system CPU seconds so far) for a process's threads."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            seconds = _stat_seconds(task / "stat")
        except OSError:
            continue  # the thread ended meanwhile
        found[int(task.name)] = (thread_group(pid, int(task.name), comm), seconds)
    return found


def thread_split(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                 messages: int) -> dict[str, float]:
    """CPU ms per message by thread group, between two thread_seconds()
    (of one process, or merged from several). A thread started in between
    counts from zero; one that ended in between is missing."""
    used: dict[str, float] = {}
    for tid, (group, seconds) in after.items():
        earlier = before.get(tid, (group, 0.0))[1]
        used[group] = used.get(group, 0.0) + (seconds - earlier) * 1000 / messages
    return dict(sorted(used.items(), key=lambda item: -item[1]))


def machine_times() -> tuple[float, float]:
    """CPU seconds the whole machine has been busy, and in all, so far. The
    first eight fields only: guest time is already counted in user time."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def snapshot(roles: dict[int, str] | None = None, among: Snapshot | None = None) -> Snapshot:
    """Every stack process's CPU so far. `roles` names some processes
    itself (pid -> role): a benchmark's own senders, told apart from the
    stack's, or the benchmark process, which is never counted otherwise.
    `among`: only the processes of that earlier snapshot, without looking
    through /proc for others (a sample taken often during a run)."""
    known = ({pid: name for pid, (name, _) in among.processes.items()} if among is not None
             else _stack_processes())
    processes = {}
    for pid, name in {**known, **(roles or {})}.items():
        try:
            processes[pid] = (name, cpu_seconds(pid))
        except OSError:
            continue
    return Snapshot(time.time(), processes, machine_times()[0], os.cpu_count() or 1)


class Sampler:
    """Snapshots of the processes of `first`, at most one every `every`
    seconds, taken when `sample()` is called (a wait loop's check): the end
    of a run is known only after it, from a file's mtime, and the snapshot
    taken then also counted the seconds in between."""

    def __init__(self, first: Snapshot, every: float = 0.25):
        self.samples, self.every = [first], every

    def sample(self) -> None:
        if time.time() - self.samples[-1].at >= self.every:
            self.samples.append(snapshot(among=self.samples[0]))

    def at(self, moment: float) -> Snapshot:
        """The first snapshot taken at or after `moment` (time.time())."""
        self.samples.append(snapshot(among=self.samples[0]))
        return next(s for s in self.samples if s.at >= moment)


def report(before: Snapshot, after: Snapshot, messages: int, unit: str = "message") -> str:
    """CPU ms per message (or per `unit`) for each role that used any, and how busy the
    machine was. A process started in between counts from zero; one that
    exited in between is missing from the figures (its CPU is not known)."""
    elapsed = max(after.at - before.at, 1e-9)
    used: dict[str, float] = {}
    for pid, (name, seconds) in after.processes.items():
        _, earlier = before.processes.get(pid, (name, 0.0))
        used[name] = used.get(name, 0.0) + seconds - earlier
    # what would print as 0.00 ms is left out
    used = {name: seconds for name, seconds in used.items() if seconds * 1000 / messages >= 0.005}
    parts = [f"{name} {seconds * 1000 / messages:.2f}"
             for name, seconds in sorted(used.items(), key=lambda item: -item[1])]
    total = sum(used.values())
    machine = (after.machine_busy - before.machine_busy) / elapsed
    return (f"CPU ms per {unit}: {', '.join(parts)}; stack total {total * 1000 / messages:.2f} ms. "
            f"The machine was {machine:.0%} busy of {after.cores * 100}% "
            f"(the stack {total / elapsed:.0%})")


def peak_rss_mb(pids: list[int]) -> list[float]:
    """Each process's peak resident memory since it started (VmHWM)."""
    peaks = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) / 1024)
        except OSError:
            continue
    return peaks
