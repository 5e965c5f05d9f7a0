from __future__ import annotations

import flask_smorest
from webargs.flaskparser import FlaskParser


class _Parser(FlaskParser):
    # The brief asks for 400 on invalid input, not webargs' default 422.
    DEFAULT_VALIDATION_STATUS = 400


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint: `@blp.arguments(Schema)` and
    `@blp.response(200, Schema)` are the only validation and serialisation
    boundary, and the OpenAPI document falls out of them."""

    ARGUMENTS_PARSER = _Parser()
