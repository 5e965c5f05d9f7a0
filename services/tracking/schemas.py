"""Marshmallow schemas of the tracking service's API (the stats)."""
from marshmallow import Schema, fields


class _Bounced(Schema):
    hard = fields.Integer(required=True)
    soft = fields.Integer(required=True)
    total = fields.Integer(required=True)


class _Hits(Schema):
    unique_human = fields.Integer(required=True, metadata={"description": "distinct contacts, people"})
    total_human = fields.Integer(required=True)
    unique_machine = fields.Integer(required=True,
                                    metadata={"description": "scanners, prefetching proxies"})
    total_machine = fields.Integer(required=True)


class _Rates(Schema):
    delivery = fields.Float(required=True, metadata={"description": "delivered / sent"})
    bounce = fields.Float(required=True, metadata={"description": "bounced / sent"})
    failure = fields.Float(required=True, metadata={"description": "failed / (sent + failed)"})
    open = fields.Float(required=True, metadata={"description": "unique human opens / delivered"})
    click = fields.Float(required=True, metadata={"description": "unique human clicks / delivered"})
    click_to_open = fields.Float(required=True,
                                 metadata={"description": "unique human clicks / unique human opens"})
    unsubscribe = fields.Float(required=True, metadata={"description": "unsubscribes / delivered"})
    complaint = fields.Float(required=True, metadata={"description": "complaints / delivered"})


class _Link(_Hits):
    index = fields.Integer(required=True, metadata={"description": "n-th distinct link of the template"})
    url = fields.String(allow_none=True)


class _Hour(Schema):
    hour = fields.DateTime(required=True, metadata={"description": "start of the hour, UTC"})
    sent = fields.Integer()
    failed = fields.Integer()
    bounced_hard = fields.Integer()
    bounced_soft = fields.Integer()
    opens_total_human = fields.Integer()
    opens_total_machine = fields.Integer()
    opens_unique_human = fields.Integer()
    opens_unique_machine = fields.Integer()
    clicks_total_human = fields.Integer()
    clicks_total_machine = fields.Integer()
    clicks_unique_human = fields.Integer()
    clicks_unique_machine = fields.Integer()
    unsubscribes = fields.Integer()
    complaints = fields.Integer()


class CampaignStats(Schema):
    campaign_id = fields.String(required=True)
    sent = fields.Integer(required=True, metadata={"description": "accepted by the relay"})
    delivered = fields.Integer(required=True, metadata={"description": "sent minus bounced"})
    failed = fields.Integer(required=True, metadata={"description": "refused or retries exhausted"})
    bounced = fields.Nested(_Bounced, required=True)
    opens = fields.Nested(_Hits, required=True)
    clicks = fields.Nested(_Hits, required=True)
    unsubscribes = fields.Integer(required=True)
    complaints = fields.Integer(required=True)
    rates = fields.Nested(_Rates, required=True)
    links = fields.List(fields.Nested(_Link), required=True, metadata={"description": "clicks per link"})
    hourly = fields.List(fields.Nested(_Hour), required=True,
                         metadata={"description": "per hour, for the first days of the campaign"})
