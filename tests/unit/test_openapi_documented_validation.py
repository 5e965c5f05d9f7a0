"""The OpenAPI documents say what the validation enforces (shared/http/openapi.py)."""
import re

import marshmallow as ma
from apispec import APISpec

from shared.header_text import is_one_line
from shared.http.fields import ONE_LINE_PATTERN, UpdateSchema, documented_as, one_line
from shared.http.openapi import DocumentedValidation


def _document(**schemas: type[ma.Schema]) -> dict:
    spec = APISpec("t", "v1", "3.0.3", plugins=[DocumentedValidation()])
    for name, schema in schemas.items():
        spec.components.schema(name, schema=schema)
    return spec.to_dict()["components"]["schemas"]


def test_the_one_line_pattern_allows_exactly_what_the_validator_does():
    pattern = re.compile(ONE_LINE_PATTERN)
    samples = [chr(code) for code in range(0x00, 0xa0)] + ["\u2028", "é", "名", "😀"]
    for char in samples:
        text = f"Ann{char}Lee"
        assert bool(pattern.match(text)) == is_one_line(text), repr(char)


def test_a_marked_validator_documents_its_field_and_a_patch_body_needs_a_field():
    """And an object's size is in properties, not the string length apispec gives."""
    @documented_as(minLength=2)
    def two_or_more(value):
        if len(value) < 2:
            raise ma.ValidationError("too short")

    class Create(ma.Schema):
        name = ma.fields.String(validate=[ma.validate.Length(max=200), one_line])
        code = ma.fields.String(validate=two_or_more)
        note = ma.fields.String()
        tags = ma.fields.Dict(validate=ma.validate.Length(1, 100))

    class Update(UpdateSchema):
        name = ma.fields.String(validate=one_line)

    schemas = _document(Create=Create, Update=Update)
    create = schemas["Create"]
    assert create["properties"]["name"] == {"type": "string", "maxLength": 200,
                                            "pattern": ONE_LINE_PATTERN}
    assert create["properties"]["code"]["minLength"] == 2
    assert "pattern" not in create["properties"]["note"]
    assert create["properties"]["tags"] == {"type": "object", "additionalProperties": {},
                                            "minProperties": 1, "maxProperties": 100}
    assert "minProperties" not in create
    assert schemas["Update"]["minProperties"] == 1
    assert Update().validate({}) == {"_body": ["give at least one field to change"]}
