"""The event envelope (CloudEvents 1.0, structured JSON) and its validation.

Every message on every topic is one envelope. `data` is validated against
the JSON Schema of the event's type (`schemas/<type>.json`) on produce and on
consume; a message that fails is an `InvalidEvent`.
"""
from shared.events.envelope import Event, InvalidEvent, decode, encode, new_event
from shared.events.registry import known_types, schema_for, validate

__all__ = ["Event", "InvalidEvent", "decode", "encode", "new_event", "known_types",
           "schema_for", "validate"]
