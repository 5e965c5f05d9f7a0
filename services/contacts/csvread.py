"""Streaming CSV reading for imports: encoding and delimiter detection, header
detection, column mapping, and the byte offset after every record so that an
import resumes exactly where it stopped.

The file is read line by line in binary and each line decoded before the
csv module sees it; csv.reader pulls lines only as a record needs them
(quoted fields may span lines), so after each record the bytes consumed so far
are exactly the offset of the next record. Memory stays flat whatever the
file size: one record at a time.
"""
from __future__ import annotations

import codecs
import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable, Iterator, NamedTuple

SNIFF_BYTES = 64 * 1024
SCAN_BYTES = 1024 * 1024
MAX_LINE = 1024 * 1024          # a longer physical line is cut: that row is rejected
MAX_FIELD = 128 * 1024
MAX_RECORD_LINES = 32           # a quoted cell running longer is taken for an unclosed quote
MAX_COLUMNS = 100_000           # a mapping naming a column past this names none
DELIMITERS = ",;\t|"              # in order of preference when two split alike
SNIFF_LINES = 200
ADDRESS_ROWS = 100              # a headerless file's email column: the first of these rows with one
EMAIL_HEADERS = ("email", "e-mail", "email address", "e-mail address", "mail", "emailaddress")
NAME_HEADERS = ("name", "full name", "fullname", "contact name")
# Excel's first line naming the delimiter ("sep=;"), which Excel itself
# reads and does not show as a row.
_EXCEL_SEPARATOR = re.compile(r"sep=([,;\t|])\r?\n")
LOOKS_LIKE_EMAIL = re.compile(r"^\s*[^@\s]+@[^@\s]+\.[^@\s]+\s*$")

csv.field_size_limit(MAX_FIELD)

# A file that is not UTF-8 is read as windows-1252, as browsers read one
# labelled Latin-1 (WHATWG): Excel on Windows writes it, and its bytes
# 0x80-0x9F are € ‚ ‘ ’ “ ” – — and more, where ISO Latin-1 has invisible
# control characters. The five bytes windows-1252 leaves undefined keep
# their Latin-1 meaning.
LEGACY = "windows-1252"
LEGACY_NAMES = ("windows-1252", "latin-1")


def _c1_fallback(error: UnicodeDecodeError) -> tuple[str, int]:
    return error.object[error.start:error.end].decode("latin-1"), error.end


codecs.register_error("sandesh-c1-fallback", _c1_fallback)


def decoder(encoding: str):
    """An incremental decode function for the file's encoding."""
    if encoding in LEGACY_NAMES:
        return codecs.getincrementaldecoder("cp1252")(errors="sandesh-c1-fallback").decode
    return codecs.getincrementaldecoder(encoding)(errors="replace").decode


class MappingError(ValueError):
    """The column mapping does not fit the file; names the problem."""


@dataclass(frozen=True)
class Dialect:
    encoding: str        # "utf-8" or "windows-1252" ("latin-1" is read as windows-1252)
    bom: int             # bytes to skip at offset 0: a BOM, and Excel's "sep=" line
    delimiter: str
    has_header: bool
    newline: str = "\n"  # "\r" for a file with old Mac line endings (a lone CR)


class Unreadable(NamedTuple):
    """A record the csv module cannot read: rejected with its text as read
    (its first REJECTED_TEXT characters), so that the rejected rows show
    what to mend; they showed no cells."""
    number: int
    end_offset: int
    reason: str
    text: str = ""


REJECTED_TEXT = 1000


@dataclass(frozen=True)
class Record:
    number: int          # 1-based record number in the file (the header is record 1)
    cells: list[str]
    end_offset: int      # byte offset just after this record


@dataclass
class Mapping:
    email: int
    name: int | None = None
    fields: dict[str, int] = field(default_factory=dict)   # custom field key -> column
    width: int = 0                  # cells per row (the header's); 0: no header to go by


