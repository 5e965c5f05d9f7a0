"""marshmallow schemas: the only validation and serialisation boundary of
the campaigns API (unknown fields are refused)."""
from __future__ import annotations

import marshmallow as ma
from marshmallow import validate

from services.campaigns import domain
from shared.http.fields import (EMAIL_ADDRESS, ONE_LINE_PATTERN, JsonBoolean, StrictFloat,
                                UpdateSchema, documented_as)
from shared.tracking_tokens import TEST_SEND_RECIPIENTS
from email_validator import EmailNotValidError, validate_email

ID = validate.Length(1, 64)
SUBJECT = validate.Length(1, domain.HEADER_LIMITS["subject"])
PREHEADER = validate.Length(max=domain.HEADER_LIMITS["preheader"])


def _domain_name(value: str) -> None:
    problem = domain.sending_domain_problem(value)
    if problem:  # "shop.example\r\nBcc: ..." was stored, and every message failed to compose
        raise ma.ValidationError(problem)


@documented_as(pattern=ONE_LINE_PATTERN)   # what domain.header_problem allows
def _header_safe(value: str) -> None:
    problem = domain.header_problem(value)
    if problem:
        raise ma.ValidationError(problem)


@documented_as(**EMAIL_ADDRESS)
def _email(value: str) -> None:
    _header_safe(value)
    try:
        # Special-use domains allowed: the local stack sends from sandesh.test.
        validate_email(value, check_deliverability=False, test_environment=True,
                       allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise ma.ValidationError(f"not a valid email address: {exc}") from None


def _postal_address(value: str) -> None:
    # The address is filled into the template as data, but braces are never
    # part of an address and would read as template syntax in a preview.
    if "{" in value or "}" in value:
        raise ma.ValidationError("must not contain { or }")


# -- templates -------------------------------------------------------------
class TemplateCreate(ma.Schema):
    name = ma.fields.String(required=True, validate=validate.Length(1, 200))
    kind = ma.fields.String(load_default="marketing",
                            validate=validate.OneOf(["marketing", "system"]))
    subject = ma.fields.String(required=True, validate=[SUBJECT, _header_safe])
    preheader = ma.fields.String(load_default="", validate=[PREHEADER, _header_safe])
    html = ma.fields.String(required=True, validate=validate.Length(1, 1_000_000))
    text = ma.fields.String(load_default=None, allow_none=True,
                            validate=validate.Length(max=1_000_000),
                            metadata={"description": "Derived from the HTML when absent."})


class TemplateUpdate(UpdateSchema):
    name = ma.fields.String(validate=validate.Length(1, 200))
    kind = ma.fields.String(validate=validate.OneOf(["marketing", "system"]))
    subject = ma.fields.String(validate=[SUBJECT, _header_safe])
    preheader = ma.fields.String(validate=[PREHEADER, _header_safe])
    html = ma.fields.String(validate=validate.Length(1, 1_000_000))
    text = ma.fields.String(allow_none=True, validate=validate.Length(max=1_000_000))


class TemplateVersion(ma.Schema):
    version = ma.fields.Integer()
    subject = ma.fields.String()
    preheader = ma.fields.String()
    html = ma.fields.String()
    text = ma.fields.String()
    text_derived = ma.fields.Boolean()
    links = ma.fields.List(ma.fields.String())
    created_at = ma.fields.DateTime()


class TemplateSummary(ma.Schema):
    id = ma.fields.String(attribute="_id")
    name = ma.fields.String()
    kind = ma.fields.String()
    version = ma.fields.Integer(metadata={"description": "The latest version."})
    created_at = ma.fields.DateTime()
    updated_at = ma.fields.DateTime()


class Template(TemplateSummary):
    current = ma.fields.Nested(TemplateVersion, metadata={"description": "The latest version."})


class TemplatePage(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(TemplateSummary))
    next_cursor = ma.fields.String(allow_none=True)


class TemplateVersionPage(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(TemplateVersion))
    next_cursor = ma.fields.String(allow_none=True)


# -- campaigns -------------------------------------------------------------
# Lists and segments are contacts' (32 hex digits): an id of another shape
# names none, and a campaign to it was sent to nobody.
CONTACTS_ID = validate.Regexp(r"^[0-9a-f]{32}$", error="not an id of a list or segment")


class Audience(ma.Schema):
    list_ids = ma.fields.List(ma.fields.String(validate=CONTACTS_ID), load_default=list,
                              validate=validate.Length(max=50))
    segment_id = ma.fields.String(load_default=None, allow_none=True, validate=CONTACTS_ID)


class Limits(ma.Schema):
    per_second = StrictFloat(load_default=None, allow_none=True,
                             validate=validate.Range(0.01, 100_000))
    per_hour = ma.fields.Integer(strict=True, load_default=None, allow_none=True,
                                 validate=validate.Range(1, 100_000_000))
    per_domain_concurrency = ma.fields.Integer(strict=True, load_default=None, allow_none=True,
                                               validate=validate.Range(1, 1000))


_CAMPAIGN_FIELDS = dict(
    name=lambda: ma.fields.String(validate=validate.Length(1, 300)),
    kind=lambda: ma.fields.String(validate=validate.OneOf(["marketing", "system"])),
    template_id=lambda: ma.fields.String(allow_none=True, validate=ID),
    template_version=lambda: ma.fields.Integer(
        strict=True, allow_none=True, validate=validate.Range(min=1, max=domain.MAX_TEMPLATE_VERSION),
        metadata={"description": "Pin a version; by default the latest at send time."}),
    from_email=lambda: ma.fields.String(allow_none=True, validate=_email),
    from_name=lambda: ma.fields.String(allow_none=True, validate=[validate.Length(max=200),
                                                                  _header_safe]),
    reply_to=lambda: ma.fields.String(allow_none=True, validate=_email),
    sending_domain=lambda: ma.fields.String(allow_none=True,
                                            validate=[validate.Length(1, 255), _domain_name]),
    audience=lambda: ma.fields.Nested(Audience),
    limits=lambda: ma.fields.Nested(Limits),
    tracking=lambda: JsonBoolean(),
    postal_address=lambda: ma.fields.String(
        allow_none=True, validate=[validate.Length(max=500), _postal_address],
        metadata={"description": "The account's postal address for the CAN-SPAM footer; "
                                 "required to send a marketing campaign."}),
)


class CampaignCreate(ma.Schema):
    name = ma.fields.String(required=True, validate=validate.Length(1, 300))
    kind = ma.fields.String(load_default="marketing",
                            validate=validate.OneOf(["marketing", "system"]))
    template_id = _CAMPAIGN_FIELDS["template_id"]()
    template_version = _CAMPAIGN_FIELDS["template_version"]()
    from_email = _CAMPAIGN_FIELDS["from_email"]()
    from_name = _CAMPAIGN_FIELDS["from_name"]()
    reply_to = _CAMPAIGN_FIELDS["reply_to"]()
    sending_domain = _CAMPAIGN_FIELDS["sending_domain"]()
    audience = ma.fields.Nested(Audience, load_default=lambda: {"list_ids": [],
                                                               "segment_id": None})
    limits = ma.fields.Nested(Limits, load_default=dict)
    tracking = JsonBoolean(load_default=True)
    postal_address = _CAMPAIGN_FIELDS["postal_address"]()


class CampaignUpdate(UpdateSchema):
    name = _CAMPAIGN_FIELDS["name"]()
    kind = _CAMPAIGN_FIELDS["kind"]()
    template_id = _CAMPAIGN_FIELDS["template_id"]()
    template_version = _CAMPAIGN_FIELDS["template_version"]()
    from_email = _CAMPAIGN_FIELDS["from_email"]()
    from_name = _CAMPAIGN_FIELDS["from_name"]()
    reply_to = _CAMPAIGN_FIELDS["reply_to"]()
    sending_domain = _CAMPAIGN_FIELDS["sending_domain"]()
    audience = _CAMPAIGN_FIELDS["audience"]()
    limits = _CAMPAIGN_FIELDS["limits"]()
    tracking = _CAMPAIGN_FIELDS["tracking"]()
    postal_address = _CAMPAIGN_FIELDS["postal_address"]()


class Progress(ma.Schema):
    audience_size = ma.fields.Integer(allow_none=True,
                                      metadata={"description": "Known once fan-out is done."})
    queued = ma.fields.Integer(allow_none=True)
    sent = ma.fields.Integer()
    deferred = ma.fields.Integer(metadata={"description": "Retries scheduled so far."})
    failed = ma.fields.Integer()
    bounced = ma.fields.Integer()
    skipped = ma.fields.Integer()
    accounted = ma.fields.Integer(metadata={"description": "sent + failed + skipped"})
    percent = ma.fields.Float()
    rate_per_second = ma.fields.Float(allow_none=True)
    eta_seconds = ma.fields.Float(allow_none=True,
                                  metadata={"description": "Estimated time left."})


class AudienceMissing(ma.Schema):
    list_ids = ma.fields.List(ma.fields.String())
    segment_id = ma.fields.String()


class FrozenTemplate(ma.Schema):
    template_id = ma.fields.String()
    version = ma.fields.Integer()


class Campaign(ma.Schema):
    id = ma.fields.String(attribute="_id")
    name = ma.fields.String()
    kind = ma.fields.String()
    status = ma.fields.String(metadata={"enum": list(domain.STATUSES)})
    template_id = ma.fields.String(allow_none=True)
    template_version = ma.fields.Integer(allow_none=True)
    frozen_template = ma.fields.Nested(FrozenTemplate, allow_none=True)
    from_email = ma.fields.String(allow_none=True)
    from_name = ma.fields.String(allow_none=True)
    reply_to = ma.fields.String(allow_none=True)
    sending_domain = ma.fields.String(allow_none=True)
    audience = ma.fields.Nested(Audience)
    limits = ma.fields.Nested(Limits)
    tracking = ma.fields.Boolean()
    postal_address = ma.fields.String(allow_none=True)
    send_at = ma.fields.DateTime(allow_none=True)
    time_zone = ma.fields.String(allow_none=True)
    launched_at = ma.fields.DateTime(allow_none=True)
    completed_at = ma.fields.DateTime(allow_none=True)
    paused_at = ma.fields.DateTime(allow_none=True, metadata={
        "description": "When the current pause began; a campaign paused for "
                       "SANDESH_CAMPAIGNS_PAUSE_LIMIT_HOURS (7 days) is cancelled."})
    cancelled_at = ma.fields.DateTime(allow_none=True)
    cancel_reason = ma.fields.String(allow_none=True, metadata={
        "description": "Why the platform cancelled it (a schedule that could not launch, "
                       "a pause past the limit); null when cancelled through the API."})
    audience_missing = ma.fields.Nested(AudienceMissing, allow_none=True, dump_default=None,
                                        metadata={"description": (
                                            "Lists or a segment the audience named that the "
                                            "account did not have when its fan-out began: no "
                                            "recipient was read from them.")})
    created_at = ma.fields.DateTime()
    updated_at = ma.fields.DateTime()
    progress = ma.fields.Nested(Progress)


class CampaignPage(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(Campaign))
    next_cursor = ma.fields.String(allow_none=True)


class CampaignListArgs(ma.Schema):
    limit = ma.fields.Integer(load_default=50, validate=validate.Range(1, 500))
    cursor = ma.fields.String(load_default=None, validate=validate.Length(max=500))
    status = ma.fields.String(load_default=None, validate=validate.OneOf(domain.STATUSES))


class ScheduleRequest(ma.Schema):
    send_at = ma.fields.String(required=True, validate=validate.Length(1, 64), metadata={
        "description": "ISO 8601, with a UTC offset (2030-05-01T09:00:00+02:00) or local "
                       "time plus time_zone."})
    time_zone = ma.fields.String(load_default=None, allow_none=True,
                                 validate=validate.Length(1, 64),
                                 metadata={"description": "IANA name, e.g. Europe/Paris"})


def _each_once(emails: list[str]) -> None:
    """Two copies of one test message to one inbox tell nothing more."""
    if len({email.strip().lower() for email in emails}) != len(emails):
        raise ma.ValidationError("each address once")


class TestRequest(ma.Schema):
    emails = ma.fields.List(ma.fields.String(validate=_email), required=True,
                            validate=[validate.Length(1, TEST_SEND_RECIPIENTS), _each_once])


class TestQueued(ma.Schema):
    job_ids = ma.fields.List(ma.fields.String())


class Usage(ma.Schema):
    templates = ma.fields.Integer()
    campaigns = ma.fields.Integer()
    mailings_sent = ma.fields.Integer()
    mailings_bytes = ma.fields.Integer()
