"""Where the local stack lives and which loopback ports it uses.

Every port can be overridden with its environment variable, so two checkouts
can run side by side (e.g. all ports +10000 in the second one).
This module uses only the standard library: it runs before anything else.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

REPO_DIR = Path(__file__).resolve().parent.parent
RUN_DIR = REPO_DIR / "run"
CACHE_DIR = REPO_DIR / ".cache"
VENV_DIR = REPO_DIR / ".venv"
VENV_BIN = VENV_DIR / "bin"
DEPLOY_DIR = REPO_DIR / "deploy" / "local"

KAFKA_VERSION = "4.1.1"
KAFKA_LIB_DIR = CACHE_DIR / "kafka" / "lib"
KAFKA_POM = DEPLOY_DIR / "kafka" / "pom.xml"
FERRETDB_VERSION = "v1.24.2"
FERRETDB_SRC_DIR = CACHE_DIR / "ferretdb" / "src"
FERRETDB_BIN = CACHE_DIR / "ferretdb" / "bin" / "ferretdb"

SUPERVISORD_CONF = RUN_DIR / "supervisord.conf"
SUPERVISORD_PID = RUN_DIR / "supervisord.pid"
SUPERVISOR_SOCK = RUN_DIR / "supervisor.sock"
STACK_ENV = RUN_DIR / "stack.env"
LOG_DIR = RUN_DIR / "logs"

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Port:
    key: str  # short name used in code
    env: str  # environment variable that overrides it
    default: int
    label: str  # what a human calls it in messages


PORTS = [
    Port("gateway", "SANDESH_GATEWAY_PORT", 8080, "gateway"),
    Port("tracking", "SANDESH_TRACKING_PORT", 8081, "tracking"),
    Port("contacts", "SANDESH_CONTACTS_PORT", 8082, "contacts"),
    Port("campaigns", "SANDESH_CAMPAIGNS_PORT", 8083, "campaigns"),
    Port("privacy", "SANDESH_PRIVACY_PORT", 8084, "privacy"),
    Port("sender", "SANDESH_SENDER_PORT", 8085, "sender health/metrics"),
    Port("contacts_worker", "SANDESH_CONTACTS_WORKER_PORT", 8091, "contacts worker health/metrics"),
    Port("campaigns_worker", "SANDESH_CAMPAIGNS_WORKER_PORT", 8092,
         "campaigns worker health/metrics"),
    Port("tracking_worker", "SANDESH_TRACKING_WORKER_PORT", 8093, "tracking worker health/metrics"),
    Port("privacy_worker", "SANDESH_PRIVACY_WORKER_PORT", 8094, "privacy worker health/metrics"),
    Port("smtp", "SANDESH_SMTP_PORT", 2525, "SMTP sink"),
    Port("kafka", "SANDESH_KAFKA_PORT", 9092, "Kafka"),
    Port("kafka_controller", "SANDESH_KAFKA_CONTROLLER_PORT", 9093, "Kafka controller"),
    Port("mongo", "SANDESH_MONGO_PORT", 27017, "FerretDB"),
    Port("ferretdb_debug", "SANDESH_FERRETDB_DEBUG_PORT", 8088, "FerretDB debug"),
    Port("supervisor", "SANDESH_SUPERVISOR_PORT", 9001, "supervisord"),
]
PORTS_BY_KEY = {p.key: p for p in PORTS}
PORTS_BY_KEY_BY_ENV = {p.env: p for p in PORTS}

INFRA_PORT_KEYS = ["kafka", "kafka_controller", "mongo", "ferretdb_debug", "smtp"]

# Sandesh services: (name, has web app, has Kafka worker).
WEB_SERVICES = ["gateway", "contacts", "campaigns", "tracking", "privacy"]
WORKER_SERVICES = ["contacts", "campaigns", "tracking", "privacy"]
SERVICE_GROUPS = ["gateway", "contacts", "campaigns", "tracking", "privacy", "sender"]
INFRA_PROGRAMS = ["kafka", "ferretdb", "smtp-sink"]
WEB_WORKERS = {"gateway": 2, "tracking": 2}  # gunicorn workers; others get 1


class ConfigError(Exception):
    """A setting from the environment is unusable; the message says which."""


def _int_env(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is out of range ({low}..{high})")
    return value


def ports_from_environ() -> dict[str, int]:
    """Port per key, from the environment or the defaults."""
    ports = {p.key: _int_env(p.env, p.default, 1, 65535) for p in PORTS}
    seen: dict[int, str] = {}
    for p in PORTS:
        if ports[p.key] in seen:
            raise ConfigError(
                f"{p.env} and {seen[ports[p.key]]} are both {ports[p.key]}: give them different ports"
            )
        seen[ports[p.key]] = p.env
    return ports


def senders_from_environ() -> int:
    return _int_env("SANDESH_SENDERS", 1, 1, 16)


def only_infra() -> bool:
    return os.environ.get("SANDESH_ONLY_INFRA", "").strip().lower() in ("1", "true", "yes")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an expected failure for a human (no traceback) and exit."""
    print(f"\n✗ {message}", file=sys.stderr)
    raise SystemExit(code)