def detect_encoding(head: bytes) -> tuple[str, int]:
    """From the first bytes alone (see file_encoding for the whole file)."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8", len(codecs.BOM_UTF8)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the end of the sample is still UTF-8.
        if exc.start < len(head) - 3:
            return LEGACY, 0
    return "utf-8", 0


def file_encoding(stream: BinaryIO) -> str:
    """utf-8 when the file's bytes decode as UTF-8, or when its characters
    that do outnumber the bytes that do not: a UTF-8 file with a stray byte
    or two, whose rows holding them are rejected (NOT_UTF8). windows-1252
    otherwise (any byte string decodes). One stray byte used to flip the
    whole file to windows-1252: every accent in it read as mojibake
    ("RenÃ©e"), written over good contacts by an upsert. A file whose first
    accent comes after the sniffed head would otherwise import with U+FFFD
    in its cells. SCAN_BYTES chunks: memory stays flat."""
    if _all_utf8(stream):
        return "utf-8"
    valid = invalid = 0
    # surrogateescape: each byte that is not UTF-8 becomes a lone surrogate
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    stream.seek(0)
    try:
        while chunk := stream.read(SCAN_BYTES):
            valid, invalid = _count_non_ascii(utf8.decode(chunk), valid, invalid)
        valid, invalid = _count_non_ascii(utf8.decode(b"", final=True), valid, invalid)
    finally:
        stream.seek(0)
    return "utf-8" if valid > invalid else LEGACY


def _all_utf8(stream: BinaryIO) -> bool:
    utf8 = codecs.getincrementaldecoder("utf-8")()  # not decoder(): strict, to find out
    stream.seek(0)
    try:
        while chunk := stream.read(SCAN_BYTES):
            utf8.decode(chunk)
        utf8.decode(b"", final=True)
        return True
    except UnicodeDecodeError:
        return False
    finally:
        stream.seek(0)


_ESCAPED_BYTE = re.compile(r"[\udc80-\udcff]")


def _count_non_ascii(text: str, valid: int, invalid: int) -> tuple[int, int]:
    if text.isascii():
        return valid, invalid
    escaped = _ESCAPED_BYTE.subn("", text)[1]
    not_ascii = len(text) - len(text.encode("ascii", "ignore"))
    return valid + not_ascii - escaped, invalid + escaped


# The reason a row of a UTF-8 file is rejected for bytes that are not UTF-8
# (read as U+FFFD), or for the U+FFFD an earlier conversion left for them.
NOT_UTF8 = "text that is not UTF-8, as the rest of the file is: save the row's text as UTF-8"


def detect_delimiter(sample: str) -> str:
    """The delimiter that splits most of the sample's records into one same
    number of cells (more than one), then the one that gives more cells;
    a comma when none splits them. csv.Sniffer, used before, backtracks
    quadratically on some text: a 64 KB head such as `, ", ", "...` held
    the worker (and its GIL) for 9-14 s. csv.reader is linear."""
    lines = sample.splitlines()[:SNIFF_LINES]
    best, best_score = ",", (0, 0)
    for delimiter in DELIMITERS:
        try:
            widths = Counter(len(row) for row in csv.reader(lines, delimiter=delimiter) if row)
        except csv.Error:  # a cell past MAX_FIELD: not this one
            continue
        if not widths:
            continue
        width, records = widths.most_common(1)[0]
        if width > 1 and (records, width) > best_score:
            best, best_score = delimiter, (records, width)
    return best


def detect(stream: BinaryIO, delimiter: str | None = None, encoding: str | None = None,
           has_header: bool | None = None, header_names: Iterable[str] = ()) -> Dialect:
    """Detect what was not given: the encoding from the whole file, the rest
    from its first SNIFF_BYTES. A file said to be UTF-8 that is not fails
    (UnicodeError) rather than import its accents as U+FFFD, row by row unseen."""
    if encoding and codecs.lookup(encoding).name == "utf-8" and file_encoding(stream) != "utf-8":
        raise UnicodeError("the file is not UTF-8, as the import's encoding says: leave the "
                           "encoding out to have it detected, or give windows-1252")
    encoding = encoding or file_encoding(stream)
    stream.seek(0)
    head = stream.read(SNIFF_BYTES)
    stream.seek(0)
    return sniff(head, delimiter, encoding, has_header, header_names)


def sniff(head: bytes, delimiter: str | None = None, encoding: str | None = None,
          has_header: bool | None = None, header_names: Iterable[str] = ()) -> Dialect:
    """Detect what was not given, from the first bytes of the file only.

    The first row is a header when no cell of it looks like an address and
    one names a column we know: email or name in any of their spellings, or
    `header_names` (the account's custom fields, the mapping's columns).
    Any row without an address used to be taken for one, so a headerless
    file whose first address was bad lost that row without a word; now it
    is read as a row, and rejected where all can see it."""
    detected, bom = detect_encoding(head)
    encoding = encoding or detected
    text = decoder(encoding)(head[bom:])
    excel = _EXCEL_SEPARATOR.match(text)
    if excel:   # skipped with the BOM; its row was read as a header, or failed the import
        bom += len(excel.group(0))
        text = text[excel.end():]
        delimiter = delimiter or excel.group(1)
    lines = text.splitlines()
    sample = "\n".join(lines[:-1] if len(lines) > 1 else lines)   # the last line may be cut
    delimiter = delimiter or detect_delimiter(sample)
    if has_header is None:
        first = next(csv.reader([lines[0]] if lines else [""], delimiter=delimiter), [])
        known = {name.strip().lower() for name in (*EMAIL_HEADERS, *NAME_HEADERS, *header_names)}
        has_header = bool(first) and not any(LOOKS_LIKE_EMAIL.match(c) for c in first) \
            and any(cell.strip().lower() in known for cell in first)
    # Excel for Mac's "CSV (Macintosh)" ends lines with a lone CR: read as one
    # line, such a file failed saying no column looked like an address. One
    # with a final LF (an editor's) did too; a lone CR in a file of LFs is
    # a line end of its own (_Lines).
    lone_crs, lfs = _line_ends_outside_quotes(head)
    newline = "\r" if lone_crs > lfs else "\n"
    return Dialect(encoding, bom, delimiter, has_header, newline)


def _lone_cr_outside_quotes(line: bytes, quoted: bool) -> int | None:
    """Where the first CR not followed by LF, outside a quoted cell, is in
    `line` (`quoted`: the line starts inside one); None if there is none."""
    for at in range(len(line) - 1):
        byte = line[at]
        if byte == 0x22:   # '"'; a doubled one inside a cell toggles twice
            quoted = not quoted
        elif byte == 0x0D and not quoted and line[at + 1] != 0x0A:
            return at
    return None


def _line_ends_outside_quotes(head: bytes) -> tuple[int, int]:
    """(lone CRs, LFs) of `head` outside quoted cells: the parts between
    quotes alternate outside, inside (a doubled quote is an empty inside)."""
    outside = head.split(b'"')[::2]
    crs = sum(part.count(b"\r") - part.count(b"\r\n") for part in outside)
    return crs, sum(part.count(b"\n") for part in outside)


class _RunawayQuote(Exception):
    """A record ran past MAX_RECORD_LINES lines: a quote that never closed."""


class _Lines:
    """The file's physical lines from `offset`, decoded, as csv.reader pulls
    them; `ends` holds where each line of the record being read ends."""

    def __init__(self, stream: BinaryIO, encoding: str, offset: int, newline: str = "\n"):
        stream.seek(offset)
        self.stream = stream
        self.decode = decoder(encoding)
        self.position = offset
        self.ends: list[int] = []
        self.exhausted = False
        self.long_line = False   # the record being read has a line past MAX_LINE
        self.texts: list[str] = []   # the record's lines as read (for a rejected one)
        self.encoding = encoding
        self.newline = newline.encode()
        self.lf = self.newline == b"\n"
        self._read_line = stream.readline
        self._buffer = b""  # read ahead of `position`: a line's rest after a lone CR

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> str:
        if len(self.ends) >= MAX_RECORD_LINES:
            raise _RunawayQuote
        raw = self._readline()
        if not raw:
            self.exhausted = True
            raise StopIteration
        self.position += len(raw)
        if len(raw) >= MAX_LINE and not raw.endswith((self.newline, b"\r")):
            raw = self._past_long_line(raw)
        self.ends.append(self.position)
        text = self.decode(raw)
        self.texts.append(text)
        return text

    def text(self, lines: int | None = None) -> str:
        """The record's text as read (its first `lines` lines), as the
        rejected rows show it."""
        return "".join(self.texts[:lines])[:REJECTED_TEXT].rstrip("\r\n")

    def _cut_at_lone_cr(self, line: bytes) -> bytes:
        """A line of a file of LF (or CRLF) line ends, up to a lone CR
        outside quotes if it has one (the rest is read next): a stray CR
        between two rows made them one record the csv module refused
        ("new-line character seen in unquoted field"), and both rows were
        lost, shown with no cells. A CR inside a quoted cell ("1 Main
        St\rSpringfield") stays in its line: split there, a cell of many
        lines ran past MAX_RECORD_LINES."""
        cut = _lone_cr_outside_quotes(line, sum(t.count('"') for t in self.texts) % 2 == 1)
        if cut is None:
            return line
        self._buffer = line[cut + 1:]
        return line[:cut + 1]

    def _past_long_line(self, start: bytes) -> bytes:
        """A physical line over MAX_LINE: read to its end, and given to the
        csv reader as a line holding only its quotes' parity, so that a
        quoted cell it is part of still ends where it ends. Its record is
        rejected (`long_line`). Its rest had been read as a line and a row
        of its own: a 1.1 MB cell made a phantom row, and every later row's
        number was one off."""
        self.long_line = True
        self.texts.append(decoder(self.encoding)(start[:REJECTED_TEXT * 4]))
        quotes = start.count(b'"')
        while rest := self._readline():
            self.position += len(rest)
            quotes += rest.count(b'"')
            if rest.endswith((self.newline, b"\r")):
                break
        return b'"' * (quotes % 2) + self.newline

    def _readline(self) -> bytes:
        if self.lf:
            line, self._buffer = self._buffer or self._read_line(MAX_LINE), b""
            at = line.find(b"\r")
            if at != -1 and at < len(line) - 2:   # not only the CRLF line end
                return self._cut_at_lone_cr(line)
            return line
        while True:  # binary readline knows no other line end
            at = self._buffer.find(self.newline)
            if at >= 0 or len(self._buffer) >= MAX_LINE:
                cut = at + 1 if at >= 0 else MAX_LINE
                line, self._buffer = self._buffer[:cut], self._buffer[cut:]
                return line
            chunk = self.stream.read(SNIFF_BYTES)
            if not chunk:
                line, self._buffer = self._buffer, b""
                return line
            self._buffer += chunk


def records(stream: BinaryIO, dialect: Dialect, start_offset: int = 0,
            start_number: int = 0) -> Iterator[Record | Unreadable]:
    """Records from `start_offset` (0: the beginning, BOM skipped). A record
    the csv module cannot parse is yielded as Unreadable.

    A quote that opens a cell and never closes would make every line after
    it part of that cell: the rows there would be neither imported nor
    rejected. So a record that runs to the end of the file inside a quote,
    or past MAX_RECORD_LINES lines, costs its first line only (rejected),
    and reading goes on from the line after it."""
    offset = max(start_offset, dialect.bom)
    number = start_number
    while True:  # again from the line after each runaway quote
        lines = _Lines(stream, dialect.encoding, offset, dialect.newline)
        reader = csv.reader(lines, delimiter=dialect.delimiter, strict=True)
        while True:
            lines.ends.clear()
            lines.texts.clear()
            lines.long_line = False
            try:
                cells = next(reader)
            except StopIteration:
                return
            except _RunawayQuote:
                problem = f"unclosed quote: the cell runs past {MAX_RECORD_LINES} lines"
            except csv.Error as exc:
                problem = _unreadable(exc)
                if len(lines.ends) <= 1:
                    number += 1
                    yield Unreadable(number, lines.position, problem, lines.text())
                    continue
            else:
                if lines.long_line and not (lines.exhausted and len(lines.ends) > 1):
                    number += 1
                    yield Unreadable(number, lines.position, f"a line longer than {MAX_LINE} bytes",
                                     lines.text())
                    continue
                if not (lines.exhausted and len(lines.ends) > 1):
                    number += 1
                    yield Record(number, cells, lines.position)
                    continue
                problem = "unclosed quote: the cell runs to the end of the file"
            number += 1
            offset = lines.ends[0]
            yield Unreadable(number, offset, problem, lines.text(lines=1))
            break


def _unreadable(exc: csv.Error) -> str:
    """The reason given for a row the csv module refused. Text after a
    cell's closing quote (`"Ann"e`) would have been read as `Anne`, the
    quotes lost without a word: the row is rejected, and says how to mend it."""
    if "expected after" in str(exc):
        return ("unreadable row: text after a closing quote; quote the whole cell "
                "and double each quote inside it")
    return f"unreadable row: {exc}"


def header_row(stream: BinaryIO, dialect: Dialect) -> list[str]:
    if not dialect.has_header:
        return []
    for item in records(stream, dialect):
        return item.cells if isinstance(item, Record) else []
    return []


def _column(spec, header: list[str], what: str) -> int:
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 0 or (header and spec >= len(header)):
            raise MappingError(f"{what}: no column {spec}")
        return spec
    if isinstance(spec, str):
        wanted = spec.strip().lower()
        return _only(what, [i for i, name in enumerate(header) if name.strip().lower() == wanted],
                     header, f"no column named {spec!r} in the header")
    raise MappingError(f"{what}: give a column name or a 0-based column number")


def _only(what: str, columns: list[int], header: list[str], none: str) -> int:
    """The column a name finds: the first, unless the header has that very
    name twice ("city" twice: the first was taken, and the other's values
    were dropped without a word). Different spellings ("Name" and "Full
    Name") are a choice the header made: the first, as before."""
    if not columns:
        raise MappingError(f"{what}: {none}")
    names = [header[i].strip().lower() for i in columns]
    twice = [i for i, name in zip(columns, names) if names.count(name) > 1]
    if twice:
        named = ", ".join(f"{i} ({header[i].strip()!r})" for i in twice)
        raise MappingError(f"{what}: columns {named} have one name; rename all but one, or "
                           "map the column by its 0-based number")
    return columns[0]


def check_mapping(spec: dict | None, custom_fields: dict[str, dict]) -> None:
    """What can be wrong with a mapping before the file is read: its keys,
    its shape, custom fields the account does not have, columns that are
    neither a name nor a 0-based number. Raises MappingError."""
    spec = spec or {}
    unknown = set(spec) - {"email", "name", "fields"}
    if unknown:
        raise MappingError(f"unknown mapping keys: {', '.join(sorted(unknown))}")
    if "email" in spec and spec["email"] is None:  # a name's null is "no name column"
        raise MappingError("email: give a column name or a 0-based column number "
                           "(or leave email out to find it by the header)")
    fields_spec = {} if spec.get("fields") is None else spec["fields"]
    if not isinstance(fields_spec, dict):   # [] too: it was taken for {}
        raise MappingError("fields: expected {custom field key: column}")
    for key in fields_spec:
        if key not in custom_fields:
            raise MappingError(f"fields.{key}: not a custom field of this account")
    columns = [(what, spec[what]) for what in ("email", "name") if spec.get(what) is not None]
    for what, column in columns + [(f"fields.{k}", c) for k, c in fields_spec.items()]:
        if isinstance(column, bool) or not isinstance(column, (int, str)):
            raise MappingError(f"{what}: give a column name or a 0-based column number")
        # The mapping is stored with the import: a number past MongoDB's
        # 8 bytes or a lone surrogate could not be, and was a 500.
        if isinstance(column, int) and not 0 <= column < MAX_COLUMNS:
            raise MappingError(f"{what}: no column {column}")
        if isinstance(column, str) and not _storable(column):
            raise MappingError(f"{what}: a column name of at most 200 characters of text")


def _storable(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return 0 < len(name) <= 200 and "\x00" not in name


def build_mapping(header: list[str], first_row: list[str], spec: dict | None,
                  custom_fields: dict[str, dict]) -> Mapping:
    """The user's mapping ({"email": col, "name": col, "fields": {key: col}};
    a col is a header name or a 0-based number), or one guessed from the
    header (email/name columns, custom fields by key or label)."""
    check_mapping(spec, custom_fields)
    spec = spec or {}
    fields_spec = spec.get("fields") or {}
    lowered = [h.strip().lower() for h in header]
    if "email" in spec:
        email = _column(spec["email"], header, "email")
    elif header:
        email = _only("email", [i for i, h in enumerate(lowered) if h in EMAIL_HEADERS], header,
                      "no email column in the header; map one")
    else:
        matches = [i for i, c in enumerate(first_row) if LOOKS_LIKE_EMAIL.match(c)]
        if not matches:
            raise MappingError(f"email: no column of the first {ADDRESS_ROWS} rows looks like an "
                               "address; map one")
        email = matches[0]
    name = None
    if spec.get("name") is not None:
        name = _column(spec["name"], header, "name")
    elif header and "name" not in spec:
        found = [i for i, h in enumerate(lowered) if h in NAME_HEADERS]
        name = _only("name", found, header, "") if found else None
    fields = {key: _column(col, header, f"fields.{key}") for key, col in fields_spec.items()}
    if not fields_spec and header:
        for key, definition in custom_fields.items():
            names = {key, str(definition.get("label") or "").strip().lower()} - {""}
            found = [i for i, h in enumerate(lowered) if h in names and i not in (email, name)]
            if found:
                fields[key] = _only(f"fields.{key}", found, header, "")
    return Mapping(email, name, fields, len(header))
