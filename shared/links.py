"""Links in a template, in one place for both sides of tracking.

The n-th distinct http(s) URL in an `<a href>` of the HTML (document order)
is link index n; a URL with a merge field in it is not tracked. campaigns
stores that list per template version (it travels in campaign.launched as
template.links); the sender rewrites each href to the tracking URL for its
index; tracking redirects index n back to URL n.
"""
from __future__ import annotations

import html as html_lib
import re
from typing import Callable

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


# A link with a merge field is a different URL for each recipient, and the
# link list holds one per index: tracked, every recipient was redirected to
# the template's text ("...?id={{ fields.customer_id }}"). Left untracked,
# it is rendered per recipient.
_PERSONAL = re.compile(r"\{\{|\{%")


def _trackable(tag_start: str, url: str) -> bool:
    return bool(_TRACKABLE.match(url)) and not NO_TRACK_ATTR.search(tag_start) \
        and not _PERSONAL.search(url)


def extract_links(html: str) -> list[str]:
    links: list[str] = []
    for match in _HREF.finditer(html):
        url = _url(match.group(3))
        if _trackable(match.group(1), url) and url not in links:
            links.append(url)
    return links


def rewrite_links(html: str, links: list[str], url_for_index: Callable[[int], str]) -> str:
    """Replace each trackable href with url_for_index(its index in `links`).
    A URL not in `links` (it should not happen: same template version) is
    left as it is rather than guessed."""
    index = {url: i for i, url in enumerate(links)}

    def replace(match: re.Match) -> str:
        url = _url(match.group(3))
        if not _trackable(match.group(1), url) or url not in index:
            return match.group(0)
        quote = match.group(2)
        return f"{match.group(1)}{quote}{html_lib.escape(url_for_index(index[url]), quote=True)}{quote}"

    return _HREF.sub(replace, html)
