"""Pure rules of the contacts service: statuses, custom field types and how a
value is checked against its type, membership bookkeeping. No pymongo, no
Kafka: everything here is unit-tested without a server."""
from __future__ import annotations

import re
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

from shared.pii import InvalidEmail, email_hash, normalise_email
from shared.header_text import HEADER_CONTROLS

# No "erased": an erased contact is deleted (see usecases.refuse_erased).
CONTACT_STATUSES = ("active", "bounced", "complained", "restricted")
MEMBER_STATUSES = ("pending", "subscribed", "unsubscribed")
FIELD_TYPES = ("text", "number", "date", "boolean", "choice")
CONSENT_VIA = ("api", "import", "form", "one-click", "admin", "link", "complaint", "bounce",
               "mail")
SUPPRESSION_REASONS = ("unsubscribe", "hard_bounce", "complaint", "erasure", "manual", "import")

FIELD_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
ID = re.compile(r"^[0-9a-f]{32}$")
MAX_TEXT = 500

# A name goes into the To header: a line break there makes the sender
# refuse every message to the contact (no header injection), so it is
# refused when stored (header_text.is_one_line). Tabs pass. A text field may
# hold lines (an address, a note) but no other control character.
NO_CONTROLS = "control characters other than tabs and line breaks are not allowed"
MAX_CHOICES = 100
# Each searchable field is an index of the contacts collection, which every
# account's contact writes pay for and of which MongoDB keeps at most 64.
MAX_SEARCHABLE_FIELDS = 5


def new_id() -> str:
    """Ids are uuid4 hex everywhere (the tracking token packs them as 16 bytes)."""
    return uuid.uuid4().hex


_last_ordered = [0, 0]   # the last ordered_id's millisecond and sequence number
_ordered_lock = threading.Lock()


