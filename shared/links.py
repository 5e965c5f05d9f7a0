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
and such links stay as they are.
"""
from __future__ import annotations

import html as html_lib
import re
from typing import Callable
from urllib.parse import quote

from shared import tracking_tokens

# An <a ...> tag's href attribute, quoted either way. Template engines emit
# well-formed attributes; anything else is left untouched.
# Neither part crosses a "<" or ">": "<a " repeated with no ">" made the
# search from each "<a" run to the end of the document (120 KB took 87 s,
# holding the GIL, at save, at launch and in the sender).
_HREF = re.compile(r"""(<a\b[^<>]*?\bhref\s*=\s*)(["'])([^<>]*?)\2""", re.IGNORECASE)
_TRACKABLE = re.compile(r"^https?://", re.IGNORECASE)
NO_TRACK_ATTR = re.compile(r"\bdata-no-track\b", re.IGNORECASE)


def _url(raw: str) -> str:
    return html_lib.unescape(raw.strip())


_PERSONAL = re.compile(r"\{\{|\{%")
# What a browser would percent-encode in an href before requesting it; the
# URL becomes a Location header, where a CR or LF from merge data would
# start a header of its own.
_URL_SAFE = "!#$%&'()*+,-./:;=?@[]_~"


def is_personal(url: str) -> bool:
    """A link list entry whose URL differs per recipient."""
    return bool(_PERSONAL.search(url))


def _trackable(tag_start: str, url: str) -> bool:
    return bool(_TRACKABLE.match(url)) and not NO_TRACK_ATTR.search(tag_start)


def extract_links(html: str) -> list[str]:
    links: list[str] = []
    for match in _HREF.finditer(html):
        url = _url(match.group(3))
        if _trackable(match.group(1), url) and url not in links:
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
        url = _url(match.group(3))
        if not _trackable(match.group(1), url) or url not in index:
            return match.group(0)
        quote = match.group(2)
        if personal_mark is not None and is_personal(url):
            return f"{match.group(1)}{quote}{personal_mark(index[url])}{match.group(3)}{quote}"
        return f"{match.group(1)}{quote}{html_lib.escape(url_for_index(index[url]), quote=True)}{quote}"

    return _HREF.sub(replace, html)


def personal_links(rendered: str, mark_prefix: str,
                   url_for: Callable[[int, str], str]) -> str:
    """Replace each rendered href marked "<mark_prefix><index>:" with
    url_for(index, the URL as rendered). A URL that is no longer a web link
    once rendered, or too long for a token, loses its mark and stays as
    rendered. `mark_prefix` must be text merge data cannot produce (the
    sender uses a random one per campaign)."""
    if mark_prefix not in rendered:
        return rendered
    marked = re.compile(r"""(["'])%s(\d+):([^<>]*?)\1""" % re.escape(mark_prefix))

    def replace(match: re.Match) -> str:
        quote, raw = match.group(1), match.group(3)
        url = personal_url(_url(raw))
        if url is None:
            return f"{quote}{raw}{quote}"
        return f"{quote}{html_lib.escape(url_for(int(match.group(2)), url), quote=True)}{quote}"

    return marked.sub(replace, rendered)


def personal_url(rendered_url: str) -> str | None:
    """The rendered URL as a browser would request it (non-ASCII, spaces
    and control characters percent-encoded), or None when it is not a web
    link or is too long to carry in a token."""
    url = quote(rendered_url, safe=_URL_SAFE)
    return url if tracking_tokens.carries(url) else None
