"""The mailbox provider a delivery is reported under, on the analytics
streams and in the privacy service's aggregates.

A recipient's domain is personal data when it is their own (ann@annlee.me,
a family's domain) and points to their employer when it is a company's: it
is named only when it is one of the large consumer providers below, where
millions share it. Any other domain is reported as OTHER. The sender keeps
the real domain to itself (per-domain concurrency, the SMTP conversation).
"""
from __future__ import annotations

OTHER = "other"

# Consumer mailbox providers of millions of addresses each, by the domains
# their users' addresses end in (a provider's regional domains are its own).
PROVIDERS = frozenset({
    # Google, Microsoft, Yahoo, AOL, Apple
    "gmail.com", "googlemail.com",
    "outlook.com", "hotmail.com", "live.com", "msn.com", "hotmail.co.uk", "hotmail.fr",
    "hotmail.de", "hotmail.it", "hotmail.es", "live.co.uk", "live.fr", "outlook.fr",
    "outlook.de",
    "yahoo.com", "ymail.com", "rocketmail.com", "yahoo.co.uk", "yahoo.fr", "yahoo.de",
    "yahoo.it", "yahoo.es", "yahoo.co.jp", "yahoo.com.br", "yahoo.co.in",
    "aol.com", "aim.com",
    "icloud.com", "me.com", "mac.com",
    # independent and privacy-focused
    "proton.me", "protonmail.com", "pm.me", "fastmail.com", "zoho.com", "tutanota.com",
    "mail.com", "gmx.com", "gmx.net", "gmx.de", "web.de", "t-online.de", "freenet.de",
    # European ISPs and portals
    "orange.fr", "wanadoo.fr", "free.fr", "laposte.net", "sfr.fr", "libero.it",
    "virgilio.it", "tiscali.it", "seznam.cz", "wp.pl", "o2.pl", "onet.pl", "interia.pl",
    "btinternet.com", "sky.com", "virginmedia.com", "ziggo.nl", "telenet.be",
    # the Americas, Asia, Oceania
    "comcast.net", "verizon.net", "att.net", "sbcglobal.net", "bellsouth.net", "cox.net",
    "charter.net", "shaw.ca", "rogers.com", "uol.com.br", "bol.com.br", "terra.com.br",
    "mail.ru", "yandex.ru", "ya.ru", "rambler.ru", "qq.com", "163.com", "126.com",
    "sina.com", "naver.com", "daum.net", "rediffmail.com", "bigpond.com",
    "optusnet.com.au",
})


def provider_of(domain: str | None) -> str:
    """`domain` when it is a large provider's, else OTHER."""
    name = (domain or "").strip().rstrip(".").lower()
    return name if name in PROVIDERS else OTHER
