"""The segment condition language: validated, then compiled to a MongoDB
filter by code that chooses every key and every operator itself.

    {"all": [cond, ...]}   {"any": [cond, ...]}   {"not": cond}
    {"field": "fields.city", "op": "eq", "value": "Pune"}
    {"field": "created_at", "op": "within_days", "value": 90}
    {"field": "list", "op": "subscribed", "value": "<list id>"}

Nothing the user sends becomes a key or an operator: fields and operators are
looked up in whitelists, values must be scalars of the field's type (a list of
them for `in`), and text that becomes a regular expression is escaped.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Callable

from services.contacts.domain import (CONTACT_STATUSES, FIELD_KEY, InvalidValue, coerce_field,
                                      is_a_day, is_id, prefix_range, regex_literal, search_key)

MAX_DEPTH = 6
MAX_NODES = 60
MAX_IN = 500
MAX_DAYS = 36_500

TEXT_OPS = {"eq", "ne", "in", "contains", "starts_with", "exists"}
ORDERED_OPS = {"eq", "ne", "in", "gt", "gte", "lt", "lte", "exists"}
DATE_OPS = {"gt", "gte", "lt", "lte", "within_days", "exists"}
OPS_BY_TYPE = {
    "text": TEXT_OPS,
    "number": ORDERED_OPS,
    "date": DATE_OPS,
    "boolean": {"eq", "ne", "exists"},
    "choice": {"eq", "ne", "in", "exists"},
}
LIST_OPS = {"member", "subscribed", "unsubscribed", "pending"}
# Built-in fields: name in the condition -> (stored path, type definition).
BUILTIN = {
    "email": ("email", {"type": "text"}),
    "name": ("name", {"type": "text"}),
    "status": ("status", {"type": "choice", "choices": list(CONTACT_STATUSES)}),
    "created_at": ("created_at", {"type": "date"}),
    "updated_at": ("updated_at", {"type": "date"}),
}
COMPARISON = {"ne": "$ne", "gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte"}
# Built-in text fields whose folded copy (domain.search_key) `contains` and
# `starts_with` read, as the contact search does: either case, any accent.
# Not the address: müller.de and muller.de are two domains, and an audience
# must not take in the other's people.
SEARCH_KEYS = {"name": "name_key"}


class SegmentError(ValueError):
    """Invalid condition; `path` says where (e.g. definition.all.2.op)."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class _Budget:
    """What every node of one compile shares: how many nodes so far, and
    how an address is hashed (compile_condition's `address_hash`), and whether
    the filter picks a campaign's audience (compile_condition's `audience`)."""

    def __init__(self, address_hash: Callable[[str], str | None] | None = None,
                 audience: bool = False):
        self.nodes = 0
        self.address_hash = address_hash
        self.audience = audience


def compile_condition(condition: Any, custom_fields: dict[str, dict], *,
                      list_ids: set[str] | None = None, now: datetime,
                      path: str = "definition",
                      address_hash: Callable[[str], str | None] | None = None,
                      audience: bool = False) -> dict:
    """The MongoDB filter for `condition`, or SegmentError naming the place.
    `custom_fields`: the account's declared fields by key; `list_ids`: the
    account's list ids (None: do not check that a list exists);
    `address_hash`: an address's hash, as contacts are keyed (domain.address_hash),
    for `email` eq / ne / in (None: the text as stored).

    `audience`: the filter picks whom a campaign mails. Then "member of a
    list", wherever it widens the segment (under an even number of `not`),
    takes in only the list's subscribed members: someone who unsubscribed
    from it, or never confirmed it, asked for none of its mail, and was
    mailed whenever some other list of the account kept them subscribed.
    "Not a member" still leaves out everyone on the list."""
    return _compile(condition, custom_fields, list_ids, now, path, 1,
                    _Budget(address_hash, audience), negated=False)


def lists_reaching(condition: Any, negated: bool = False) -> set[str]:
    """The lists through which a campaign to this (valid) condition reaches
    its contacts: those of its "member of" and "subscribed to" conditions
    that widen it (under an even number of `not`). A contact reached by
    "member of News" while subscribed to News and Offers is mailed because
    of News: unsubscribed from News before its message goes, it is not
    mailed (fanout.via_lists, the sender's check), whatever Offers says."""
    if not isinstance(condition, dict):
        return set()
    if "not" in condition:
        return lists_reaching(condition["not"], not negated)
    for combinator in ("all", "any"):
        if isinstance(condition.get(combinator), list):
            return set().union(*(lists_reaching(child, negated)
                                 for child in condition[combinator]))
    if condition.get("field") == "list" and condition.get("op") in ("member", "subscribed") \
            and not negated and isinstance(condition.get("value"), str):
        return {condition["value"]}
    return set()


