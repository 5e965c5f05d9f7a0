"""run/supervisord.conf and talking to our supervisord.

Programs (log file run/logs/<program>.log each):
  priority 10, started by supervisord:  kafka, ferretdb, smtp-sink
  priority 50, started by devstack once Kafka, FerretDB and the sink answer
  (so the services never race the infrastructure), one group per service:
    gateway:   gateway-web
    contacts:  contacts-web, contacts-worker   (likewise campaigns, tracking, privacy)
    sender:    sender-0 .. sender-<SANDESH_SENDERS - 1>
`make restart SERVICE=contacts` restarts the whole group.
"""
from __future__ import annotations

import configparser
import resource
import shlex
import shutil
import string
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path

from devstack import config
from devstack.config import fail
from devstack.guard import supervisor_uses_inet

TEMPLATE = Path(__file__).parent / "templates" / "supervisord.conf.tmpl"


@dataclass
class Program:
    name: str
    command: list[str]
    priority: int
    autostart: bool
    startsecs: int = 3
    env: dict[str, str] = field(default_factory=dict)
    numprocs: int | None = None  # set: processes <name>-0 .. <name>-<numprocs-1>

    @property
    def process_names(self) -> list[str]:
        """Process names, which are also the log names (run/logs/<name>.log)."""
        if self.numprocs is None:
            return [self.name]
        return [f"{self.name}-{i}" for i in range(self.numprocs)]

    @property
    def full_names(self) -> list[str]:
        """supervisorctl names: group:process."""
        group = next((g for g in config.SERVICE_GROUPS
                      if self.name == g or self.name.startswith(g + "-")), None)
        if group is None:
            return [f"{self.name}:{self.name}"]
        return [f"{group}:{name}" for name in self.process_names]


def _esc(value: str) -> str:
    """Escape for a supervisord config value (which does %(name)s expansion)."""
    return str(value).replace("%", "%%")


def _env_value(env: dict[str, str]) -> str:
    for key, value in env.items():
        if '"' in str(value) or "\n" in str(value):
            fail(f"{key} contains a double quote or newline, which supervisord cannot pass on")
    return ",".join(f'{key}="{_esc(value)}"' for key, value in env.items())


PROCESS_NUM = "%(process_num)d"  # supervisord expands it; passed through as is


def _command(parts: list) -> str:
    return " ".join(p if p == PROCESS_NUM else _esc(shlex.quote(str(p))) for p in parts)


def programs(ports: dict[str, int], senders: int, with_services: bool) -> list[Program]:
    run, repo, venv_py = config.RUN_DIR, config.REPO_DIR, str(config.VENV_BIN / "python")
    java = shutil.which("java") or "java"
    progs = [
        # C1 only: C2 compiling was ~40% of the broker's CPU for its first
        # minutes (tests, benchmarks), and at this load C1's code is enough:
        # 0.17-0.31 ms of Kafka CPU per sent message against 0.34-0.44
        # (bench.send.run; docs/sender-performance-log.md).
        Program("kafka", [java, "-Xms256m", "-Xmx512m", "-XX:TieredStopAtLevel=1",
                          "-XX:+ExitOnOutOfMemoryError",
                          "-Djava.awt.headless=true",
                          f"-Dlog4j2.configurationFile={config.DEPLOY_DIR / 'kafka' / 'log4j2.properties'}",
                          "-cp", f"{config.KAFKA_LIB_DIR}/*", "kafka.Kafka",
                          str(run / "kafka" / "server.properties")],
                priority=10, autostart=True, startsecs=5),
        Program("ferretdb", [str(config.FERRETDB_BIN), "--handler=sqlite",
                             # SQLite's statement journals (FerretDB's inserts run inside
                             # transactions) in memory, not in temp files: writing them was
                             # a fifth of FerretDB's CPU during a campaign (pprof). Crash
                             # safety is the WAL's and is unchanged.
                             f"--sqlite-url=file:{run / 'ferretdb' / 'data'}/?_pragma=temp_store(2)",
                             f"--state-dir={run / 'ferretdb'}",
                             f"--listen-addr={config.HOST}:{ports['mongo']}",
                             f"--debug-addr={config.HOST}:{ports['ferretdb_debug']}",
                             "--telemetry=disable",
                             # Give the backend a find's, explain's or aggregate's nested
                             # fields (`fields.city`), which the handler otherwise removes
                             # from what it passes on (other commands always pass them):
                             # the patched SQLite backend pushes down only the conditions
                             # it cannot miss a match with (devstack/ferretdb_patches.py,
                             # patch 12) and the handler filters every document again.
                             "--test-enable-nested-pushdown",
                             # warn would log every pymongo close (FerretDB 1.x has no endSessions)
                             "--log-level=error"],
                priority=10, autostart=True, startsecs=2,
                # Go's collector was ~13% of FerretDB's CPU during a campaign
                # (pprof). Collecting at 5x the live heap rather than 2x: 0.21
                # ms of its CPU a message against 0.25 (medians of 8 and 32
                # bench.send runs), peak RSS 59 MB.
                env={"GOGC": "400"}),
        Program("smtp-sink", [venv_py, "-m", "devstack.smtp_sink"], priority=10, autostart=True,
                startsecs=1),
    ]
    if not with_services:
        return progs
    for name in config.WEB_SERVICES:
        progs.append(Program(
            f"{name}-web", ["bash", str(repo / "devstack" / "run_web.sh"), name, ports[name]],
            priority=50, autostart=False,
            env={"SANDESH_SERVICE": name,
                 "SANDESH_WEB_WORKERS": str(config.WEB_WORKERS.get(name, 1)),
                 "PROMETHEUS_MULTIPROC_DIR": str(run / "prom" / name)}))
        if name in config.WORKER_SERVICES:
            progs.append(Program(f"{name}-worker", [venv_py, "-m", f"services.{name}.worker"],
                                 priority=50, autostart=False,
                                 env={"SANDESH_SERVICE": name,
                                      "SANDESH_HEALTH_PORT": str(ports[f"{name}_worker"])}))
    progs.append(Program("sender", ["bash", str(repo / "devstack" / "run_sender.sh"), PROCESS_NUM],
                         priority=50, autostart=False, numprocs=senders,
                         env={"SANDESH_SERVICE": "sender"}))
    return progs


