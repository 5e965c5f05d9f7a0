"""Cursors (shared/http/pagination.py): whatever a client sends as a cursor,
a wrong one is a 400 that names it, never a KeyError or an overflow."""
import base64
import json

import pytest

from shared.http.errors import ApiError
from shared.http.pagination import cursor_position, encode_cursor


def _raw(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_a_cursor_the_api_returned_gives_its_position_back():
    assert cursor_position(encode_cursor({"id": "c0ffee"}), "id", str) == "c0ffee"
    assert cursor_position(encode_cursor({"version": 7}), "version", int) == 7
    assert cursor_position(None, "id", str) is None and cursor_position("", "id", str) is None


@pytest.mark.parametrize("cursor,key,kind", [
    (_raw({"a": 1}), "id", str),              # decodes, but has no position
    (_raw({"id": 5}), "id", str),
    (_raw({"id": ""}), "id", str),
    (_raw({"id": "x" * 201}), "id", str),
    (_raw({"id": "\ud800"}), "id", str),     # a lone surrogate: pymongo's 500
    (_raw({"id": "a\u0000b"}), "id", str),
    (_raw({"id": "é"}), "id", str),
    (_raw({"version": 10 ** 25}), "version", int),   # more than MongoDB's 8 bytes
    (_raw({"version": -1}), "version", int),
    (_raw({"version": True}), "version", int),
    (_raw({"version": "7"}), "version", int),
    (_raw([1]), "id", str),
    (_raw({"id": "x"})[:-3] + "!!!", "id", str),
    (base64.urlsafe_b64encode(b"[" * 100_000).decode(), "id", str),
])
def test_any_other_cursor_is_a_400_naming_the_cursor(cursor, key, kind):
    with pytest.raises(ApiError) as refused:
        cursor_position(cursor, key, kind)
    assert refused.value.status == 400 and list(refused.value.details) == ["cursor"]
