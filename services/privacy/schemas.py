"""Marshmallow schemas: the only validation and serialisation boundary."""
from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from services.privacy import domain
from shared.header_text import NOT_ONE_LINE, is_one_line
from shared.http.fields import JsonBoolean, UtcDateTime
from shared.http.pagination import PageArgs
from shared.pii import InvalidEmail, normalise_email
from shared.privacy_answers import RECTIFIABLE

ID = validate.Length(min=1, max=64)


class Subject(ma.Schema):
    email = fields.String(validate=validate.Length(max=320))
    contact_id = fields.String(validate=ID)
    user_id = fields.String(validate=ID)
    account = JsonBoolean(metadata={"description": "the whole calling account (erasure only: "
                                                      "what DELETE /api/v1/account sends)"})


CHANGE_KEY = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"
_INT64 = 2 ** 63


def _storable_change(value, nested: bool = False) -> None:
    """A rectification's new value: text, a number MongoDB can store, true or
    false, null, or (for custom fields) an object of those."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise ma.ValidationError("a number out of range")
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ma.ValidationError("not a finite number")
        return
    if isinstance(value, str):
        if len(value) > 10_000:
            raise ma.ValidationError("longer than 10000 characters")
        return
    if isinstance(value, dict) and not nested:
        for key, inner in value.items():
            # marshmallow formats the message: the key goes in as {input},
            # never into the format string ("}" in a key was a 500)
            validate.Regexp(CHANGE_KEY, error="{input!r} is not a field name")(key)
            _storable_change(inner, nested=True)
        return
    raise ma.ValidationError("expected text, a number, true, false or null"
                             + ("" if nested else ", or an object of those"))


def rectification_problems(changes: dict) -> dict[str, str]:
    """{key: what is wrong} for a rectification's changes. Custom fields are
    contacts' to check (the account's definitions are there)."""
    problems = {}
    for key, value in changes.items():
        if key not in RECTIFIABLE:
            problems[key] = f"not something a rectification changes ({', '.join(RECTIFIABLE)})"
        elif key == "email":
            try:
                normalise_email(value)
            except InvalidEmail as exc:
                problems[key] = f"not a valid address: {exc}"
        elif key == "name" and not (value is None or isinstance(value, str) and len(value) <= 200):
            problems[key] = "text of at most 200 characters, or null"
        elif key == "name" and value is not None and not is_one_line(value):
            problems[key] = NOT_ONE_LINE   # contacts refuses it: the request ended needing attention
        elif key == "fields" and not isinstance(value, dict):
            problems[key] = "an object of custom field values"
    return problems


class RequestCreate(ma.Schema):
    kind = fields.String(required=True, validate=validate.OneOf(domain.KINDS))
    subject = fields.Nested(Subject, required=True)
    reason = fields.String(validate=validate.Length(max=500))
    # rectification: contact field -> new value (name, custom fields, email)
    changes = fields.Dict(keys=fields.String(validate=validate.Regexp(CHANGE_KEY)),
                          values=fields.Raw(validate=_storable_change))
    user_id = fields.String(validate=ID, metadata={"description": "the account user acting"})

    @ma.pre_load
    def _few_changes(self, data, **kwargs):
        """At most the attributes a rectification changes (custom fields go
        under "fields"), checked before each key is: 20,000 unknown keys came
        back as a 1.9 MB error naming each."""
        changes = data.get("changes") if isinstance(data, dict) else None
        if isinstance(changes, dict) and len(changes) > len(RECTIFIABLE):
            raise ma.ValidationError(
                f"at most {len(RECTIFIABLE)} keys: {', '.join(RECTIFIABLE)}", "changes")
        return data

    @ma.validates_schema
    def _rectifiable(self, data, **kwargs):
        """What contacts would refuse, refused here: a request accepted with
        201 then ended needing attention, though nothing could be changed."""
        problems = {f"changes.{key}": [problem]
                    for key, problem in rectification_problems(data.get("changes") or {}).items()}
        if problems:
            raise ma.ValidationError(problems)


class Extension(ma.Schema):
    months = fields.Integer(strict=True, required=True, validate=validate.Range(1, domain.MAX_EXTENSION_MONTHS))
    reason = fields.String(required=True, validate=validate.Length(min=3, max=500))
    at = fields.DateTime(dump_only=True)
    principal = fields.String(dump_only=True)


class Closing(ma.Schema):
    reason = fields.String(required=True, validate=validate.Length(min=3, max=500), metadata={
        "description": "why the request ends unfulfilled (kept on the request, not in the "
                       "audit log: it may name the person)"})


class Answer(ma.Schema):
    status = fields.String()
    at = fields.DateTime()
    detail = fields.String(allow_none=True)


class RequestOut(ma.Schema):
    id = fields.String(attribute="_id")
    kind = fields.String()
    subject = fields.Dict()
    reason = fields.String(allow_none=True)
    status = fields.String(metadata={"description": "pending, needs_attention, complete or "
                                                    "closed (ended unfulfilled: close_reason)"})
    created_at = fields.DateTime()
    due_at = fields.DateTime()
    extensions = fields.List(fields.Nested(Extension))
    responders = fields.List(fields.String())
    answers = fields.Dict(keys=fields.String(), values=fields.Nested(Answer))
    waiting_for = fields.Method("_waiting_for")
    changed_fields = fields.List(fields.String())
    completed_at = fields.DateTime(allow_none=True)
    closed_at = fields.DateTime(allow_none=True)
    export_expired_at = fields.DateTime(allow_none=True, metadata={
        "description": "when an access request's export was deleted (SANDESH_PRIVACY_EXPORT_DAYS "
                       "after it completed)"})
    close_reason = fields.String(allow_none=True)
    overdue = fields.Boolean()

    def _waiting_for(self, request):
        answers = request.get("answers") or {}
        return [s for s in request["responders"]
                if answers.get(s, {}).get("status") not in domain.SETTLED]


class RequestPage(ma.Schema):
    items = fields.List(fields.Nested(RequestOut))
    next_cursor = fields.String(allow_none=True)


class RequestListArgs(PageArgs):
    overdue = fields.Boolean(load_default=False)
    open = fields.Boolean(load_default=False)


class ExportArgs(ma.Schema):
    # No `reason`: free text about a download names the person more often
    # than not, and the audit log it went into is the proof of what was done.
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "text", "html"]))


class AuditIn(ma.Schema):
    action = fields.String(required=True, validate=validate.Length(min=1, max=100))
    target_type = fields.String(required=True, validate=validate.Length(min=1, max=50))
    target_id = fields.String(validate=ID)
    reason = fields.String(validate=validate.Length(max=500))
    user_id = fields.String(validate=ID)


class AuditOut(ma.Schema):
    id = fields.String(attribute="_id")
    at = fields.DateTime()
    account_id = fields.String()
    service = fields.String()
    principal = fields.String()
    user_id = fields.String(allow_none=True)
    action = fields.String()
    target_type = fields.String()
    target_id = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    request_id = fields.String(allow_none=True)


class AuditPage(ma.Schema):
    items = fields.List(fields.Nested(AuditOut))
    next_cursor = fields.String(allow_none=True)


class AuditArgs(PageArgs):
    since = UtcDateTime()
    until = UtcDateTime()

    @ma.validates_schema
    def _range(self, data, **_):
        """A reversed range was a 200 with nothing in it, as if nothing had
        happened then (the aggregates refuse it)."""
        if data.get("since") and data.get("until") and data["until"] < data["since"]:
            raise ma.ValidationError("until is before since", "until")


class PolicyIn(ma.Schema):
    version = fields.String(validate=validate.Length(max=50))
    text = fields.String(required=True, validate=validate.Length(min=1, max=200_000))
    summary = fields.String(required=True, validate=validate.Length(min=1, max=5_000))
    material = JsonBoolean(required=True)
    effective_at = UtcDateTime(required=True)


class PolicyOut(ma.Schema):
    id = fields.String(attribute="_id")
    version = fields.String(allow_none=True)
    text = fields.String()
    summary = fields.String()
    material = fields.Boolean()
    published_at = fields.DateTime()
    effective_at = fields.DateTime()


class PolicyPage(ma.Schema):
    items = fields.List(fields.Nested(PolicyOut))
    next_cursor = fields.String(allow_none=True)


class NoticeArgs(PageArgs):
    user_id = fields.String(validate=ID)


class NoticeOut(ma.Schema):
    id = fields.String(attribute="_id")
    policy_id = fields.Function(lambda policy: policy["_id"])
    version = fields.String(allow_none=True)
    summary = fields.String()
    material = fields.Boolean()
    published_at = fields.DateTime()
    effective_at = fields.DateTime()


class NoticeList(ma.Schema):
    items = fields.List(fields.Nested(NoticeOut))
    next_cursor = fields.String(allow_none=True)


class NoticeAckIn(ma.Schema):
    user_id = fields.String(validate=ID)


class NoticeAckOut(ma.Schema):
    policy_id = fields.String()
    user_id = fields.String(allow_none=True)
    principal = fields.String()
    at = fields.DateTime()


class AggregateArgs(ma.Schema):
    since = fields.Date(required=True)
    until = fields.Date(required=True)

    @ma.validates_schema
    def _range(self, data, **_):
        if data["until"] < data["since"]:
            raise ma.ValidationError("until is before since", "until")
        if (data["until"] - data["since"]).days > 366:
            raise ma.ValidationError("at most 366 days at once", "until")


class AggregateRow(ma.Schema):
    day = fields.String()
    provider = fields.String()
    contacts = fields.Integer()
    sent = fields.Integer()
    bounced = fields.Integer()
    failed = fields.Integer()


class AggregateReport(ma.Schema):
    k = fields.Integer()
    items = fields.List(fields.Nested(AggregateRow))
    suppressed_groups = fields.Integer()
