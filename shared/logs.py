"""JSON logs, one object per line, carrying the service name and trace id.

Personal data never belongs in a log line. Code logs ids, not addresses; as a
second line of defence the formatter masks anything shaped like an email
address before the line is written.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time

from shared.tracing import current_trace_id

# Any run of characters an address can hold, not just \w: Indic scripts'
# vowel signs are combining marks (not \w), so "पूजा@example.in" went unmasked.
# A JSON log line escapes non-ASCII as \uXXXX, taken as one character here;
# any other backslash ends the match, so the line stays valid JSON.
_CHAR = r"(?:[^\s<>()\[\],;:\"@\\]|\\u[0-9a-fA-F]{4})"
_LABEL = r"(?:[^\s<>()\[\],;:\"'@.\\/{}=?!#$%&*+^`|~]|\\u[0-9a-fA-F]{4})+"
_EMAIL = re.compile(rf"{_CHAR}+@{_LABEL}(?:\.{_LABEL})+")
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def emails_in(text: str) -> list[str]:
    """Every part of the text shaped like an address, as masking finds them
    ("Ann <ann@example.com>", "mailto:ann@example.com": the address)."""
    return _EMAIL.findall(text) if "@" in text else []


def mask_emails(text: str) -> str:
    if "@" not in text:  # most texts: skip the regex, which tries every position
        return text
    return _EMAIL.sub("<email>", text)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        trace_id = current_trace_id()
        if trace_id:
            entry["trace_id"] = trace_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return mask_emails(json.dumps(entry, default=str))


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kafka-python is chatty at INFO about every connection.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # At DEBUG these echo what they carry: pymongo each command with its
    # documents (a contact's name and fields), urllib3 each request line
    # with its query string (a search for a name). The masking above only
    # knows email addresses, so they stay at INFO whatever the level.
    for payload_echoing in ("pymongo", "urllib3"):
        logging.getLogger(payload_echoing).setLevel(max(logging.INFO, root.level))
