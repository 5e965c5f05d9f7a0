"""The services' OpenAPI documents say what the validation enforces, where
JSON Schema can say it: a client generated from GET /api/v1/openapi.json,
or a form built from it, then refuses what the API would refuse.

- A validator marked with `fields.documented_as(...)` adds its JSON Schema
  keywords to every field it validates (a one-line name's `pattern`).
- A PATCH body (fields.UpdateSchema) needs one field: `minProperties: 1`.
- An object's size limit (`Length` on a Dict) is `maxProperties`: apispec
  writes `maxLength`, which JSON Schema applies to strings only.
"""
from __future__ import annotations

import marshmallow as ma
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import resolve_schema_instance
from apispec.ext.marshmallow.openapi import OpenAPIConverter

from shared.http.fields import UpdateSchema


def _validators_keywords(self, field, **kwargs) -> dict:
    keywords: dict = {}
    for validator in getattr(field, "validators", ()):
        keywords.update(getattr(validator, "json_schema", {}))
    return keywords


def _object_sizes(self, field, ret: dict, **kwargs) -> dict:
    if not isinstance(field, ma.fields.Dict):
        return {}
    sizes = {"minLength": "minProperties", "maxLength": "maxProperties"}
    return {sizes[key]: ret.pop(key) for key in list(ret) if key in sizes}


class _Converter(OpenAPIConverter):
    def init_attribute_functions(self) -> None:
        super().init_attribute_functions()
        self.add_attribute_function(_validators_keywords)
        self.add_attribute_function(_object_sizes)

    def schema2jsonschema(self, schema) -> dict:
        jsonschema = super().schema2jsonschema(schema)
        if isinstance(resolve_schema_instance(schema), UpdateSchema):
            jsonschema["minProperties"] = 1
        return jsonschema


class DocumentedValidation(MarshmallowPlugin):
    """flask-smorest's marshmallow plugin, with the additions above."""
    Converter = _Converter
