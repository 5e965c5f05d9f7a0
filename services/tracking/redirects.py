"""Where a click is sent: the link as a browser would have requested it.

The link list keeps a URL as the template wrote it: a wrapped attribute
keeps its line break and nothing is percent-encoded. A Location header must
be printable ASCII: gunicorn refuses a control character (a 500) and sends
any other character as raw 8-bit bytes. So a link that is not is cleaned as
a personal link's URL is (shared.links.personal_url), its host first put in
IDNA form as browsers send it. Done at redirect time, it covers lists frozen
before.
"""
from __future__ import annotations

import re

from shared.links import personal_url

# What tracking_tokens.carries() accepts, without its length limit: a
# static link is not carried in a token.
_SENDABLE = re.compile(r"(?i)https?://[\x21-\x7e]+")
_AUTHORITY = re.compile(r"(?i)([\x00-\x20]*https?://)([^/?#\\]*)")
_TAB_AND_LINE_BREAKS = str.maketrans("", "", "\t\r\n")


def redirect_location(url: str) -> str | None:
    """The Location for a click on `url`, or None when it is not an http(s)
    URL that can be sent as printable ASCII."""
    if _SENDABLE.fullmatch(url):
        # Sent as stored, as it always was: encoding it again could change
        # the query of a signed URL.
        return url
    ascii_host = _with_ascii_host(url.translate(_TAB_AND_LINE_BREAKS))
    return personal_url(ascii_host) if ascii_host is not None else None


def _with_ascii_host(url: str) -> str | None:
    """The URL with a non-ASCII host in IDNA form ("xn--..."), or None when
    the host is no valid IDNA name."""
    authority = _AUTHORITY.match(url)
    if authority is None or authority.group(2).isascii():
        return url
    userinfo, at, host_and_port = authority.group(2).rpartition("@")
    host, colon, port = host_and_port.partition(":")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return f"{authority.group(1)}{userinfo}{at}{host}{colon}{port}{url[authority.end():]}"
