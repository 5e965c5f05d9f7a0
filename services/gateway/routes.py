"""Which service owns which part of /api/v1 (the architecture brief's table).
First match wins; the gateway itself owns accounts, keys, usage, openapi."""
from __future__ import annotations

import re

ROUTES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^/api/v1/campaigns/[^/]+/stats/?$"), "tracking"),
    (re.compile(r"^/api/v1/(lists|contacts|imports|exports|segments|fields|suppressions)(/|$)"),
     "contacts"),
    (re.compile(r"^/api/v1/(templates|campaigns)(/|$)"), "campaigns"),
    (re.compile(r"^/api/v1/privacy(/|$)"), "privacy"),
]

# Services whose OpenAPI documents make up the public contract, and which
# answer GET /api/v1/usage with their part of the account's usage.
DOCUMENTED = ["contacts", "campaigns", "tracking", "privacy"]
USAGE_PARTS = ["contacts", "campaigns"]


def owner(path: str) -> str | None:
    for pattern, service in ROUTES:
        if pattern.match(path):
            return service
    return None
