from __future__ import annotations

import json
import re

import flask_smorest
import marshmallow as ma
from flask import Request, current_app, request
from webargs import core
from webargs.flaskparser import FlaskParser, abort, is_json_request

from shared.http.errors import ApiError, invalid_fields

# A JSON body is read whole before it is checked. The largest one a schema
# allows (a template: 1,000,000 characters of HTML and as many of text,
# \u-escaped by some clients) fits; file uploads are form data, not JSON.
MAX_JSON_BYTES = 16 * 1024 * 1024


def json_too_large() -> ApiError:
    """The 413 for a JSON body over MAX_JSON_BYTES, wherever it is read."""
    return ApiError(413, "payload_too_large", f"a JSON body may be at most {MAX_JSON_BYTES} bytes")


class _Parser(FlaskParser):
    # The brief asks for 400 on invalid input, not webargs' default 422.
    DEFAULT_VALIDATION_STATUS = 400
    # An unknown query parameter is a 400 naming it, as an unknown body field
    # is: webargs drops it by default, so a mistyped filter (?emai_prefix=)
    # answered as if there were none, with everything.
    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
                                   "query": ma.RAISE, "querystring": ma.RAISE}

    def load_querystring(self, req: Request, schema: ma.Schema):
        """A parameter given twice where one value is taken is a 400 naming
        it: ?limit=5&limit=500 answered with the first, ?status=a&status=b
        was refused, depending on the field. So is a NUL in a value."""
        self._one_each(req.args, schema, "NUL character (%00)")   # as in a body
        return super().load_querystring(req, schema)

    def load_form(self, req: Request, schema: ma.Schema):
        """As a query string: a field given twice where one value is taken,
        or a NUL in a value, is a 400 naming it (a multipart import's
        `mode` twice took the first; a NUL went into the consent log)."""
        self._one_each(req.form, schema, "NUL character")
        return super().load_form(req, schema)

    def load_files(self, req: Request, schema: ma.Schema):
        """A second file under one name is a 400: only the first was read,
        and the second's rows were never imported, without a word."""
        for name in req.files:
            if len(req.files.getlist(name)) > 1:
                abort(400, messages={name: ["one file only; send each in a request of its own"]})
        return super().load_files(req, schema)

    @staticmethod
    def _one_each(values_by_name, schema: ma.Schema, nul: str) -> None:
        for name in values_by_name:
            values = values_by_name.getlist(name)
            field = schema.fields.get(name)
            if field is not None and not isinstance(field, ma.fields.List) and len(values) > 1:
                abort(400, messages={name: ["given more than once"]})
            if any("\x00" in value for value in values):
                abort(400, messages={name: [f"the {nul} is not allowed"]})

    def _raw_load_json(self, req: Request):
        """webargs' JSON loading, plus the answers it leaves to a 500 or to
        silence: a body that is not JSON is a 415 (webargs reads it as no
        body at all, so a PATCH would change nothing and say 200); a body
        over MAX_JSON_BYTES a 413; and a 400 for JSON that parses to what
        Python or BSON cannot take: an integer of over 4,300 digits, nesting
        deeper than Python's recursion limit, a lone \\ud800 surrogate."""
        if not is_json_request(req):
            if req.content_length or req.headers.get("Transfer-Encoding"):
                raise ApiError(415, "unsupported_media_type",
                               "send the body as JSON, with Content-Type: application/json")
            return core.missing
        if req.content_length is not None and req.content_length > MAX_JSON_BYTES:
            raise json_too_large()
        if req.max_content_length is None or req.max_content_length > MAX_JSON_BYTES:
            req.max_content_length = MAX_JSON_BYTES  # a chunked body is cut there (413)
        try:
            data = core.parse_json(req.get_data(cache=True))
        except json.JSONDecodeError:
            raise  # webargs' own answer: 400 "Invalid JSON body."
        except (ValueError, RecursionError):
            abort(400, messages={"json": ["Invalid JSON body: a number too long or "
                                          "nesting too deep."]})
        if not _encodes_as_utf8(data):
            where = _string_at(data, _LONE_SURROGATE.search)
            abort(400, messages={where or "json": ["Invalid JSON body: a \\u escape names half "
                                                   "of a surrogate pair."]})
        where = _string_at(data, _has_nul) if b"\\u0000" in req.get_data(cache=True) else None
        if where is not None:
            abort(400, messages={where or "json": ["the NUL character (\\u0000) is not allowed"]})
        return data


