"""Signed tracking tokens: open pixel, click, unsubscribe and VERP bounce.

The sender writes them into every message; the tracking service verifies
them. A token names the recipient's job (account, campaign, contact, job ids)
and what the link does, and is signed: a tampered token can only fail
verification, never redirect anywhere. It carries no address. A personal
link's click token carries the URL the recipient's message linked to
(shared/links.py), encrypted: merge data made it ("?email=..."), and a
token is in every request log between the recipient and tracking.

Link token bytes (then URL-safe base64 without padding):

    key id (1) | version<<4 | kind (1) | account, campaign, contact, job (4 x 16)
    | version 2: sent at (4, big-endian seconds since the epoch: when the
      sender composed the message, a few messages ahead of sending it)
    | click: link index (2, big-endian) [+ version 2, a personal link: nonce
      (12) | its URL (ASCII, 1..2,000 bytes) encrypted with ChaCha20-Poly1305
      (+16)] | unsubscribe: list flag (1) [+ list id (16)]
    | HMAC-SHA256 over everything before it, truncated to 12 bytes (96 bits)

A version 2 open token is 82 bytes (110 characters), a click token 84 (112);
version 1 (no time) 78 and 80. The sender writes version 2: the time its
message was composed lets tracking judge a hit that comes within seconds of
delivery (a scanner's) even before it has read the message's delivery.sent,
which lags behind the hits while a big campaign goes out. Both verify.

Bounce tokens go in the VERP Return-Path local part, which RFC 5321 limits
to 64 octets and which some relays lower-case. So they name the job only
(tracking knows the rest from `delivery.sent`) and use lower-case base32:

    key id (1) | version<<4 | kind (1) | job (16) | HMAC truncated to 10 bytes

which is 45 characters; "b+<token>" fits with room to spare.

Keys rotate without breaking links already sent: every key of the ring
verifies (chosen by the key id byte), only the first one signs.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

VERSION = 1            # bounce tokens, and link tokens without a time
TIMED_VERSION = 2      # link tokens with the time the message was sent
KINDS = {"open": 1, "click": 2, "unsubscribe": 3, "bounce": 4}

# Campaigns' test sends (up to five addresses) name their recipients
# "test-1".."test-5", which travel in tokens as these stand-ins (tokens
# carry 16-byte ids). Tracking counts and announces nothing for them.
TEST_SEND_RECIPIENTS = 5


def stand_in_id(value: str) -> str:
    """A 32-hex id for an id that is not one (a test send's "test-1")."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


TEST_SEND_CONTACTS = frozenset(stand_in_id(f"test-{n}") for n in range(1, TEST_SEND_RECIPIENTS + 1))
_KIND_NAMES = {code: name for name, code in KINDS.items()}

LINK_MAC_BYTES = 12
BOUNCE_MAC_BYTES = 10
MIN_KEY_BYTES = 32
MAX_LINK_INDEX = 0xFFFF
_ID_BYTES = 16
_HEADER = struct.Struct(">BB")
_BOUNCE_TOKEN_CHARS = 45  # base32 of 1 + 1 + 16 + 10 bytes, without padding
_HEX_ID = re.compile(r"^[0-9a-f]{32}$")
_KEY_ID = re.compile(r"^k?(\d{1,3})$")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_BASE32_LOWER = re.compile(r"[a-z2-7]+")
_TAIL_BYTES = {"open": (0,), "click": (2,), "unsubscribe": (1, 17)}  # after ids (and time)
_SENT_AT = struct.Struct(">I")
_NONCE_BYTES = 12
# A 2,000-byte URL makes a ~2,780-character token: within the 4,094-byte
# request line gunicorn accepts at the tracking service.
MAX_PERSONAL_URL_BYTES = 2000
_PERSONAL_URL = re.compile(r"(?i)https?://[\x21-\x7e]+")
VERP_PREFIX = "b+"


class InvalidToken(ValueError):
    """The token is malformed, truncated, tampered with or signed by an unknown key."""


@dataclass(frozen=True)
class LinkContext:
    """Who a link belongs to. Every id is 32 lower-case hex characters
    (uuid4().hex). `sent_at`: when the message was sent (epoch seconds),
    None in tokens made before version 2."""

    account_id: str
    campaign_id: str
    contact_id: str
    job_id: str
    sent_at: int | None = None

    def __post_init__(self) -> None:
        for name in ("account_id", "campaign_id", "contact_id", "job_id"):
            if not _HEX_ID.match(getattr(self, name) or ""):
                raise ValueError(f"{name} must be 32 lower-case hex characters")
        if self.sent_at is not None and not (isinstance(self.sent_at, int)
                                             and 0 <= self.sent_at < 2 ** 32):
            raise ValueError("sent_at must be whole seconds since the epoch, before 2106")


@dataclass(frozen=True)
class Claims:
    """What a verified token says.

    For kind "bounce" only `job_id` is carried (see the module docstring):
    `context` is None and the caller resolves the job from delivery records.
    """

    kind: str
    context: LinkContext | None
    link_index: int | None = None
    list_id: str | None = None
    job_id: str = ""
    key_id: int = 0
    url: str | None = None  # a personal link's URL, as its message had it


class Keyring:
    """HMAC keys by id. The first key signs; every key verifies."""

    def __init__(self, keys: list[tuple[int, bytes]]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        by_id: dict[int, bytes] = {}
        for key_id, secret in keys:
            if not 0 <= key_id <= 255:
                raise ValueError(f"key id {key_id} is outside 0..255")
            if key_id in by_id:
                raise ValueError(f"key id k{key_id} appears twice")
            if len(secret) < MIN_KEY_BYTES:
                raise ValueError(f"key k{key_id} is shorter than {MIN_KEY_BYTES} bytes")
            by_id[key_id] = secret
        self.signing_id = keys[0][0]
        self._macs = {key_id: hmac.new(secret, digestmod=hashlib.sha256)
                      for key_id, secret in by_id.items()}
        # Keys of their own for personal URLs, derived from each secret.
        self._url_ciphers = {key_id: ChaCha20Poly1305(_derived(secret, b"personal url key"))
                             for key_id, secret in by_id.items()}
        self._url_nonces = {key_id: hmac.new(_derived(secret, b"personal url nonce"),
                                             digestmod=hashlib.sha256)
                            for key_id, secret in by_id.items()}

    @classmethod
    def from_env(cls, value: str) -> "Keyring":
        """Parse "k1:<base64 32 bytes>,k0:<base64>" (SANDESH_TRACKING_KEYS)."""
        keys = []
        for position, item in enumerate(filter(None, (part.strip() for part in value.split(",")))):
            label, sep, material = item.partition(":")
            match = _KEY_ID.match(label.strip())
            if not sep or not match:
                raise ValueError(f"key #{position + 1}: expected k<0-255>:<base64>")
            keys.append((int(match.group(1)), _decode_key(material.strip(), position)))
        return cls(keys)

    def knows(self, key_id: int) -> bool:
        return key_id in self._macs

    def seal_url(self, key_id: int, url: bytes, bound_to: bytes) -> bytes:
        """nonce | ciphertext of a personal URL. The nonce is a MAC of what
        it seals (as in SIV): deterministic, and two URLs of one job and
        link (a loop's) never share one."""
        nonce_mac = self._url_nonces[key_id].copy()
        nonce_mac.update(bound_to + url)
        nonce = nonce_mac.digest()[:_NONCE_BYTES]
        return nonce + self._url_ciphers[key_id].encrypt(nonce, url, bound_to)

    def open_url(self, key_id: int, sealed: bytes, bound_to: bytes) -> bytes:
        try:
            return self._url_ciphers[key_id].decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:],
                                                     bound_to)
        except InvalidTag:
            raise InvalidToken("personal URL does not decrypt") from None

    def mac(self, key_id: int, message: bytes, size: int) -> bytes:
        # A copy of a keyed HMAC made once: 1.6 us against hmac.digest's 2.3,
        # and, unlike hmac.digest, it keeps the GIL for a short message. The
        # sender makes ten tokens per message in its composer thread, and each
        # GIL release there meant queueing to get it back behind the SMTP
        # threads (a fifth of the composer's samples in py-spy were that wait).
        mac = self._macs[key_id].copy()
        mac.update(message)
        return mac.digest()[:size]


