"""Event types and their JSON Schemas: one file per type under schemas/.

The schema files are the one source of truth: the code validates with them
and the AsyncAPI document is generated from them.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastjsonschema
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


def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / ENVELOPE_FILE).read_text()) if name == ENVELOPE_FILE \
        else schema_for(name)


def _open(schema: Any) -> Any:
    """The schema without `additionalProperties: false`, at every level."""
    if isinstance(schema, dict):
        return {k: _open(v) for k, v in schema.items()
                if not (k == "additionalProperties" and v is False)}
    if isinstance(schema, list):
        return [_open(v) for v in schema]
    return schema


def _variant(name: str, tolerant: bool) -> dict[str, Any]:
    return _open(_schema(name)) if tolerant else _schema(name)


@lru_cache(maxsize=None)
def _validator(name: str, tolerant: bool) -> Draft202012Validator:
    return Draft202012Validator(_variant(name, tolerant))


@lru_cache(maxsize=None)
def _compiled(name: str, tolerant: bool):
    # Every message is validated on produce and on consume: fastjsonschema
    # compiles each schema to Python once and checks a message in ~4 us,
    # where jsonschema's interpreter takes ~90 us. jsonschema is kept for the
    # (rare) failure, because its message names the path.
    return fastjsonschema.compile(_variant(name, tolerant))


# Rules whose message names only properties (of the schema, or unexpected
# keys); every other message quotes the value ("'Priya Raman' is too long"),
# and this text goes to logs and to dead letters' headers.
_MESSAGES_WITHOUT_VALUES = {"required", "additionalProperties", "dependentRequired"}


def _first_error(validator: Draft202012Validator, instance: Any) -> str | None:
    error = next(iter(validator.iter_errors(instance)), None)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    if error.validator in _MESSAGES_WITHOUT_VALUES:
        return f"{where}: {error.message}"
    expected = repr(error.validator_value)
    expected = expected if len(expected) <= 120 else expected[:117] + "..."
    return f"{where}: fails {error.validator} {expected}"


def _check(name: str, instance: Any, what: str, tolerant: bool) -> None:
    try:
        _compiled(name, tolerant)(instance)
    except fastjsonschema.JsonSchemaException as exc:
        problem = _first_error(_validator(name, tolerant), instance) or exc.message
        raise InvalidEvent(f"{what} {problem}") from None


def validate(body: dict[str, Any], tolerant: bool = False) -> None:
    """Raise InvalidEvent unless `body` is a valid envelope of a known type.

    Producers are strict: a field the schema does not name is refused.
    Consumers are `tolerant` of fields they do not know (everything else is
    checked as strictly): a producer deployed with a new optional field
    before its consumers must not send their whole stream to the dead
    letters."""
    if not isinstance(body, dict):
        raise InvalidEvent("envelope (root): not an object")
    _check(ENVELOPE_FILE, body, "envelope", tolerant)
    _check(body["type"], body["data"], f"{body['type']} data", tolerant)
