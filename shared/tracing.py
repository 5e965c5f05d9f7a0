"""The trace id that follows one piece of work through HTTP and Kafka."""
from __future__ import annotations

import contextvars
from contextlib import contextmanager

from shared.ids import unique_hex

_trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)


def new_trace_id() -> str:
    return unique_hex()


def current_trace_id() -> str | None:
    return _trace_id.get()


def ensure_trace_id() -> str:
    trace_id = _trace_id.get()
    if trace_id is None:
        trace_id = new_trace_id()
        _trace_id.set(trace_id)
    return trace_id


def set_trace_id(trace_id: str | None) -> contextvars.Token:
    return _trace_id.set(trace_id)


@contextmanager
def trace(trace_id: str | None):
    token = _trace_id.set(trace_id or new_trace_id())
    try:
        yield _trace_id.get()
    finally:
        _trace_id.reset(token)