def _derived(secret: bytes, purpose: bytes) -> bytes:
    return hmac.new(secret, purpose, hashlib.sha256).digest()


def _decode_key(material: str, position: int) -> bytes:
    padded = material + "=" * (-len(material) % 4)
    try:
        if "-" in material or "_" in material:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"key #{position + 1} is not valid base64") from exc


# ----------------------------------------------------------------- signing

def _context_bytes(ctx: LinkContext) -> bytes:
    ids = bytes.fromhex(ctx.account_id + ctx.campaign_id + ctx.contact_id + ctx.job_id)
    return ids if ctx.sent_at is None else ids + _SENT_AT.pack(ctx.sent_at)


def _sign_link(keyring: Keyring, kind: str, ctx: LinkContext, tail: bytes = b"",
               personal_url: bytes = b"") -> str:
    version = VERSION if ctx.sent_at is None else TIMED_VERSION
    message = (_HEADER.pack(keyring.signing_id, version << 4 | KINDS[kind])
               + _context_bytes(ctx) + tail)
    if personal_url:
        message += keyring.seal_url(keyring.signing_id, personal_url, message)
    raw = message + keyring.mac(keyring.signing_id, message, LINK_MAC_BYTES)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def open_token(keyring: Keyring, ctx: LinkContext) -> str:
    return _sign_link(keyring, "open", ctx)


