"""Personal data helpers every service shares, so that an address is
normalised and hashed the same way everywhere (contacts' suppression list,
privacy requests, the sender's re-check at send time).

`email-validator` checks syntax, IDN and lengths per the RFCs; it is never
asked to look up DNS (no network in tests, and a send-time DNS check belongs
to the SMTP relay)."""
from __future__ import annotations

import hashlib
import hmac

from email_validator import EmailNotValidError, validate_email


class InvalidEmail(ValueError):
    pass


def normalise_email(raw: str) -> str:
    """Trimmed, domain lower-cased (IDN in its Unicode form), local part kept
    as typed: local parts are case-sensitive by the RFC, and providers that
    fold case do it on their side."""
    if not isinstance(raw, str):
        raise InvalidEmail("not a string")
    candidate = raw.strip()
    try:
        result = validate_email(candidate, check_deliverability=False,
                                allow_smtputf8=True, allow_quoted_local=False,
                                strict=True)  # RFC 5321 length of the local part
    except EmailNotValidError as exc:
        raise InvalidEmail(str(exc)) from None
    return f"{result.local_part}@{result.domain.lower()}"


def email_hash(normalised: str, salt: str) -> str:
    """A keyed hash of an address: what the suppression list and privacy
    requests keep instead of the address. The local part is compared
    case-insensitively here so that Jane@ and jane@ suppress each other."""
    local, _, domain = normalised.rpartition("@")
    key = f"{local.lower()}@{domain.lower()}".encode()
    return hmac.new(salt.encode(), key, hashlib.sha256).hexdigest()


def email_domain(normalised: str) -> str:
    return normalised.rpartition("@")[2]
