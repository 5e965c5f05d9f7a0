"""marshmallow schemas: the only validation and serialisation boundary of the
contacts API (unknown fields are refused: no mass assignment)."""
from __future__ import annotations

import marshmallow as ma
from marshmallow import validate

from services.contacts import domain
from shared.http.fields import EMAIL_ADDRESS, JsonBoolean, UpdateSchema, not_blank, one_line
from shared.http.pagination import PageArgs

ID = validate.Regexp(r"^[0-9a-f]{32}$", error="not an id")
# A list's, a segment's, a custom field's label: one line (it is shown in
# pickers and exported as a CSV cell), not blank.
NAME = [validate.Length(1, 200), one_line, not_blank]


CONTACT_NAME = [validate.Length(max=200), one_line]


class Page(ma.Schema):
    next_cursor = ma.fields.String(allow_none=True)


def page_of(item_schema: type[ma.Schema], name: str) -> type[ma.Schema]:
    return ma.Schema.from_dict({"items": ma.fields.List(ma.fields.Nested(item_schema)),
                                "next_cursor": ma.fields.String(allow_none=True)}, name=name)


class AnyValue(ma.fields.Raw):
    """A JSON value checked later against a custom field's declared type."""


# -- lists -------------------------------------------------------------------
class ListCreate(ma.Schema):
    name = ma.fields.String(required=True, validate=NAME)
    description = ma.fields.String(load_default="", validate=validate.Length(max=2000))


class ListUpdate(UpdateSchema):
    name = ma.fields.String(validate=NAME)
    description = ma.fields.String(validate=validate.Length(max=2000))


class ListCounts(ma.Schema):
    pending = ma.fields.Integer()
    subscribed = ma.fields.Integer()
    unsubscribed = ma.fields.Integer()
    total = ma.fields.Integer()


class ListOut(ma.Schema):
    id = ma.fields.String(attribute="_id")
    name = ma.fields.String()
    description = ma.fields.String()
    counts = ma.fields.Nested(ListCounts, metadata={"description": "Members by status (GET one)."})
    created_at = ma.fields.DateTime()
    updated_at = ma.fields.DateTime()


ListPage = page_of(ListOut, "ListPage")


# -- custom fields -----------------------------------------------------------
def _distinct(choices: list[str]) -> None:
    if len(set(choices)) != len(choices):
        raise ma.ValidationError("each choice once")


CHOICES = [validate.Length(max=domain.MAX_CHOICES), _distinct]


SEARCHABLE = ("Index the field's values, so that a search of contacts by one value "
              "(GET /contacts?field=&value=) stays fast on a million contacts. Each "
              "searchable field makes every contact write a little slower.")


class FieldCreate(ma.Schema):
    key = ma.fields.String(required=True, validate=validate.Regexp(
        domain.FIELD_KEY, error="lower-case letters, digits and _, starting with a letter, "
                                "at most 40"))
    label = ma.fields.String(validate=NAME)
    type = ma.fields.String(required=True, validate=validate.OneOf(domain.FIELD_TYPES))
    choices = ma.fields.List(ma.fields.String(validate=validate.Length(1, 200)),
                             validate=CHOICES)
    searchable = JsonBoolean(metadata={"description": SEARCHABLE})


class FieldUpdate(UpdateSchema):
    label = ma.fields.String(validate=NAME)
    choices = ma.fields.List(ma.fields.String(validate=validate.Length(1, 200)),
                             validate=CHOICES)
    searchable = JsonBoolean(metadata={"description": SEARCHABLE})


class FieldOut(ma.Schema):
    id = ma.fields.String(attribute="_id")
    key = ma.fields.String()
    label = ma.fields.String()
    type = ma.fields.String()
    choices = ma.fields.List(ma.fields.String())
    searchable = ma.fields.Boolean(dump_default=False)
    created_at = ma.fields.DateTime()


FieldPage = page_of(FieldOut, "FieldPage")


# -- contacts ----------------------------------------------------------------
class Consent(ma.Schema):
    via = ma.fields.String(load_default="api", validate=validate.OneOf(["api", "form", "admin"]))
    ip = ma.fields.String(validate=validate.Length(max=64))
    source_url = ma.fields.String(validate=validate.Length(max=2000))
    wording = ma.fields.String(validate=validate.Length(max=5000),
                               metadata={"description": "The consent text shown."})
    policy_version = ma.fields.String(validate=validate.Length(max=100))


class ContactCreate(ma.Schema):
    email = ma.fields.String(required=True, validate=validate.Length(1, 320),
                             metadata=EMAIL_ADDRESS)
    name = ma.fields.String(allow_none=True, validate=CONTACT_NAME)
    fields = ma.fields.Dict(keys=ma.fields.String(validate=validate.Length(1, 40)),
                            values=AnyValue(allow_none=True), validate=validate.Length(max=100))
    list_ids = ma.fields.List(ma.fields.String(validate=ID), validate=validate.Length(max=50))
    list_status = ma.fields.String(load_default="subscribed",
                                   validate=validate.OneOf(["subscribed", "pending"]))
    consent = ma.fields.Nested(Consent)
    reconsent = JsonBoolean(load_default=False)


class ContactUpdate(UpdateSchema):
    email = ma.fields.String(validate=validate.Length(1, 320), metadata=EMAIL_ADDRESS)
    name = ma.fields.String(allow_none=True, validate=CONTACT_NAME)
    fields = ma.fields.Dict(keys=ma.fields.String(validate=validate.Length(1, 40)),
                            values=AnyValue(allow_none=True), validate=validate.Length(max=100))


