"""MIME without EmailMessage on the hot path.

Building and serialising one `EmailMessage` costs ~0.8 ms, more than the
whole per-message budget. A campaign's messages differ only in a few header
values and the two bodies, so `Skeleton` prepares the constant bytes once
per campaign (From, Reply-To, Feedback-ID, MIME-Version, the boundary and
the part headers) and `Skeleton.build` fills the rest per recipient:
headers encoded as RFC 2047 encoded-words when they are not ASCII (or as
raw UTF-8 per RFC 6532 when the message needs SMTPUTF8 anyway, i.e. when an
address is not ASCII), bodies as quoted-printable via binascii (C speed).

The standard library's `email` package (policy=default) is the reference:
tests/unit/sender/test_mime.py parses what this writes and compares it,
header by header and part by part, to the same message built with
EmailMessage.
"""
from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass

from shared.header_text import HEADER_CONTROLS

CRLF = "\r\n"
# RFC 2047 section 2: a line holding an encoded-word is at most 76 characters
# (RFC 5322's 78 is for the others; one limit keeps it simple).
MAX_LINE = 76
# An encoded-word is at most 75 characters: "=?utf-8?b?" + text + "?=" leaves
# 63 for base64, i.e. 45 bytes of UTF-8 (never split inside a character);
# on a continuation line (" " + 72 characters) that fits in 76.
_WORD_BYTES = 45
_WORD_OVERHEAD = len("=?utf-8?b??=")
_SPECIALS = set('()<>[]:;@\\,."')


class HeaderInjection(ValueError):
    """A header value carried CR or LF: refused, never folded or stripped."""


