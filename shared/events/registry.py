"""Event types and their JSON Schemas: one file per type under schemas/.

The schema files are the one source of truth: the code validates with them
and the AsyncAPI document is generated from them.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from shared.events.envelope import InvalidEvent

SCHEMA_DIR = Path(__file__).parent / "schemas"
ENVELOPE_FILE = "_envelope.json"


def known_types() -> list[str]:
    return sorted(p.stem for p in SCHEMA_DIR.glob("*.json") if p.name != ENVELOPE_FILE)


@lru_cache(maxsize=None)
def schema_for(event_type: str) -> dict[str, Any]:
    path = SCHEMA_DIR / f"{event_type}.json"
    if "/" in event_type or not path.is_file():
        raise InvalidEvent(f"unknown event type {event_type!r}")
    return json.loads(path.read_text())


@lru_cache(maxsize=None)
def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / ENVELOPE_FILE).read_text()) if name == ENVELOPE_FILE \
        else schema_for(name)
    return Draft202012Validator(schema)


def _first_error(validator: Draft202012Validator, instance: Any) -> str | None:
    error = next(iter(validator.iter_errors(instance)), None)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{where}: {error.message}"


def validate(body: dict[str, Any]) -> None:
    """Raise InvalidEvent unless `body` is a valid envelope of a known type."""
    problem = _first_error(_validator(ENVELOPE_FILE), body)
    if problem:
        raise InvalidEvent(f"envelope {problem}")
    problem = _first_error(_validator(body["type"]), body["data"])
    if problem:
        raise InvalidEvent(f"{body['type']} data {problem}")
