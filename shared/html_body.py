"""Where a footer or a pixel goes in an HTML message: before the last
</body> a reader's mail client sees, never inside a comment. Found in the
source text, a </body> in a comment (`<!-- </body> -->` after the real
one) took the unsubscribe link and the postal address into the comment,
where no reader sees them, and the sender, finding the link's URL in what
was rendered, added nothing."""
from __future__ import annotations

import re

_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)  # an unclosed one hides the rest
_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)


def without_comments(html: str) -> str:
    """The HTML a reader sees the text of: its comments taken out."""
    return _COMMENT.sub("", html) if "<!--" in html else html


def insert_before_body_close(html: str, snippet: str, separator: str = "",
                             hidden: list[tuple[int, int]] = ()) -> str:
    """`snippet` (then `separator`) before the last </body> outside
    comments and the `hidden` spans (start, end); at the end (after
    `separator`) when there is none."""
    comments = [m.span() for m in _COMMENT.finditer(html)] if "<!--" in html else []
    comments += hidden
    at = None
    for close in _BODY_CLOSE.finditer(html):
        if not any(start <= close.start() < end for start, end in comments):
            at = close.start()
    if at is None:
        return html + separator + snippet
    return html[:at] + snippet + separator + html[at:]