def ordered_id() -> str:
    """32 hex digits like new_id(), but sorting by creation time (ms), for
    append-only logs that page in _id order and must read chronologically.
    A sequence number follows the time, so that ids one process makes in
    the same millisecond keep their order too: a subscribe and then an
    unsubscribe a millisecond apart read back in either order."""
    with _ordered_lock:
        millisecond = max(time.time_ns() // 1_000_000, _last_ordered[0])  # never backwards
        sequence = _last_ordered[1] + 1 if millisecond == _last_ordered[0] else 0
        if sequence > 0xFFFF:
            millisecond, sequence = millisecond + 1, 0
        _last_ordered[:] = [millisecond, sequence]
    return f"{millisecond:012x}{sequence:04x}{uuid.uuid4().hex[:16]}"


def is_id(value: Any) -> bool:
    return isinstance(value, str) and bool(ID.match(value))


def now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Address:
    email: str        # normalised
    hash: str         # keyed hash: what suppression entries keep


# \Z, not $: $ also matches before a final newline ("a\n@x.com").
_DOT_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")
_domains: dict[str, tuple[str | None, str]] = {}   # raw domain -> (normalised, or None + reason)
_DOMAIN_CACHE = 10_000


def normalised_address(raw: str) -> str:
    """shared.pii.normalise_email, with the common case made fast for imports:
    a plain ASCII local part is checked here (dot-atom, 64 characters) and the
    domain, validated by normalise_email itself, is remembered (a list has few
    distinct domains). Anything unusual goes to normalise_email; the unit
    tests prove both give the same answer."""
    candidate = raw.strip()
    local, at, host = candidate.rpartition("@")
    # email_validator lower-cases the RFC 2142 role names (Postmaster@), and
    # an IDN domain's length limit is in its ASCII form: both its own way.
    if not at or not local.isascii() or len(local) > 64 or not _DOT_ATOM.match(local) \
            or candidate != raw.strip(" \t") or not host.isascii() \
            or local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:
        return normalise_email(raw)
    known = _domains.get(host)
    if known is None:
        try:
            known = (normalise_email("x@" + host).rpartition("@")[2], "")
        except InvalidEmail as exc:
            known = (None, str(exc))
        if len(_domains) >= _DOMAIN_CACHE:
            _domains.clear()
        _domains[host] = known
    domain_part, reason = known
    if domain_part is None:
        return normalise_email(raw)   # the precise reason, for this address
    email = f"{local}@{domain_part}"
    if len(email) > 254:
        return normalise_email(raw)
    return email


def address(raw: Any, salt: str) -> Address:
    """Validate and normalise an address; raises InvalidEmail with the reason."""
    if not isinstance(raw, str) or len(raw) > 320:
        raise InvalidEmail("The address is too long." if isinstance(raw, str) else "not a string")
    email = normalised_address(raw)
    return Address(email, email_hash(email, salt))


def address_hash(text: str, salt: str) -> str | None:
    """The hash of the address this text is, or None if it is none."""
    try:
        return address(text, salt).hash
    except InvalidEmail:
        return None


class InvalidValue(ValueError):
    pass


_TRUE = {"true", "yes", "1", "y", "on"}
_FALSE = {"false", "no", "0", "n", "off"}


def coerce_field(definition: dict, value: Any, *, from_text: bool = False) -> Any:
    """Check `value` against a custom field's declared type and return it in
    the form it is stored in (dates as UTC datetimes so that ranges compare).
    `from_text`: the value comes from a CSV cell, so numbers and booleans
    arrive as strings. None clears the field."""
    if value is None or (from_text and isinstance(value, str) and value.strip() == ""):
        return None
    kind = definition["type"]
    if kind == "text":
        if not isinstance(value, str):
            raise InvalidValue("expected text")
        if len(value) > MAX_TEXT:
            raise InvalidValue(f"longer than {MAX_TEXT} characters")
        return value
    if kind == "number":
        if from_text and isinstance(value, str):
            value = number_from_text(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidValue("expected a number")
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            raise InvalidValue("expected a finite number")
        if isinstance(value, int) and abs(value) >= 2 ** 63:
            raise InvalidValue("number out of range")
        return value
    if kind == "boolean":
        if from_text and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise InvalidValue("expected true or false")
        if not isinstance(value, bool):
            raise InvalidValue("expected true or false")
        return value
    if kind == "date":
        return parse_date(value)
    if kind == "choice":
        if not isinstance(value, str) or value not in definition.get("choices", ()):
            raise InvalidValue("not one of the field's choices")
        return value
    raise InvalidValue(f"unknown field type {kind!r}")


# ASCII digits only, an optional sign, commas only as thousands separators
# (1,234,567.5), an optional decimal point and exponent. "12,50" (a decimal
# comma) is refused rather than read as 1250, and so are "1_000" and digits
# of other scripts, which float() and int() would accept.
_NUMBER = re.compile(r"[+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
                     r"|[+-]?\.[0-9]+(?:[eE][+-]?[0-9]+)?", re.ASCII)


def regex_literal(text: str) -> str:
    """`text` as a regular expression that matches it literally. re.escape
    leaves a NUL as it is, and MongoDB refuses a $regex holding one (a 500
    for every preview, export and fan-out of a segment saved with it); the
    escape sequence matches the same character."""
    return re.escape(text).replace("\x00", "\\x00")


# -- search ------------------------------------------------------------------
# A search by email or name prefix matches either case and any accent:
# "istanbul" finds "İstanbul", "muller" "Müller", "strasse" "Straße". Each
# contact keeps a folded copy of its address and name (search_keys), and a
# prefix of it is asked for as a range of strings (prefix_range), which a
# MongoDB index on (account_id, key) answers with tight bounds; a
# case-insensitive $regex cannot use them, and read every key of the account.
# contacts' `email_key` and `name_key` are written wherever `email` and `name`
# are (store.contact_document, usecases.update_contact, the import).

# Raised with every change to search_key's rules: the worker's backfill
# (search_backfill.py) then puts every contact's keys right once more.
SEARCH_KEY_RULES = 3


def search_key(text: Any) -> str | None:
    """Compatibility-decomposed, without combining marks, case-folded, with
    runs of white space as one space and none at the ends. None for what is
    not text (no name; a contact stored before a rule, e.g. a numeric name)."""
    if not isinstance(text, str):
        return None
    # A spacing accent (´ ¨ ¸ ˜) decomposes to a space and a mark: "D´Souza"
    # was two words, "d souza", and matched "Ahmed Souza". Other modifier
    # symbols (^ `) stay as they are.
    text = "".join(c for c in text if not _spacing_accent(c))
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.casefold().split())


def _spacing_accent(char: str) -> bool:
    return unicodedata.category(char) == "Sk" \
        and unicodedata.normalize("NFKD", char).startswith(" ")


def search_keys(email: Any, name: Any) -> dict[str, str | None]:
    return {"email_key": search_key(email), "name_key": search_key(name)}


def changed_search_keys(changes: dict) -> dict[str, str | None]:
    """The keys of the address and name among `changes` (a $set), and only
    theirs: a key recomputed from a contact as read could put back one a
    concurrent change of the other field had just replaced."""
    return {f"{name}_key": search_key(changes[name]) for name in ("email", "name")
            if name in changes}


def prefix_range(prefix: str) -> dict[str, str] | None:
    """The strings that start with `prefix`, as {$gte, $lt}: from the prefix
    to the prefix with its last character one code point up (MongoDB and
    SQLite compare strings as UTF-8 bytes, which is code point order). None
    for an empty prefix: every string starts with it."""
    if not prefix:
        return None
    # Nothing sorts after U+10FFFF: "a" + U+10FFFF ends where "a" does, before "b".
    stem = prefix.rstrip(chr(0x10FFFF))
    if not stem:
        return {"$gte": prefix}
    last = ord(stem[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:   # no string holds a surrogate: the next is U+E000
        last = 0xE000
    return {"$gte": prefix, "$lt": stem[:-1] + chr(last)}


def number_from_text(text: str) -> int | float:
    """A number as a CSV cell or a query string gives it."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        raise InvalidValue("expected a number such as 1234.5 or 1,234.5 (a decimal point, "
                           "not a comma)")
    plain = text.replace(",", "")
    if "." in plain or "e" in plain.lower():
        return float(plain)
    if len(plain.lstrip("+-").lstrip("0")) > 19:  # past 2**63; int() raises past 4,300 digits
        raise InvalidValue("number out of range")
    return int(plain)


def is_a_day(value: Any) -> bool:
    """A date without a time ("2024-01-31"): parse_date reads it as that
    day's midnight in UTC, and a segment's `lte` / `gt` as the whole day."""
    if isinstance(value, datetime):
        return False
    return isinstance(value, date) or (isinstance(value, str) and len(value.strip()) == 10)


def parse_date(value: Any) -> datetime:
    """An ISO 8601 date or date-time, returned in UTC; naive times are UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif not isinstance(value, str) or len(value) > 40:
        raise InvalidValue("expected an ISO 8601 date")
    else:
        text = value.strip()
        try:
            if is_a_day(text):
                parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
            else:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidValue("expected an ISO 8601 date (YYYY-MM-DD)") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    try:  # stored in UTC: 9999-12-31T23:00-05:00 is past the last year there is
        return parsed.astimezone(timezone.utc)
    except OverflowError:
        raise InvalidValue("out of range once converted to UTC") from None


def field_to_store(definition: dict, value: Any, *, from_text: bool = False) -> Any:
    """coerce_field for a value a contact will hold: no control character
    but tabs and line breaks (a segment may still look for anything). One
    with lines merged into a subject fails that contact's message alone."""
    value = coerce_field(definition, value, from_text=from_text)
    if isinstance(value, str) and HEADER_CONTROLS.search(value):
        raise InvalidValue(NO_CONTROLS)
    return value


def check_fields(definitions: dict[str, dict], values: dict, *, from_text: bool = False) -> dict:
    """Every key must be a declared field (no mass assignment); returns the
    coerced values or raises InvalidFields {key: message}."""
    problems, clean = {}, {}
    for key, value in values.items():
        definition = definitions.get(key)
        if definition is None:
            problems[key] = "not a custom field of this account"
            continue
        try:
            clean[key] = field_to_store(definition, value, from_text=from_text)
        except InvalidValue as exc:
            problems[key] = str(exc)
    if problems:
        raise InvalidFields(problems)
    return clean


class InvalidFields(ValueError):
    def __init__(self, problems: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))
        self.problems = problems


# Mail sent before an address change goes on bouncing and drawing
# complaints for a while: each is about the address the contact had then.
MAX_FORMER_ADDRESSES = 20


def former_addresses(contact: dict) -> list[dict]:
    """The contact's former address hashes once its address changes: the
    current one is added, in force until the revision the change makes."""
    kept = list(contact.get("former_addresses") or [])[-(MAX_FORMER_ADDRESSES - 1):]
    return kept + [{"hash": contact["email_hash"],
                    "until_revision": int(contact.get("revision") or 0) + 1}]


def address_at(contact: dict, revision: int | None) -> tuple[str, bool]:
    """The hash of the address the contact had at `revision` (a message's,
    delivery.sent contact_revision), and whether it is the current one.
    Unknown revision: the current address, as before revisions."""
    if revision is not None:
        for former in sorted(contact.get("former_addresses") or [],
                             key=lambda f: f["until_revision"]):
            if revision < former["until_revision"]:
                return former["hash"], False
    return contact["email_hash"], True


def membership(status: str, via: str, at: datetime, **extra) -> dict:
    return {"status": status, "via": via, "at": at, **extra}


def membership_update(list_id: str, entry: dict) -> dict:
    """The single-document update that sets one list membership, keeping the
    two index arrays (list_ids, subscribed_list_ids) in step with it."""
    update: dict = {"$set": {f"lists.{list_id}": entry}, "$addToSet": {"list_ids": list_id}}
    if entry["status"] == "subscribed":
        update["$addToSet"]["subscribed_list_ids"] = list_id
    else:
        update["$pull"] = {"subscribed_list_ids": list_id}
    return update


def plain_fields(fields: dict) -> dict:
    """Custom field values as JSON has them: a date field's value (stored as
    a datetime) in ISO 8601, as the API shows it."""
    return {key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in fields.items()}


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(cell: Any) -> str:
    """Spreadsheet formula injection: a cell that starts with = + - @ tab or
    CR is prefixed with a single quote so it is shown, never evaluated."""
    text = "" if cell is None else (cell.isoformat() if isinstance(cell, datetime) else str(cell))
    if text and text[0] in _FORMULA_STARTS:
        return "'" + text
    return text


def from_csv_safe(cell: str) -> str:
    """A cell as it was before csv_safe, so that an export imports back as
    it was: `'-5` is the number -5 again, `'-ann@x.com` the address
    -ann@x.com (not 'ann's with a quote). A value that really began with a
    quote before one of those characters loses the quote: rarer by far."""
    return cell[1:] if cell[:1] == "'" and cell[1:2] in _FORMULA_STARTS else cell