def _compile(node, custom_fields, list_ids, now, path, depth, budget, negated) -> dict:
    budget.nodes += 1
    if budget.nodes > MAX_NODES:
        raise SegmentError(path, f"a condition has at most {MAX_NODES} parts")
    if depth > MAX_DEPTH:
        raise SegmentError(path, f"conditions nest at most {MAX_DEPTH} deep")
    if not isinstance(node, dict):
        raise SegmentError(path, "expected an object")
    keys = set(node)
    if keys in ({"all"}, {"any"}):
        combinator = "all" if "all" in node else "any"
        children = node[combinator]
        if not isinstance(children, list) or not children:
            raise SegmentError(f"{path}.{combinator}", "expected a non-empty list of conditions")
        compiled = [_compile(child, custom_fields, list_ids, now, f"{path}.{combinator}.{i}",
                             depth + 1, budget, negated) for i, child in enumerate(children)]
        return {"$and" if combinator == "all" else "$or": compiled}
    if keys == {"not"}:
        inner = _compile(node["not"], custom_fields, list_ids, now, f"{path}.not", depth + 1,
                         budget, not negated)
        return {"$nor": [inner]}
    if "field" in keys and "op" in keys and keys <= {"field", "op", "value"}:
        return _leaf(node, custom_fields, list_ids, now, path, budget.address_hash,
                     subscribed_only=budget.audience and not negated)
    raise SegmentError(path, "expected {all: [...]}, {any: [...]}, {not: ...} or "
                             "{field, op, value}")


def _leaf(node, custom_fields, list_ids, now, path, address_hash=None,
          subscribed_only=False) -> dict:
    field, op = node["field"], node["op"]
    if not isinstance(field, str):
        raise SegmentError(f"{path}.field", "expected a field name")
    if not isinstance(op, str):
        raise SegmentError(f"{path}.op", "expected an operator name")
    has_value = "value" in node
    value = node.get("value")
    if field == "list":
        return _list_leaf(op, value, list_ids, path, subscribed_only)
    stored, definition = _resolve(field, custom_fields, path)
    allowed = OPS_BY_TYPE[definition["type"]]
    if op not in allowed:
        raise SegmentError(f"{path}.op", f"{op!r} does not apply to {field}; use one of "
                                         f"{', '.join(sorted(allowed))}")
    if not has_value:
        raise SegmentError(f"{path}.value", "missing")
    vpath = f"{path}.value"
    if op == "exists":
        if not isinstance(value, bool):
            raise SegmentError(vpath, "expected true or false")
        return {stored: {"$exists": True, "$ne": None}} if value else \
            {"$or": [{stored: {"$exists": False}}, {stored: None}]}
    if op == "within_days":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_DAYS:
            raise SegmentError(vpath, f"expected a whole number of days, 1 to {MAX_DAYS}")
        return {stored: {"$gte": now - timedelta(days=value)}}
    if field == "email" and op in ("eq", "ne", "in") and address_hash is not None:
        return _address_leaf(op, value, vpath, address_hash)
    if op == "in":
        if not isinstance(value, list) or not 0 < len(value) <= MAX_IN:
            raise SegmentError(vpath, f"expected a list of 1 to {MAX_IN} values")
        return {stored: {"$in": [_scalar(definition, v, f"{vpath}.{i}") for i, v in enumerate(value)]}}
    scalar = _scalar(definition, value, vpath)
    if op == "eq":
        return {stored: scalar}
    if op in ("contains", "starts_with"):
        by_text = _text_regex(stored, op, scalar)
        if field not in SEARCH_KEYS:
            return by_text
        # A contact stored before it had keys is matched as it was, until
        # the worker's backfill (search_backfill.py) gives it its keys.
        return {"$or": [_folded(SEARCH_KEYS[field], op, scalar, vpath),
                        {SEARCH_KEYS[field]: {"$exists": False}, **by_text}]}
    if definition["type"] == "date" and op in ("lte", "gt") and is_a_day(value):
        # "on or before 2024-01-31" is the whole day (in UTC): as midnight,
        # a contact created at 15:00 that day was left out
        return {stored: {"$lt" if op == "lte" else "$gte": scalar + timedelta(days=1)}}
    return {stored: {COMPARISON[op]: scalar}}