class Membership(ma.Schema):
    status = ma.fields.String()
    via = ma.fields.String()
    at = ma.fields.DateTime()
    import_id = ma.fields.String()


class ContactOut(ma.Schema):
    id = ma.fields.String(attribute="_id")
    email = ma.fields.String()
    name = ma.fields.String(allow_none=True)
    fields = ma.fields.Method("_fields")
    status = ma.fields.String()
    suppressed = ma.fields.Boolean()
    lists = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Nested(Membership))
    created_at = ma.fields.DateTime()
    updated_at = ma.fields.DateTime()


    def _fields(self, doc: dict) -> dict:
        return domain.plain_fields(doc.get("fields") or {})


ContactPage = page_of(ContactOut, "ContactPage")


class ContactSearch(PageArgs):
    email_prefix = ma.fields.String(validate=validate.Length(1, 320))
    name = ma.fields.String(validate=validate.Length(1, 200),
                            metadata={"description": "Names starting with this (any case)."})
    status = ma.fields.String(validate=validate.OneOf(domain.CONTACT_STATUSES))
    list_id = ma.fields.String(validate=ID)
    list_status = ma.fields.String(validate=validate.OneOf(domain.MEMBER_STATUSES),
                                   metadata={"description": "With list_id."})
    field = ma.fields.String(validate=validate.Regexp(domain.FIELD_KEY),
                             metadata={"description": "A custom field key; with value."})
    value = ma.fields.String(validate=validate.Length(max=500))


class MembershipSet(ma.Schema):
    status = ma.fields.String(required=True, validate=validate.OneOf(domain.MEMBER_STATUSES))
    consent = ma.fields.Nested(Consent)
    reconsent = JsonBoolean(load_default=False, metadata={
        "description": "Subscribe a suppressed address, or a contact that unsubscribed "
                       "from this list, again: logged, and needs the consent wording or "
                       "policy version."})


class ConsentOut(ma.Schema):
    id = ma.fields.String(attribute="_id")
    list_id = ma.fields.String(allow_none=True)
    action = ma.fields.String()
    via = ma.fields.String()
    ip = ma.fields.String(allow_none=True)
    source_url = ma.fields.String(allow_none=True)
    wording = ma.fields.String(allow_none=True)
    policy_version = ma.fields.String(allow_none=True)
    actor = ma.fields.String()
    import_id = ma.fields.String()
    at = ma.fields.DateTime()


ConsentPage = page_of(ConsentOut, "ConsentPage")


# -- suppression -------------------------------------------------------------
class SuppressionCreate(ma.Schema):
    email = ma.fields.String(required=True, validate=validate.Length(1, 320),
                             metadata=EMAIL_ADDRESS)
    reason = ma.fields.String(load_default="manual", validate=validate.OneOf(
        ["manual", "unsubscribe", "hard_bounce", "complaint", "import"]))
    note = ma.fields.String(validate=validate.Length(max=500))


class SuppressionCheck(ma.Schema):
    email = ma.fields.String(required=True, validate=validate.Length(1, 320),
                             metadata=EMAIL_ADDRESS)


class SuppressionRemove(ma.Schema):
    reason = ma.fields.String(required=True, validate=validate.Length(1, 500))


class SuppressionStatus(ma.Schema):
    id = ma.fields.String(allow_none=True)
    email_hash = ma.fields.String()
    suppressed = ma.fields.Boolean()
    scope = ma.fields.String(allow_none=True)
    reason = ma.fields.String(allow_none=True)


class SuppressionOut(ma.Schema):
    id = ma.fields.String(attribute="_id")
    email_hash = ma.fields.String()
    scope = ma.fields.String()
    reason = ma.fields.String()
    note = ma.fields.String()
    created_at = ma.fields.DateTime()
    lift_pending = ma.fields.Function(lambda entry: "lifting" in entry, metadata={
        "description": "A removal began and did not finish (e.g. the broker was away): the "
                       "address is still suppressed until the removal is retried."})


SuppressionPage = page_of(SuppressionOut, "SuppressionPage")


# -- segments ----------------------------------------------------------------
class SegmentCreate(ma.Schema):
    name = ma.fields.String(required=True, validate=NAME)
    definition = ma.fields.Dict(required=True, metadata={
        "description": 'Condition: {"all"|"any": [..]}, {"not": ..}, or '
                       '{"field", "op", "value"}; see docs/contacts.md.'})


class SegmentUpdate(UpdateSchema):
    name = ma.fields.String(validate=NAME)
    definition = ma.fields.Dict()


class SegmentOut(ma.Schema):
    id = ma.fields.String(attribute="_id")
    name = ma.fields.String()
    definition = ma.fields.Dict()
    created_at = ma.fields.DateTime()
    updated_at = ma.fields.DateTime()


SegmentPage = page_of(SegmentOut, "SegmentPage")


class PreviewArgs(ma.Schema):
    sample = ma.fields.Integer(load_default=10, validate=validate.Range(0, 100))


class SegmentPreview(ma.Schema):
    count = ma.fields.Integer(metadata={"description": "contacts matching the definition"})
    mailable = ma.fields.Integer(metadata={
        "description": "of those, the ones a campaign to the segment reaches now: active, "
                       "not suppressed, subscribed to a list of the account"})
    sample = ma.fields.List(ma.fields.Nested(ContactOut))


class Usage(ma.Schema):
    lists = ma.fields.Integer()
    contacts = ma.fields.Integer()
