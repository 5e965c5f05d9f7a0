"""Links in a template, in one place for both sides of tracking.

The n-th distinct http(s) URL in an `<a href>` of the HTML (document order)
is link index n. campaigns stores that list per template version (it
travels in campaign.launched as template.links); the sender rewrites each
href to the tracking URL for its index; tracking redirects index n back to
URL n.

A URL with a merge field in it ("https://shop.example/?id={{ fields.id }}")
is a personal link: one index, a different URL for each recipient. The
sender marks it in the template (`rewrite_links(..., personal_mark=)`),
renders, and then replaces each marked href with a click URL whose signed
token carries the URL as rendered (`personal_links`); tracking redirects
there. Lists frozen before personal links were tracked do not hold them,
and such links stay as they are. A link whose scheme or host holds a merge
field is not tracked at all (literal_origin): the host would be the
recipient's data, and the click link a signed redirect to anywhere.
"""
from __future__ import annotations

import html as html_lib
import re
from typing import Callable
from urllib.parse import quote

from shared import tracking_tokens

# An <a ...> tag's href attribute, quoted either way, and the rest of the
# tag. Template engines emit well-formed attributes; anything else is left
# untouched. No part crosses a "<" or ">": "<a " repeated with no ">" made
# the search from each "<a" run to the end of the document (120 KB took
# 87 s, holding the GIL, at save, at launch and in the sender).
_HREF = re.compile(r"""(<a\b[^<>]*?(?<![\w-])href\s*=\s*)(["'])([^<>]*?)\2([^<>]*)""",
                   re.IGNORECASE)
_TRACKABLE = re.compile(r"^https?://", re.IGNORECASE)
NO_TRACK_ATTR = re.compile(r"\bdata-no-track\b", re.IGNORECASE)
# A character reference as an attribute value has it. Only those closed by
# ";": a browser leaves "&notify=1" or "&region=eu" in an href as written,
# where html.unescape read them as "¬ify=1" and "®ion=eu".
_CHARACTER_REFERENCE = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def _url(raw: str) -> str:
    return _CHARACTER_REFERENCE.sub(lambda ref: html_lib.unescape(ref.group(0)), raw.strip())


_PERSONAL = re.compile(r"\{\{|\{%")
# What a browser does to an http(s) href before requesting it (the WHATWG
# URL parser): leading and trailing spaces and controls go, tabs and line
# breaks anywhere go, a backslash before the query is a slash. The token
# must carry the URL the recipient's browser would have gone to:
# "https://shop.example\@evil.example/" is shop.example's path there, but
# evil.example's host once the backslash is percent-encoded.
_URL_EDGES = "".join(map(chr, range(0x21)))
_URL_DROPPED = str.maketrans({"\t": None, "\n": None, "\r": None})
_BACKSLASH = str.maketrans({"\\": "/"})
# Then what a browser would percent-encode; the URL becomes a Location
# header, where a control character from merge data would end the header.
_URL_SAFE = "!#$%&'()*+,-./:;=?@[]_~"
# Tracked per message at most; the rest keep the URL they rendered to. A
# loop can render thousands, each one a token to sign after the render's
# own CPU budget is spent.
MAX_PERSONAL_LINKS = 100


def is_personal(url: str) -> bool:
    """A link list entry whose URL differs per recipient."""
    return bool(_PERSONAL.search(url))


def literal_origin(url: str) -> bool:
    """Whether the link's scheme and host are written out, merge fields in
    its path, query or fragment only. "https://{{ fields.region }}.shop.example/"
    with a region of "evil.example/?" was a signed link on the client's
    tracking domain to evil.example, valid for good: such a link is not
    click-tracked (the mail links to it as rendered), and tracking follows
    none it finds in a list frozen before."""
    # As a browser reads an http(s) URL: any slashes, backslashes, tabs and
    # line breaks after the scheme are skipped ("https:///{{ x }}" is x's host)
    rest = url.split(":", 1)[1] if ":" in url else ""
    authority = re.sub(r"^[/\\\s]*", "", rest.translate(_URL_DROPPED))
    return not _PERSONAL.search(re.split(r"[/?#\\]", authority, maxsplit=1)[0])


def _trackable(tag: str, url: str) -> bool:
    return bool(_TRACKABLE.match(url)) and literal_origin(url) and not NO_TRACK_ATTR.search(tag)


def extract_links(html: str) -> list[str]:
    links: list[str] = []
    for match in _HREF.finditer(html):
        url = _url(match.group(3))
        if _trackable(match.group(1) + match.group(4), url) and url not in links:
            links.append(url)
    return links


def rewrite_links(html: str, links: list[str], url_for_index: Callable[[int], str],
                  personal_mark: Callable[[int], str] | None = None) -> str:
    """Replace each trackable href with url_for_index(its index in `links`).
    With `personal_mark`, a personal link keeps its template text behind
    personal_mark(index) instead, for `personal_links` to find once rendered.
    A URL not in `links` (a list frozen before, or another template version)
    is left as it is rather than guessed."""
    index = {url: i for i, url in enumerate(links)}

    def replace(match: re.Match) -> str:
        start, mark, raw, rest = match.groups()   # mark: the attribute's quote character
        url = _url(raw)
        if not _trackable(start + rest, url) or url not in index:
            return match.group(0)
        if personal_mark is not None and is_personal(url):
            return f"{start}{mark}{personal_mark(index[url])}{raw}{mark}{rest}"
        return f"{start}{mark}{html_lib.escape(url_for_index(index[url]), quote=True)}{mark}{rest}"

    return _HREF.sub(replace, html)


def personal_links(rendered: str, mark_prefix: str,
                   url_for: Callable[[int, str], str]) -> str:
    """Replace each rendered href marked "<mark_prefix><index>:" with
    url_for(index, the URL as rendered), for the first MAX_PERSONAL_LINKS.
    A URL that is no longer a web link once rendered, or too long for a
    token, loses its mark and stays as rendered, as do those past the limit.
    `mark_prefix` must be text merge data cannot produce (the sender uses a
    random one per campaign)."""
    if mark_prefix not in rendered:
        return rendered
    marked = re.compile(r"""(["'])%s(\d+):([^<>]*?)\1""" % re.escape(mark_prefix))
    tracked = 0

    def replace(match: re.Match) -> str:
        nonlocal tracked
        mark, raw = match.group(1), match.group(3)   # mark: the attribute's quote character
        url = personal_url(_url(raw)) if tracked < MAX_PERSONAL_LINKS else None
        if url is None:
            return f"{mark}{raw}{mark}"
        tracked += 1
        return f"{mark}{html_lib.escape(url_for(int(match.group(2)), url), quote=True)}{mark}"

    return marked.sub(replace, rendered)


def personal_url(rendered_url: str) -> str | None:
    """The rendered URL as a browser would request it, or None when it is
    not a web link or is too long to carry in a token."""
    if len(rendered_url) > tracking_tokens.MAX_PERSONAL_URL_BYTES:
        return None   # percent-encoding only lengthens it
    url = rendered_url.strip(_URL_EDGES).translate(_URL_DROPPED)
    path_end = min((at for at in (url.find("?"), url.find("#")) if at >= 0), default=len(url))
    url = url[:path_end].translate(_BACKSLASH) + url[path_end:]   # the query keeps its "\"
    url = quote(url, safe=_URL_SAFE)
    return url if tracking_tokens.carries(url) else None
