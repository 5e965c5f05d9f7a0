"""Helpers for the tracking end-to-end tests: the real stack, a fresh account."""
from __future__ import annotations

import time
from pathlib import Path

import requests


def new_account(gateway: str, operator_token: str, name: str) -> tuple[str, str]:
    response = requests.post(f"{gateway}/api/v1/accounts", json={"name": name},
                             headers={"Authorization": f"Bearer {operator_token}"}, timeout=20)
    assert response.status_code == 201, response.text
    body = response.json()
    return body["account"]["id"], body["api_key"]["key"]


def poll(fetch, done, timeout: float = 60.0, every: float = 0.5):
    """fetch() until done(value) or the deadline; returns the last value."""
    deadline = time.monotonic() + timeout
    value = fetch()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(every)
        value = fetch()
    return value


def operator_token(stack_env) -> str:
    path = Path(stack_env.get("SANDESH_RUN_DIR", "run")) / "operator-token"
    if not path.exists():
        path = Path(__file__).resolve().parents[2] / "run" / "operator-token"
    return stack_env.get("SANDESH_OPERATOR_TOKEN") or path.read_text().strip()