def click_token(keyring: Keyring, ctx: LinkContext, link_index: int,
                url: str | None = None) -> str:
    """`url`: a personal link's URL as rendered for this recipient
    (shared.links.personal_url made it ASCII)."""
    if not isinstance(link_index, int) or not 0 <= link_index <= MAX_LINK_INDEX:
        raise ValueError(f"link_index must be an integer in 0..{MAX_LINK_INDEX}")
    sealed = b""
    if url is not None:
        if ctx.sent_at is None:
            raise ValueError("a personal link's token is version 2: give sent_at")
        sealed = _personal_url_bytes(url)
    return _sign_link(keyring, "click", ctx, struct.pack(">H", link_index), sealed)


def carries(url: str) -> bool:
    """Whether a click token can carry this personal URL: http(s),
    printable ASCII (no space), at most MAX_PERSONAL_URL_BYTES."""
    return len(url) <= MAX_PERSONAL_URL_BYTES and bool(_PERSONAL_URL.fullmatch(url))


def _personal_url_bytes(url: str) -> bytes:
    if not carries(url or ""):
        raise ValueError(f"a personal URL is http(s), printable ASCII, at most "
                         f"{MAX_PERSONAL_URL_BYTES} characters")
    return url.encode("ascii")


def unsubscribe_token(keyring: Keyring, ctx: LinkContext, list_id: str | None = None) -> str:
    if list_id is None:
        tail = b"\x00"
    elif _HEX_ID.match(list_id):
        tail = b"\x01" + bytes.fromhex(list_id)
    else:
        raise ValueError("list_id must be 32 lower-case hex characters or None")
    return _sign_link(keyring, "unsubscribe", ctx, tail)


def bounce_token(keyring: Keyring, ctx: LinkContext) -> str:
    message = (_HEADER.pack(keyring.signing_id, VERSION << 4 | KINDS["bounce"])
               + bytes.fromhex(ctx.job_id))
    raw = message + keyring.mac(keyring.signing_id, message, BOUNCE_MAC_BYTES)
    return base64.b32encode(raw).rstrip(b"=").decode("ascii").lower()


# ---------------------------------------------------------------- verifying

def verify(keyring: Keyring, token: str) -> Claims:
    """The claims of a genuine token; InvalidToken for anything else."""
    if not isinstance(token, str) or not token.isascii():
        raise InvalidToken("not a token")
    if len(token) == _BOUNCE_TOKEN_CHARS:
        return _verify_bounce(keyring, token)
    return _verify_link(keyring, token)


def _check_mac(keyring: Keyring, raw: bytes, mac_size: int) -> tuple[int, int, int, bytes]:
    """(key id, version, kind code, body) of a genuine token."""
    if len(raw) < _HEADER.size + mac_size:
        raise InvalidToken("truncated")
    message, mac = raw[:-mac_size], raw[-mac_size:]
    key_id, version_kind = _HEADER.unpack_from(message)
    if not keyring.knows(key_id):
        raise InvalidToken("unknown key")
    if not hmac.compare_digest(mac, keyring.mac(key_id, message, mac_size)):
        raise InvalidToken("bad signature")
    version, kind_code = version_kind >> 4, version_kind & 0x0F
    if version not in (VERSION, TIMED_VERSION) or kind_code not in _KIND_NAMES:
        raise InvalidToken("unknown version or kind")
    return key_id, version, kind_code, message[_HEADER.size:]


