"""DKIM signing (RFC 6376) with relaxed/relaxed canonicalisation, for
RSA-SHA256 and Ed25519-SHA256 (RFC 8463), on the `cryptography` package:
OpenSSL signs an RSA-2048 message in ~0.25 ms where dkimpy's pure-Python
RSA takes ~6 ms. dkimpy stays the independent verifier in the tests.

Keys live in SANDESH_DKIM_KEY_DIR, one pair of files per selector:

    <selector>._domainkey.<domain>.pem   the private key (PKCS#8 PEM, mode 0600)
    <selector>._domainkey.<domain>.txt   the DNS TXT record to publish at
                                         <selector>._domainkey.<domain>:
                                         "v=DKIM1; k=rsa; p=<base64 public key>"

A domain with several keys (e.g. RSA and Ed25519) gets one signature each.

Which accounts may sign with a domain's keys is in the same directory:

    owners.txt    one line per domain: "<domain> <account id> [<account id> ...]"

A signature with d=<domain> is what lets a receiver take the mail as the
domain's (DMARC), so an account that put another's domain in its From got
that domain's signature until now. A domain's keys now sign only the
campaigns of the accounts listed for it; any other campaign is signed with
the platform's default sending domain (services/sender/compose.py), which
signs for every account.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from shared.idn import ascii_domain

# The headers a signature covers (those present in the message are listed).
# RFC 8058 wants List-Unsubscribe and List-Unsubscribe-Post covered.
SIGNED_HEADERS = ("from", "to", "subject", "date", "message-id", "reply-to", "cc",
                  "mime-version", "content-type", "content-transfer-encoding",
                  "list-unsubscribe", "list-unsubscribe-post", "list-id", "feedback-id")

_WSP_RUN = re.compile(rb"[ \t]+")
_WSP_BEFORE_EOL = re.compile(rb" \r\n")
_FOLD = re.compile(rb"\r\n(?=[ \t])")


class DkimKeyMissing(LookupError):
    pass


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    @property
    def algorithm(self) -> str:
        return "ed25519-sha256" if isinstance(self.private_key, ed25519.Ed25519PrivateKey) \
            else "rsa-sha256"

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            return self.private_key.sign(sha256_keeping_gil(data))  # RFC 8463 section 3
        return self.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def txt_record(self) -> str:
        public = self.private_key.public_key()
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
        der = public.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


# ------------------------------------------------------------ canonicalisation

def relaxed_body(body: bytes) -> bytes:
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    if b"\t" in body or b"  " in body or b" \r\n" in body:  # skip the regexes when idle
        body = _WSP_RUN.sub(b" ", body)
        body = _WSP_BEFORE_EOL.sub(b"\r\n", body)
    body = body.rstrip(b"\r\n")
    return body + b"\r\n" if body else b""


def relaxed_header(field: bytes) -> bytes:
    """One header field (name, colon, value, possibly folded, no final CRLF)."""
    name, _, value = field.partition(b":")
    value = _FOLD.sub(b"", value) if b"\r\n" in value else value
    if b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value)
    value = value.strip(b" \r\n")
    return name.strip().lower() + b":" + value


def split_fields(header_block: bytes) -> list[bytes]:
    """The header fields in order, each with its folds, without the final CRLF."""
    return [f for f in re.split(rb"\r\n(?![ \t])", header_block) if f]


# ---------------------------------------------------------------------- signing

# hashlib lets go of the GIL to hash 2,048 bytes or more at once. For a
# message body (~3.5 kB) that is a few microseconds of hashing, and then the
# composer queues to get the GIL back behind the SMTP threads. Fed in smaller
# pieces it keeps the GIL: the sender's CPU 0.03-0.06 ms a message less in
# four A/B pairs of bench.send.run (docs/sender-performance-log.md). A large
# body still lets other threads in, at the switch interval between pieces.
_GIL_KEEPING_PIECE = 2047


def sha256_keeping_gil(data: bytes) -> bytes:
    digest = hashlib.sha256()
    view = memoryview(data)
    for start in range(0, len(view), _GIL_KEEPING_PIECE):
        digest.update(view[start:start + _GIL_KEEPING_PIECE])
    return digest.digest()


class Signer:
    """Signs messages for the domains it has keys for."""

    def __init__(self, keys: list[DkimKey], clock=time.time,
                 owners: dict[str, frozenset[str]] | None = None):
        self.keys: dict[str, list[DkimKey]] = {}
        for key in keys:
            self.keys.setdefault(key.domain.lower(), []).append(key)
        self.clock = clock
        self.owners = owners or {}

    def has_key(self, domain: str) -> bool:
        return domain.lower() in self.keys

    def may_sign(self, domain: str, account_id: str) -> bool:
        """The domain has keys, and they are this account's (owners.txt)."""
        return self.has_key(domain) and account_id in self.owners.get(domain.lower(), ())

    def sign(self, message: bytes, domain: str) -> bytes:
        """The message with DKIM-Signature header(s) for `domain` prepended."""
        keys = self.keys.get(domain.lower())
        if not keys:
            raise DkimKeyMissing(f"no DKIM key for {domain}")
        head, sep, body = message.partition(b"\r\n\r\n")
        body_hash = base64.b64encode(sha256_keeping_gil(relaxed_body(body))).decode()
        fields = split_fields(head)
        by_name: dict[bytes, list[bytes]] = {}
        for field in fields:
            by_name.setdefault(field.partition(b":")[0].strip().lower(), []).append(field)
        names, signed = [], []
        for name in SIGNED_HEADERS:
            for field in reversed(by_name.get(name.encode(), [])):  # bottom-up (RFC 6376 5.4.2)
                names.append(name)
                signed.append(relaxed_header(field) + b"\r\n")
        signed_block = b"".join(signed)
        timestamp = int(self.clock())
        out = []
        for key in keys:
            unsigned = (f"DKIM-Signature: v=1; a={key.algorithm}; c=relaxed/relaxed;"
                        f" d={key.domain}; s={key.selector}; t={timestamp};\r\n"
                        f"\th={':'.join(names)};\r\n\tbh={body_hash};\r\n\tb=").encode()
            signature = base64.b64encode(key.sign(signed_block + relaxed_header(unsigned)))
            chunks = [signature[i:i + 72] for i in range(0, len(signature), 72)]
            out.append(unsigned + b"\r\n\t".join(chunks) + b"\r\n")
        return b"".join(out) + message