def groups(progs: list[Program]) -> dict[str, list[str]]:
    """Sandesh service group -> its program names."""
    found: dict[str, list[str]] = {}
    for prog in progs:
        for service in config.SERVICE_GROUPS:
            if prog.name == service or prog.name.startswith(service + "-"):
                found.setdefault(service, []).append(prog.name)
    return found


def _program_section(prog: Program) -> str:
    lines = [f"[program:{prog.name}]"]
    lines.append(f"command={_command(prog.command)}")
    if prog.numprocs is not None:
        lines += ["process_name=%(program_name)s-%(process_num)d", f"numprocs={prog.numprocs}",
                  "numprocs_start=0"]
        log = f"{_esc(config.LOG_DIR)}/%(program_name)s-%(process_num)d.log"
    else:
        log = f"{_esc(config.LOG_DIR)}/{prog.name}.log"
    lines += [
        f"directory={_esc(config.REPO_DIR)}",
        f"priority={prog.priority}",
        f"autostart={'true' if prog.autostart else 'false'}",
        "autorestart=true",
        f"startsecs={prog.startsecs}",
        "startretries=5",
        "stopsignal=TERM",
        "stopwaitsecs=35",
        "stopasgroup=true",
        "killasgroup=true",
        "redirect_stderr=true",
        f"stdout_logfile={log}",
        "stdout_logfile_maxbytes=20MB",
        "stdout_logfile_backups=2",
    ]
    if prog.env:
        lines.append(f"environment={_env_value(prog.env)}")
    return "\n".join(lines)


def render(stack_env: dict[str, str], progs: list[Program], supervisor_port: int) -> str:
    if supervisor_uses_inet():
        control = f"[inet_http_server]\nport={config.HOST}:{supervisor_port}"
        serverurl = f"http://{config.HOST}:{supervisor_port}"
    else:
        control = f"[unix_http_server]\nfile={_esc(config.SUPERVISOR_SOCK)}\nchmod=0700"
        serverurl = f"unix://{_esc(config.SUPERVISOR_SOCK)}"
    sections = [_program_section(p) for p in progs]
    for group, members in groups(progs).items():
        sections.append(f"[group:{group}]\nprograms={','.join(members)}\npriority=50")
    env = dict(stack_env, PYTHONUNBUFFERED="1")
    # Kafka keeps a file open per partition segment, and tests make many topics:
    # ask for 4096 descriptors, but never more than the hard limit allows.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    minfds = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    return string.Template(TEMPLATE.read_text()).substitute(
        minfds=minfds,
        control_server=control, log_dir=_esc(config.LOG_DIR), pidfile=_esc(config.SUPERVISORD_PID),
        repo_dir=_esc(config.REPO_DIR), environment=_env_value(env), serverurl=serverurl,
        programs="\n\n".join(sections) + "\n",
    )


def write_conf(text: str) -> bool:
    """Write run/supervisord.conf; True if it changed."""
    old = config.SUPERVISORD_CONF.read_text() if config.SUPERVISORD_CONF.exists() else None
    if old == text:
        return False
    config.SUPERVISORD_CONF.write_text(text)
    return True


def conf_has_services() -> bool:
    return config.SUPERVISORD_CONF.exists() and "[group:gateway]" in config.SUPERVISORD_CONF.read_text()


def server_url() -> str:
    parser = configparser.RawConfigParser()
    parser.read(config.SUPERVISORD_CONF)
    return parser.get("supervisorctl", "serverurl").replace("%%", "%")


def rpc():
    """An XML-RPC proxy to our supervisord (supervisor.* methods)."""
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, server_url())
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor


def process_infos() -> dict[str, dict]:
    """'group:name' -> getProcessInfo dict (statename, pid, ...)."""
    return {f"{i['group']}:{i['name']}": i for i in rpc().getAllProcessInfo()}


def supervisorctl(*args: str) -> list[str]:
    return [str(config.VENV_BIN / "supervisorctl"), "-c", str(config.SUPERVISORD_CONF), *args]