def _address_leaf(op, value, vpath, address_hash) -> dict:
    """`email` eq / ne / in by the address's hash, as contacts are told apart:
    compared as typed, `CEO@Example.com` or `x@xn--bcher-kva.de` missed the
    contact stored as `ceo@example.com` or `x@bücher.de`, and an exclusion
    by address mailed the person it meant to leave out."""
    values = value if op == "in" else [value]
    if op == "in" and (not isinstance(value, list) or not 0 < len(value) <= MAX_IN):
        raise SegmentError(vpath, f"expected a list of 1 to {MAX_IN} addresses")
    hashes = []
    for i, item in enumerate(values):
        # an erasure's placeholder (without_address) is no contact's hash: it matches nobody
        found = item if item == ERASED else address_hash(item) if isinstance(item, str) else None
        if found is None:
            raise SegmentError(f"{vpath}.{i}" if op == "in" else vpath,
                               "expected an email address")
        hashes.append(found)
    if op == "in":
        return {"email_hash": {"$in": hashes}}
    return {"email_hash": hashes[0] if op == "eq" else {"$ne": hashes[0]}}


def _text_regex(stored: str, op: str, text: str) -> dict:
    pattern = regex_literal(text)
    return {stored: {"$regex": ("^" + pattern) if op == "starts_with" else pattern,
                     "$options": "i"}}


def _folded(key_field: str, op: str, text: str, path: str) -> dict:
    """A condition on the folded copy: "muller" finds "Müller", "istanbul"
    "İstanbul". A space at either end of the text stays one (the key has
    one between words), so "Ann " is not "Anna" nor " Lee" "Ashlee"; text
    that folds to nothing (an accent alone) is refused, as it would match
    every contact."""
    key = search_key(text)
    if not key:
        raise SegmentError(path, "nothing to match once case, accents and spaces are set aside")
    key = (" " if text[:1].isspace() else "") + key + (" " if text[-1:].isspace() else "")
    if op == "starts_with":
        return {key_field: prefix_range(key)}   # bounds an index can read
    return {key_field: {"$regex": regex_literal(key)}}


def _list_leaf(op, value, list_ids, path, subscribed_only: bool) -> dict:
    if op not in LIST_OPS:
        raise SegmentError(f"{path}.op", f"use one of {', '.join(sorted(LIST_OPS))} with list")
    if not is_id(value) or (list_ids is not None and value not in list_ids):
        raise SegmentError(f"{path}.value", "not a list of this account")
    if op == "member" and not subscribed_only:
        return {"list_ids": value}
    if op in ("member", "subscribed"):
        return {"subscribed_list_ids": value}
    return {f"lists.{value}.status": op}  # value is 32 hex digits: a safe key


def _resolve(field: str, custom_fields, path) -> tuple[str, dict]:
    if field in BUILTIN:
        return BUILTIN[field]
    prefix, dot, key = field.partition(".")
    if prefix == "fields" and dot and FIELD_KEY.match(key) and key in custom_fields:
        return f"fields.{key}", custom_fields[key]
    raise SegmentError(f"{path}.field", f"unknown field; use one of {', '.join(BUILTIN)}, list "
                                        "or fields.<custom field key>")


def _scalar(definition: dict, value: Any, path: str) -> Any:
    if isinstance(value, (dict, list)):
        raise SegmentError(path, "expected a single value")
    if definition["type"] == "text" and isinstance(value, str) and len(value) > 200:
        raise SegmentError(path, "at most 200 characters")
    try:
        coerced = coerce_field(definition, value)
    except InvalidValue as exc:
        raise SegmentError(path, str(exc)) from None
    if coerced is None:
        raise SegmentError(path, "missing")
    return coerced



ERASED = "(erased)"
# Operators whose meaning an erased address keeps when it is replaced: the
# person is no contact any more, so "is x" matched nobody and "is not x"
# everybody already. A prefix or a part of an address may be others'.
_EXACT_OPS = {"eq", "ne", "in"}


def fields_named(definition: Any) -> set[str]:
    """The `field` of every condition in the definition (fields.<key> for a
    custom field)."""
    if isinstance(definition, list):
        return set().union(*(fields_named(item) for item in definition))
    if not isinstance(definition, dict):
        return set()
    if "field" in definition:
        return {definition["field"]} if isinstance(definition["field"], str) else set()
    return set().union(*(fields_named(value) for value in definition.values()))


def without_address(definition: Any, is_their_address) -> Any:
    """The definition with the erased person's address (`is_their_address`)
    taken out of its exact conditions on `email`. Names, and any other
    value, are left: they are not unique, and a condition on "Ann Lee" may
    be about another Ann Lee."""
    if isinstance(definition, list):
        return [without_address(item, is_their_address) for item in definition]
    if not isinstance(definition, dict):
        return definition
    if "field" not in definition:
        return {key: without_address(value, is_their_address) for key, value in definition.items()}
    if definition["field"] != "email" or definition.get("op") not in _EXACT_OPS:
        return definition

    def theirs(value) -> bool:
        return isinstance(value, str) and is_their_address(value)

    value = definition.get("value")
    if isinstance(value, list):
        value = [ERASED if theirs(item) else item for item in value]
    elif theirs(value):
        value = ERASED
    return {**definition, "value": value}