# ------------------------------------------------------------------------- keys

def _key_files(key_dir: Path, domain: str) -> list[Path]:
    return sorted(key_dir.glob(f"*._domainkey.{domain.lower()}.pem"))


def load_keys(key_dir: Path) -> list[DkimKey]:
    keys = []
    for pem in sorted(Path(key_dir).glob("*._domainkey.*.pem")):
        selector, _, domain = pem.name[:-len(".pem")].partition("._domainkey.")
        private = serialization.load_pem_private_key(pem.read_bytes(), password=None)
        if not isinstance(private, (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
            raise ValueError(f"{pem}: only RSA and Ed25519 keys are supported")
        keys.append(DkimKey(ascii_domain(domain), selector, private))  # d= of an IDN: its A-labels
    return keys


OWNERS_FILE = "owners.txt"


def load_owners(key_dir: Path) -> dict[str, frozenset[str]]:
    """{domain: the accounts whose campaigns its keys sign}, from owners.txt
    (absent: no domain is any account's)."""
    path = Path(key_dir) / OWNERS_FILE
    if not path.is_file():
        return {}
    owners: dict[str, set[str]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) < 2:
            raise ValueError(f"{path}:{number}: expected a domain and at least one account id")
        owners.setdefault(ascii_domain(words[0]), set()).update(words[1:])
    return {domain: frozenset(accounts) for domain, accounts in owners.items()}


def unowned_domains(key_dir: Path, keys: list[DkimKey], owners: dict[str, frozenset[str]],
                    default_domain: str) -> list[str]:
    """The domains with keys but no line in owners.txt (they sign for no
    account), besides the default one. Refused outright when owners.txt is
    missing: a deployment from before it, whose customers' mail would
    otherwise be signed with the platform's domain from the next send on,
    and fail the DMARC of every domain that asks for alignment."""
    others = sorted({key.domain for key in keys} - {default_domain.lower()})
    if others and not (Path(key_dir) / OWNERS_FILE).is_file():
        raise ValueError(
            f"{Path(key_dir) / OWNERS_FILE} is missing, and there are DKIM keys for "
            f"{', '.join(others)}: a domain's keys sign only for the accounts listed there. "
            "Write one line per domain, '<domain> <account id> [<account id> ...]' "
            "(docs/sender.md, DKIM), then start the sender again.")
    return [domain for domain in others if domain not in owners]


def generate_key(algorithm: str = "rsa"):
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ensure_key(key_dir: Path, domain: str, selector: str, algorithm: str = "rsa") -> bool:
    """Create a key and its TXT record file for `domain` if it has none.
    Returns True when it created one. Safe when several senders start at
    once: the key file appears atomically, and only the first one wins."""
    key_dir = Path(key_dir)
    domain = ascii_domain(domain)  # named as in DNS, where the record is published
    if _key_files(key_dir, domain):
        return False
    key_dir.mkdir(parents=True, exist_ok=True)
    key = DkimKey(domain, selector, generate_key(algorithm))
    stem = key_dir / f"{selector}._domainkey.{domain}"
    pem = key.private_key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    txt_tmp = stem.with_name(stem.name + f".txt.{os.getpid()}")
    txt_tmp.write_text(key.txt_record() + "\n")
    pem_tmp = stem.with_name(stem.name + f".pem.{os.getpid()}")
    fd = os.open(pem_tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    try:
        os.link(pem_tmp, stem.with_name(stem.name + ".pem"))
    except FileExistsError:
        return False
    else:
        os.replace(txt_tmp, stem.with_name(stem.name + ".txt"))
        return True
    finally:
        pem_tmp.unlink(missing_ok=True)
        txt_tmp.unlink(missing_ok=True)


def txt_record_lookup(key_dir: Path):
    """A DNS-TXT lookup answered from the key dir's .txt files (for verifiers
    such as dkimpy's `dnsfunc`, where no DNS is published)."""
    def lookup(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        path = Path(key_dir) / (name.rstrip(".") + ".txt")
        return path.read_text().strip().encode() if path.is_file() else None
    return lookup
