"""What text may go into a mail header: one line, no control character but
TAB (RFC 5322 allows no other C0 control, nor DEL). Campaigns refuses such
characters in a template's subject and sender name, contacts and the gateway
in the names they store, and the sender blanks any that merge data brings
into a rendered header. A module of its own so that a service can check a
name without loading the template engine."""
from __future__ import annotations

import re

# C0 controls but TAB, and DEL.
HEADER_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

NOT_ONE_LINE = "line breaks and control characters are not allowed"


def is_one_line(text: str) -> bool:
    """What a header value may hold: no line break, no control but TAB."""
    return "\r" not in text and "\n" not in text and not HEADER_CONTROLS.search(text)