_LONE_SURROGATE = re.compile("[\\ud800-\\udfff]")


def _has_nul(text: str) -> bool:
    return "\x00" in text


def _string_at(data, bad) -> str | None:
    """The dotted path of the first string `bad` finds fault with (of the
    object, for a key), or None ("" for the body itself). A NUL: no field
    takes one, it was stored as given in a list's name or a template, and
    ends a C string wherever one is read. A lone surrogate: BSON cannot
    hold it. Called only when the body has one somewhere.

    A walk with a stack of its own (JSON nested nearly as deep as Python's
    recursion limit parses) that holds containers only, each with its
    parent's place, so a path is built once, for the hit: a 16 MB body of
    numbers nested 900 deep took gigabytes when every child carried its
    path. Past MAX_WALK values the body as a whole is named."""
    if isinstance(data, str):
        return "" if bad(data) else None
    containers: list[tuple[int, object, object]] = [(-1, None, data)]   # (parent, key, value)
    pending = [0]
    visited = 0
    while pending:
        at = pending.pop()
        value = containers[at][2]
        children = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in children:
            visited += 1
            if visited > MAX_WALK:
                return ""
            if isinstance(key, str) and bad(key):
                return _path(containers, at)   # the object whose key it is
            if isinstance(child, str):
                if bad(child):
                    return _path(containers, at, key)
            elif isinstance(child, (dict, list)):
                containers.append((at, key, child))
                pending.append(len(containers) - 1)
    return None


MAX_WALK = 200_000


def _path(containers: list, at: int, key=None) -> str:
    names = [] if key is None else [str(key)]
    while at > 0:
        parent, name, _ = containers[at]
        names.append(str(name))
        at = parent
    return ".".join(reversed(names))


def _encodes_as_utf8(data) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint: `@blp.arguments(Schema)` and
    `@blp.response(200, Schema)` are the only validation and serialisation
    boundary, and the OpenAPI document falls out of them."""

    ARGUMENTS_PARSER = _Parser()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A blueprint's hooks run after the app's, authentication among them.
        self.before_request(refuse_undeclared_input)


def _declared_locations(view) -> set[str] | None:
    """Where a flask-smorest view takes its arguments ("query", "json",
    "files"...), or None when it is no such view (health, metrics, a
    catch-all)."""
    handler = view
    view_class = getattr(view, "view_class", None)
    if view_class is not None:
        handler = getattr(view_class, request.method.lower(), None)
    doc = getattr(handler, "_apidoc", None)
    if doc is None:
        return None
    return {parameter.get("in") for parameter in doc.get("arguments", {}).get("parameters", [])}


def refuse_undeclared_input() -> None:
    """A query parameter on an endpoint that takes none is a 400 naming it,
    as an unknown one is where a query schema is declared (GET /lists/<id>?
    expand=members answered as if it had been understood); and a body sent
    to one that takes none is a 400 (DELETE /account with a malformed body
    deleted the account)."""
    if request.endpoint is None:
        return
    locations = _declared_locations(current_app.view_functions.get(request.endpoint))
    if locations is None:
        return
    if request.args and not locations & {"query", "querystring"}:
        raise invalid_fields({name: ["Unknown field."] for name in sorted(request.args)})
    has_body = bool(request.content_length) or "Transfer-Encoding" in request.headers
    if has_body and not locations & {"json", "form", "files"} and not _empty_object():
        raise invalid_fields({"_body": ["this endpoint takes no body"]})


def _empty_object() -> bool:
    """A body of "{}" says nothing, and some clients send it with every
    POST (axios.post(url, {})): let through where no body is taken."""
    if request.content_length is None or request.content_length > 16:
        return False
    return request.get_data(cache=True).strip() in (b"{}", b"")
