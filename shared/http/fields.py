"""Marshmallow fields shared by the services' schemas."""
from __future__ import annotations

from datetime import timezone
from typing import Any, Callable

import marshmallow as ma

from shared.header_text import NOT_ONE_LINE, is_one_line


def documented_as(**keywords: Any) -> Callable[[Callable], Callable]:
    """Marks a validator with the JSON Schema keywords the OpenAPI document
    gives each field it validates (shared/http/openapi.py). They must not
    allow less than the validator does."""
    def mark(validator: Callable) -> Callable:
        validator.json_schema = keywords
        return validator
    return mark


# An email address field's format in the OpenAPI document: addresses with
# non-ASCII characters (RFC 6531) are taken, which JSON Schema's `email` is not.
EMAIL_ADDRESS = {"format": "idn-email"}

# header_text.is_one_line, in the regular expressions of JSON Schema (ECMA 262)
ONE_LINE_PATTERN = r"^[^\u0000-\u0008\u000a-\u001f\u007f]*$"


@documented_as(pattern=ONE_LINE_PATTERN)
def one_line(text: str | None) -> None:
    """A validator for a name that goes into a To header (a contact's, an
    account user's): one line, no control character but TAB."""
    if text is not None and not is_one_line(text):
        raise ma.ValidationError(NOT_ONE_LINE)


def not_blank(text: str | None) -> None:
    """A validator for a label shown in lists (a list's, a segment's name):
    "   " named nothing a user could tell apart."""
    if text is not None and not text.strip():
        raise ma.ValidationError("must not be blank")


class JsonBoolean(ma.fields.Boolean):
    """true or false only, in a JSON body: "no", "off" and 0 were taken as
    false ("tracking": "no" turned tracking off), "yes" and 1 as true.
    Query strings and forms keep marshmallow's text spellings."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class StrictFloat(ma.fields.Float):
    """A JSON number only: "5" and true were taken as 5.0 and 1.0, where
    every integer field refuses them (strict=True)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, (str, bool)):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class UtcDateTime(ma.fields.AwareDateTime):
    """An ISO 8601 date-time with an offset, returned in UTC. A time that
    falls outside years 1-9999 once in UTC (9999-12-31T23:00-05:00) is a
    validation error, not an overflow when it is stored."""

    default_error_messages = {"out_of_range": "Out of range once converted to UTC."}

    def _deserialize(self, value, attr, data, **kwargs):
        when = super()._deserialize(value, attr, data, **kwargs)
        try:
            return when.astimezone(timezone.utc)
        except OverflowError:
            raise self.make_error("out_of_range") from None


class UpdateSchema(ma.Schema):
    """A PATCH body: at least one field to change. An empty one changed
    nothing yet answered 200, and made a new template version each time."""

    @ma.validates_schema
    def _something_to_change(self, data, **kwargs):
        if not data:
            raise ma.ValidationError("give at least one field to change", "_body")
