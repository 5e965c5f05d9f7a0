"""A campaign's audience names lists and a segment, which the contacts
service holds. Checked before campaigns stores the campaign: a list id of
another account, or one mistyped, was saved and sent to nobody, with only
the finished campaign's `audience_missing` to say why. The fan-out still
checks at launch (a list deleted in between), and when contacts cannot be
asked the campaign is forwarded unchecked rather than refused.
"""
from __future__ import annotations

import logging
import re

from flask import request

from services.gateway.forwarded_json import json_object
from services.gateway.store import is_id
from services.gateway.upstream import Upstreams
from shared.http.errors import ApiError, invalid_fields
from shared.http.internal_auth import Identity

CAMPAIGN_PATHS = re.compile(r"/api/v1/campaigns(/[^/]+)?")
MAX_LISTS = 50
log = logging.getLogger(__name__)


def _audience() -> dict | None:
    if request.method not in ("POST", "PATCH") or not CAMPAIGN_PATHS.fullmatch(request.path):
        return None
    audience = (json_object() or {}).get("audience")
    return audience if isinstance(audience, dict) else None


def _missing(upstreams: Upstreams, identity: Identity, kind: str, ids: list[str]) -> list[str]:
    return [each for each in ids
            if not upstreams.exists("contacts", f"/api/v1/{kind}/{each}", identity)]


def check(service: str, identity: Identity, upstreams: Upstreams) -> None:
    """A 400 naming the lists or the segment the account does not have."""
    audience = _audience() if service == "campaigns" else None
    if audience is None:
        return
    # Not an id, or too many: the campaigns schema refuses them, naming the field.
    list_ids = audience.get("list_ids")
    list_ids = [each for each in list_ids if is_id(each)] \
        if isinstance(list_ids, list) and len(list_ids) <= MAX_LISTS else []
    segment_ids = [audience["segment_id"]] if is_id(audience.get("segment_id")) else []
    try:
        lists = _missing(upstreams, identity, "lists", list(dict.fromkeys(list_ids)))
        segments = _missing(upstreams, identity, "segments", segment_ids)
    except ApiError as exc:   # contacts down or slow: the fan-out checks at launch
        log.warning("audience not checked: contacts answered %s", exc.status)
        return
    problems = {}
    if lists:
        problems["audience.list_ids"] = [f"no list {each} in the account" for each in lists]
    if segments:
        problems["audience.segment_id"] = ["no segment with this id in the account"]
    if problems:
        raise invalid_fields(problems)
