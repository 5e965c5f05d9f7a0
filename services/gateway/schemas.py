import marshmallow as ma
from marshmallow import validate


class AccountCreate(ma.Schema):
    name = ma.fields.String(required=True, validate=validate.Length(1, 200))
    postal_address = ma.fields.String(load_default="", validate=validate.Length(max=500))
    rate_limit_per_minute = ma.fields.Integer(strict=True, load_default=None,
                                              validate=validate.Range(1, 1_000_000))


class Account(ma.Schema):
    id = ma.fields.String(attribute="_id")
    name = ma.fields.String()
    postal_address = ma.fields.String()
    status = ma.fields.String()
    created_at = ma.fields.DateTime()


class KeyCreate(ma.Schema):
    name = ma.fields.String(load_default="", validate=validate.Length(max=200))
    rate_limit_per_minute = ma.fields.Integer(strict=True, load_default=None,
                                              validate=validate.Range(1, 1_000_000))


class Key(ma.Schema):
    id = ma.fields.String(attribute="_id")
    name = ma.fields.String()
    prefix = ma.fields.String()
    rate_limit_per_minute = ma.fields.Integer(allow_none=True)
    created_at = ma.fields.DateTime()
    revoked_at = ma.fields.DateTime(allow_none=True)


class NewKey(Key):
    key = ma.fields.String(metadata={"description": "The whole key. Shown once, never again."})


class KeyList(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(Key))
    next_cursor = ma.fields.String(allow_none=True)


class AccountCreated(ma.Schema):
    account = ma.fields.Nested(Account)
    api_key = ma.fields.Nested(NewKey)


class Usage(ma.Schema):
    lists = ma.fields.Integer()
    contacts = ma.fields.Integer()
    templates = ma.fields.Integer()
    campaigns = ma.fields.Integer()
    mailings_sent = ma.fields.Integer()
    mailings_bytes = ma.fields.Integer()