def _verify_link(keyring: Keyring, token: str) -> Claims:
    # Reject non-canonical encodings too: a flipped trailing bit must not
    # decode to the same bytes as the genuine token.
    if len(token) % 4 == 1 or not _BASE64URL.fullmatch(token):
        raise InvalidToken("not base64url")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("not base64url") from exc
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
        raise InvalidToken("non-canonical encoding")
    key_id, version, kind_code, body = _check_mac(keyring, raw, LINK_MAC_BYTES)
    kind = _KIND_NAMES[kind_code]
    head = 4 * _ID_BYTES + (_SENT_AT.size if version == TIMED_VERSION else 0)
    url = None
    if kind == "click" and version == TIMED_VERSION and len(body) > head + 2:
        bound_to = raw[:_HEADER.size + head + 2]
        url = _personal_url(keyring.open_url(key_id, body[head + 2:], bound_to))
        body = body[:head + 2]
    if len(body) - head not in _TAIL_BYTES.get(kind, ()):
        raise InvalidToken("wrong length for its kind")
    ids = [body[i:i + _ID_BYTES].hex() for i in range(0, 4 * _ID_BYTES, _ID_BYTES)]
    sent_at = _SENT_AT.unpack_from(body, 4 * _ID_BYTES)[0] if version == TIMED_VERSION else None
    ctx = LinkContext(*ids, sent_at=sent_at)
    tail = body[head:]
    link_index = struct.unpack(">H", tail)[0] if kind == "click" else None
    list_id = None
    if kind == "unsubscribe":
        flag = tail[0]
        if (flag, len(tail)) == (1, 17):
            list_id = tail[1:17].hex()
        elif (flag, len(tail)) != (0, 1):
            raise InvalidToken("bad list flag")
    return Claims(kind, ctx, link_index, list_id, ctx.job_id, key_id, url)


def _personal_url(raw: bytes) -> str:
    """A signed token's URL, checked again: only tokens this module made
    get here, but a redirect is the one thing a token must never get wrong."""
    try:
        url = raw.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidToken("personal URL is not ASCII") from None
    if not carries(url):
        raise InvalidToken("personal URL is not a web link")
    return url


def _verify_bounce(keyring: Keyring, token: str) -> Claims:
    if not _BASE32_LOWER.fullmatch(token):
        raise InvalidToken("not base32")
    try:
        raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("not base32") from exc
    if base64.b32encode(raw).rstrip(b"=").decode("ascii").lower() != token:
        raise InvalidToken("non-canonical encoding")
    key_id, version, kind_code, body = _check_mac(keyring, raw, BOUNCE_MAC_BYTES)
    if _KIND_NAMES[kind_code] != "bounce" or version != VERSION or len(body) != _ID_BYTES:
        raise InvalidToken("wrong kind, version or length")
    return Claims("bounce", None, None, None, body.hex(), key_id)


# ------------------------------------------------------------------ helpers

def open_url(base: str, keyring: Keyring, ctx: LinkContext) -> str:
    return f"{base.rstrip('/')}/t/o/{open_token(keyring, ctx)}"


def click_url(base: str, keyring: Keyring, ctx: LinkContext, link_index: int,
              url: str | None = None) -> str:
    return f"{base.rstrip('/')}/t/c/{click_token(keyring, ctx, link_index, url)}"


def unsubscribe_url(base: str, keyring: Keyring, ctx: LinkContext,
                    list_id: str | None = None) -> str:
    return f"{base.rstrip('/')}/u/{unsubscribe_token(keyring, ctx, list_id)}"


def verp_address(keyring: Keyring, ctx: LinkContext, bounce_domain: str) -> str:
    """The Return-Path for one job: "b+<token>@<bounce_domain>"."""
    return f"{VERP_PREFIX}{bounce_token(keyring, ctx)}@{bounce_domain}"


def parse_verp(address: str) -> str | None:
    """The bounce token in a VERP address ("b+<token>@domain", with or
    without angle brackets or a display name), or None if it is not one.
    The token is lower-cased (relays may change its case); verify() it."""
    if not address:
        return None
    match = re.search(r"(?i)\bb\+([a-z2-7]{%d})@" % _BOUNCE_TOKEN_CHARS, address)
    return match.group(1).lower() if match else None
