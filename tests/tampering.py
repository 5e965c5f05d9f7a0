"""Tokens with their end replaced, for tests that a forgery is refused.

A fixed replacement ("...AA") is sometimes the token's own end, and the
"forgery" is then the genuine token: a test that fails once in a thousand
runs. These change every replaced character."""
from __future__ import annotations


def with_end_replaced(token: str, count: int) -> str:
    """`token` with each of its last `count` characters changed."""
    kept, end = token[:-count], token[-count:]
    return kept + "".join("B" if char == "A" else "A" for char in end)
