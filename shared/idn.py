"""Domain names as the wire carries them: a non-ASCII domain (an IDN such
as bücher.example) in its ASCII form (xn--bcher-kva.example, IDNA 2008 with
UTS #46 mapping, as email-validator checks it), so that an address whose
mailbox part is ASCII needs neither SMTPUTF8 nor raw UTF-8 in a header, and
a Message-ID, a List-Id or DKIM's d= is plain ASCII."""
from __future__ import annotations

import idna


def ascii_domain(domain: str) -> str:
    """`domain` lower-cased, in its ASCII form. Raises ValueError (a
    UnicodeError) for a name IDNA refuses."""
    if domain.isascii():
        return domain.lower()
    return idna.encode(domain, uts46=True).decode("ascii")


def with_ascii_domain(address: str) -> str:
    """The address with its domain in ASCII form; its mailbox part as it is."""
    if address.isascii():
        return address
    local, at, domain = address.rpartition("@")
    return f"{local}@{ascii_domain(domain)}" if at else address
