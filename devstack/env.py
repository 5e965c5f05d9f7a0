"""run/stack.env: every variable the services and the tests need.

Secrets (operator token, internal signing secret, tracking keys, stack id) are
generated once at the first `make run` and kept in run/ until `make
clean-data`; the rest is rewritten from the ports at every start.

Tests read it with::

    from devstack.env import load_stack_env
    env = load_stack_env()          # {"SANDESH_GATEWAY_URL": "http://127.0.0.1:8080", ...}
"""
from __future__ import annotations

import base64
import os
import secrets
import shlex
from pathlib import Path

from devstack import config

OPERATOR_TOKEN_FILE = "operator-token"
SECRETS_FILE = "secrets.env"


class StackEnvMissing(RuntimeError):
    """run/stack.env does not exist: the stack was never started here."""


def _quote(value: str) -> str:
    # Plain KEY=VALUE unless the value needs quoting, so `. run/stack.env`
    # works in a shell and the file stays readable.
    return value if value and shlex.quote(value) == value else shlex.quote(value)


def parse_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        raw = raw.strip()
        values[key.strip()] = shlex.split(raw)[0] if raw[:1] in ("'", '"') else raw
    return values


def write_env_file(path: Path, values: dict[str, str], header: str, mode: int = 0o644) -> None:
    lines = [f"# {h}" if h else "#" for h in header.splitlines()]
    lines += [f"{key}={_quote(str(value))}" for key, value in values.items()]
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def load_stack_env(path: str | os.PathLike | None = None) -> dict[str, str]:
    """The variables of the running local stack, as a dict.

    Reads ``path``, else $SANDESH_STACK_ENV, else <repo>/run/stack.env.
    Raises StackEnvMissing (with what to do) when the file is not there.
    """
    target = Path(path or os.environ.get("SANDESH_STACK_ENV") or config.STACK_ENV)
    if not target.is_file():
        raise StackEnvMissing(f"{target} not found: start the local stack with `make run` first")
    return parse_env_file(target)


_SECRETS = {
    "SANDESH_STACK_ID": lambda: secrets.token_hex(8),
    "SANDESH_INTERNAL_SECRET": lambda: secrets.token_urlsafe(32),
    "SANDESH_TRACKING_KEYS": lambda: "k1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
    "SANDESH_PII_SALT": lambda: secrets.token_urlsafe(32),
    "SANDESH_BOUNCE_WEBHOOK_TOKEN": lambda: secrets.token_urlsafe(24),
}


def ensure_secrets(run_dir: Path = config.RUN_DIR) -> dict[str, str]:
    """The stack's secrets, generated on first use and then kept as they are."""
    token_file = run_dir / OPERATOR_TOKEN_FILE
    secrets_file = run_dir / SECRETS_FILE
    if not token_file.exists():
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    kept = parse_env_file(secrets_file) if secrets_file.exists() else {}
    missing = {name: generate() for name, generate in _SECRETS.items() if name not in kept}
    if missing:  # a stack made before a secret existed gets just the new one
        kept.update(missing)
        write_env_file(
            secrets_file, kept, "Generated once by devstack; kept until `make clean-data`.", 0o600
        )
    kept["SANDESH_OPERATOR_TOKEN"] = token_file.read_text().strip()
    return kept


def build_stack_env(ports: dict[str, int], kept: dict[str, str], senders: int,
                    run_dir: Path = config.RUN_DIR) -> dict[str, str]:
    h = config.HOST
    env = {
        "SANDESH_ENV": "local",
        "SANDESH_STACK_ID": kept["SANDESH_STACK_ID"],
        "SANDESH_RUN_DIR": str(run_dir),
        "SANDESH_REPO_DIR": str(config.REPO_DIR),
        "SANDESH_KAFKA_BOOTSTRAP": f"{h}:{ports['kafka']}",
        "SANDESH_MONGO_URI": f"mongodb://{h}:{ports['mongo']}/",
        "SANDESH_OPERATOR_TOKEN": kept["SANDESH_OPERATOR_TOKEN"],
        "SANDESH_OPERATOR_TOKEN_FILE": str(run_dir / OPERATOR_TOKEN_FILE),
        "SANDESH_INTERNAL_SECRET": kept["SANDESH_INTERNAL_SECRET"],
        "SANDESH_TRACKING_KEYS": kept["SANDESH_TRACKING_KEYS"],
        "SANDESH_PII_SALT": kept["SANDESH_PII_SALT"],
        "SANDESH_BOUNCE_WEBHOOK_TOKEN": kept["SANDESH_BOUNCE_WEBHOOK_TOKEN"],
        "SANDESH_SMTP_HOST": h,
        "SANDESH_SMTP_PORT": str(ports["smtp"]),
        "SANDESH_MAILDIR": str(run_dir / "maildir"),
        "SANDESH_SMTP_SINK_FAULTS": str(run_dir / "smtp-sink" / "faults.json"),
        "SANDESH_DKIM_KEY_DIR": str(run_dir / "dkim"),
        "SANDESH_GATEWAY_URL": f"http://{h}:{ports['gateway']}",
        "SANDESH_TRACKING_URL": f"http://{h}:{ports['tracking']}",
        "SANDESH_PUBLIC_TRACKING_URL": f"http://{h}:{ports['tracking']}",
        "SANDESH_CONTACTS_URL": f"http://{h}:{ports['contacts']}",
        "SANDESH_CAMPAIGNS_URL": f"http://{h}:{ports['campaigns']}",
        "SANDESH_PRIVACY_URL": f"http://{h}:{ports['privacy']}",
        "SANDESH_SENDER_URL": f"http://{h}:{ports['sender']}",
        "SANDESH_SENDERS": str(senders),
        # Every client of the local stack is 127.0.0.1, the tests' deliberate
        # 401s included: one address's 30 a minute would lock them all out.
        "SANDESH_AUTH_FAILURES_PER_MINUTE": "100000",
    }
    for p in config.PORTS:
        env[p.env] = str(ports[p.key])
    return env


def write_stack_env(env: dict[str, str], run_dir: Path = config.RUN_DIR) -> Path:
    path = run_dir / "stack.env"
    write_env_file(
        path, env,
        "Local stack environment, written by devstack at every `make run`"
        " (see docs/local-stack.md).\nUse it in a shell with: set -a; . run/stack.env; set +a",
        0o600,
    )
    return path


def ports_from_stack_env(env: dict[str, str]) -> dict[str, int]:
    return {p.key: int(env.get(p.env, p.default)) for p in config.PORTS}