def refuse_line_breaks(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise HeaderInjection(f"{name} contains a line break")
    return value


def _without_controls(value: str) -> str:
    """Merge data (a name imported with an ESC in it) may bring a control
    character the template could not: blanked, never written raw."""
    return HEADER_CONTROLS.sub(" ", value) if HEADER_CONTROLS.search(value) else value


def needs_smtputf8(*addresses: str) -> bool:
    """Whether the message must go with SMTPUTF8: an address (domains given
    in their ASCII form, shared/idn.py) still not ASCII, i.e. its mailbox part."""
    return not all(a.isascii() for a in addresses)


def _first_word_bytes(name: str) -> int:
    """The UTF-8 bytes the first encoded-word can hold beside `Name: `
    within MAX_LINE (`Subject: ` and a whole 72-character word made 81)."""
    room = MAX_LINE - len(name) - 2 - _WORD_OVERHEAD
    return max(3, min(_WORD_BYTES, room // 4 * 3))


def _encoded_words(text: str, first_bytes: int = _WORD_BYTES) -> list[str]:
    words, chunk, size, limit = [], [], 0, first_bytes
    for char in text:
        n = len(char.encode())
        if size + n > limit and chunk:
            words.append(chunk)
            chunk, size, limit = [], 0, _WORD_BYTES
        chunk.append(char)
        size += n
    if chunk:
        words.append(chunk)
    return ["=?utf-8?b?" + base64.b64encode("".join(c).encode()).decode("ascii") + "?="
            for c in words]


def _fold(name: str, pieces: list[str]) -> str:
    """`Name: piece piece ...`, breaking lines before a space so that no line
    exceeds MAX_LINE characters where it can be helped. Each piece after the
    first starts with the whitespace that separates it from the previous one.
    A piece of whitespace alone (two spaces in a row) stays at the end of its
    line: as a line of its own it is one a relay that trims trailing spaces
    turns into the blank line that ends the headers."""
    lines, line = [], f"{name}:"
    for piece in pieces:
        if len(line) + len(piece) > MAX_LINE and line.strip() != f"{name}:" and piece.strip():
            lines.append(line)
            line = piece if piece[:1] in (" ", "\t") else " " + piece
        else:
            line += piece
    lines.append(line)
    return CRLF.join(lines) + CRLF


def _plain_ascii(value: str) -> bool:
    # "=?" could be read back as an encoded-word; very long words cannot fold.
    return value.isascii() and "=?" not in value and all(len(w) < 900 for w in value.split(" "))


def _plain_utf8(value: str) -> bool:
    """Raw UTF-8 (RFC 6532) folds only at spaces: a word over ~900 bytes
    (400 CJK characters without a space) made a line past RFC 5322's 998."""
    return "=?" not in value and all(len(w.encode()) < 900 for w in value.split(" "))


def unstructured(name: str, value: str, utf8: bool = False) -> str:
    """A header such as Subject, folded (and encoded when not ASCII)."""
    value = _without_controls(refuse_line_breaks(name, value))
    if _plain_ascii(value) or (utf8 and _plain_utf8(value)):
        words = value.split(" ")
        return _fold(name, [" " + words[0]] + [" " + w for w in words[1:]])
    return _fold(name, [" " + w for w in _encoded_words(value, _first_word_bytes(name))])


def _phrase(name: str, display: str, utf8: bool) -> list[str]:
    if _plain_ascii(display) or (utf8 and _plain_utf8(display)):
        if any(c in _SPECIALS for c in display) or display != display.strip() or "  " in display:
            return [' "' + display.replace("\\", "\\\\").replace('"', '\\"') + '"']
        return [" " + w for w in display.split(" ")]
    return [" " + w for w in _encoded_words(display, _first_word_bytes(name))]


def address(name: str, display: str | None, addr: str, utf8: bool = False) -> str:
    """`Name: Display <addr>`; the address itself is never encoded (RFC 6532
    puts a non-ASCII one in the header as UTF-8, hence SMTPUTF8)."""
    refuse_line_breaks(name, addr)
    if any(c in addr for c in '<>," ') or addr.count("@") != 1:
        raise HeaderInjection(f"{name} is not a single address")
    if not display:
        return _fold(name, [f" {addr}"])
    display = _without_controls(refuse_line_breaks(name, display))
    return _fold(name, _phrase(name, display, utf8) + [f" <{addr}>"])


def quoted_printable(text: str) -> bytes:
    """UTF-8, quoted-printable, CRLF line ends, ending with a line break."""
    normal = text.replace("\r\n", "\n").replace("\r", "\n")
    if not normal.endswith("\n"):
        normal += "\n"
    return binascii.b2a_qp(normal.encode(), quotetabs=False, istext=True,
                           header=False).replace(b"\n", b"\r\n")


@dataclass(frozen=True)
class Part:
    content_type: str  # "text/plain" or "text/html"
    body: str


class Skeleton:
    """The constant bytes of one campaign's messages."""

    def __init__(self, from_name: str | None, from_email: str, reply_to: str | None = None,
                 constant_headers: list[tuple[str, str]] = ()):
        self.from_email = from_email
        # the campaign's own addresses: their domains in ASCII form (shared/idn.py)
        self._utf8_always = needs_smtputf8(from_email, reply_to or "")
        self._from = {u: address("From", from_name, from_email, u or self._utf8_always)
                      for u in (False, True)}
        self._reply_to = {u: address("Reply-To", None, reply_to, u) if reply_to else ""
                          for u in (False, True)}
        self._constant = {u: "".join(unstructured(n, v, u) for n, v in constant_headers)
                          for u in (False, True)}
        self.boundary = "==sandesh-" + secrets.token_hex(12) + "=="
        b = self.boundary.encode()
        self._mime_headers = (f"MIME-Version: 1.0{CRLF}Content-Type: multipart/alternative;"
                              f' boundary="{self.boundary}"{CRLF}{CRLF}').encode()
        self._part_heads = {
            kind: b"--" + b + (f"{CRLF}Content-Type: {kind}; charset=\"utf-8\"{CRLF}"
                               f"Content-Transfer-Encoding: quoted-printable{CRLF}{CRLF}").encode()
            for kind in ("text/plain", "text/html")}
        self._close = b"--" + b + b"--" + CRLF.encode()

    def needs_smtputf8(self, to_email: str) -> bool:
        """Whether a message to `to_email` has an address that is not ASCII."""
        return self._utf8_always or not to_email.isascii()

    def build(self, *, to_name: str | None, to_email: str, subject: str, date: str,
              message_id: str, headers: list[tuple[str, str]], parts: list[Part]) -> bytes:
        """The whole message (headers, then multipart/alternative, plain first)."""
        utf8 = self.needs_smtputf8(to_email)
        head = [self._from[utf8],
                address("To", to_name, to_email, utf8),
                unstructured("Subject", subject, utf8),
                f"Date: {refuse_line_breaks('Date', date)}{CRLF}",
                f"Message-ID: {refuse_line_breaks('Message-ID', message_id)}{CRLF}",
                self._reply_to[utf8]]
        head.extend(unstructured(n, v, utf8) for n, v in headers)
        head.append(self._constant[utf8])
        out = ["".join(head).encode(), self._mime_headers]
        for part in parts:
            out.append(self._part_heads[part.content_type])
            out.append(quoted_printable(part.body))
            out.append(b"\r\n")  # the CRLF before a boundary belongs to the boundary
        out.append(self._close)
        return b"".join(out)
