"""The plain-text part derived from a template's HTML when none is given.

Written on the standard library's html.parser rather than pulling in
html2text (GPL) or BeautifulSoup: an email body needs only paragraphs, line
breaks, list bullets and links written out as "text (url)", and Jinja
placeholders (`{{ ... }}`, `{% ... %}`) must pass through untouched, which
they do because the parser sees them as text.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCKS = {"p", "div", "section", "article", "header", "footer", "table", "tr", "ul", "ol",
           "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "hr", "center"}
_SKIPPED = {"script", "style", "head", "title", "noscript"}
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _TextWriter(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.links: list[tuple[str, int]] = []  # (href, index of the first part inside <a>)

    def handle_starttag(self, tag, attrs):
        if tag == "body":
            self.skipping = 0  # a <head> HTML5 lets go unclosed: the text starts here
        elif tag in _SKIPPED:
            self.skipping += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in ("td", "th"):
            self.parts.append(" ")
        elif tag in _BLOCKS:
            self.parts.append("\n\n")
        elif tag == "a":
            self.links.append((dict(attrs).get("href") or "", len(self.parts)))
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.parts.append(alt)

    def handle_endtag(self, tag):
        if tag in _SKIPPED:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n\n")
        elif tag == "a" and self.links:
            href, start = self.links.pop()
            label = "".join(self.parts[start:]).strip()
            if href and not href.startswith(("#", "mailto:")) and href != label:
                self.parts.append(f" ({href})" if label else href)

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def _without_comments(html: str) -> str:
    """Comments dropped in one pass: they hold no text, and Python 3.11's
    html.parser reads each unclosed "<!--" to the end of the input again
    ("<!--" * 80000 took 57 s; CVE-2025-6069). One left open hides the rest,
    as in a browser."""
    kept, at = [], 0
    while True:
        start = html.find("<!--", at)
        if start < 0:
            kept.append(html[at:])
            return "".join(kept)
        kept.append(html[at:start])
        end = html.find("-->", start + 4)
        if end < 0:
            return "".join(kept)
        at = end + 3


def html_to_text(html: str) -> str:
    writer = _TextWriter()
    writer.feed(_without_comments(html))
    writer.close()
    lines = [_SPACES.sub(" ", line).strip() for line in "".join(writer.parts).split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip() + "\n"
