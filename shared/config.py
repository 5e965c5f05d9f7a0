"""Configuration from environment variables, validated once at start-up.

A service declares what it needs with `Setting`s and calls `load(...)`; a
missing or malformed variable raises `ConfigError` naming the variable, so a
pod that is misconfigured fails at start with a readable message.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping


class ConfigError(RuntimeError):
    """A variable is missing or malformed; the message names it."""


_MISSING = object()


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[str], Any] = str
    default: Any = _MISSING
    secret: bool = False
    # Used only when SANDESH_ENV is "local" (the local stack, tests): a secret
    # such as a salt may have a development value, but production must set it.
    dev_default: Any = _MISSING


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _parse_positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("expected a positive integer")
    return value


def _parse_positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value == float("inf"):
        raise ValueError("expected a positive number")
    return value


def _parse_non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("expected a whole number >= 0")
    return value


BOOL = _parse_bool
POSITIVE_INT = _parse_positive_int
POSITIVE_FLOAT = _parse_positive_float
NON_NEGATIVE_INT = _parse_non_negative_int


class Config(dict):
    """The validated settings; attribute access for readability."""

    def __getattr__(self, item: str) -> Any:
        try:
            return self[item]
        except KeyError as exc:
            raise AttributeError(item) from exc


def load(settings: list[Setting], environ: Mapping[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    local = environ.get("SANDESH_ENV", "local") == "local"
    values = Config()
    problems = []
    for setting in settings:
        key = setting.name.removeprefix("SANDESH_").lower()
        raw = environ.get(setting.name)
        if (raw is None or raw == "") and local and setting.dev_default is not _MISSING:
            values[key] = setting.dev_default
            continue
        if raw is None or raw == "":
            if setting.default is _MISSING:
                problems.append(f"{setting.name} is not set")
                continue
            values[key] = setting.default
            continue
        try:
            values[key] = setting.parse(raw)
        except (TypeError, ValueError) as exc:
            if setting.secret:  # the parser's message may quote the value
                problems.append(f"{setting.name}=<hidden> is invalid")
            else:
                problems.append(f"{setting.name}={raw!r} is invalid: {exc}")
    if problems:
        raise ConfigError("configuration error: " + "; ".join(problems))
    return values


# Settings every service shares. Defaults are the local stack's.
COMMON = [
    Setting("SANDESH_ENV", default="local"),
    Setting("SANDESH_STACK_ID", default="unknown"),
    Setting("SANDESH_KAFKA_BOOTSTRAP", default="127.0.0.1:9092"),
    Setting("SANDESH_MONGO_URI", default="mongodb://127.0.0.1:27017/"),
    Setting("SANDESH_MONGO_DB_PREFIX", default="sandesh_"),
    Setting("SANDESH_INTERNAL_SECRET", secret=True, default=""),
    Setting("SANDESH_LOG_LEVEL", default="INFO"),
    # How long one call of a consumer loop to Kafka may hang before /healthz
    # fails (shared/heartbeat.CallWatch).
    Setting("SANDESH_KAFKA_STALL_SECONDS", POSITIVE_FLOAT, default=300.0),
]


# The public services' (tracking, the gateway): proxies in front of the
# service that append to X-Forwarded-For (1 behind ingress-nginx), so the
# client's address is read from there, not from the peer. 0 (the local
# stack) trusts no such header: anyone could forge it.
TRUSTED_PROXY_HOPS = Setting("SANDESH_TRUSTED_PROXY_HOPS", NON_NEGATIVE_INT, default=0)


def load_common(extra: list[Setting] | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    return load(COMMON + list(extra or []), environ)
