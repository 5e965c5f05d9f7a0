"""One error shape everywhere: {"error": {"code", "message", "details"}}.

A bad request is a 4xx that names what is wrong; a bug is a 500 that says
nothing about internals. Validation errors from the marshmallow schemas come
back as 400 with `details` mapping each offending field to its messages.
"""
from __future__ import annotations

import logging
from typing import Any

import marshmallow as ma
from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


class ErrorDetail(ma.Schema):
    code = ma.fields.String(required=True, metadata={
        "description": "What went wrong, for a program: validation_error, not_found, ..."})
    message = ma.fields.String(required=True, metadata={"description": "The same, for a person"})
    details = ma.fields.Dict(required=True, metadata={
        "description": "For a validation error, each field that is wrong and its messages"})


class ErrorSchema(ma.Schema):
    """The OpenAPI document's account of every error answer (Api.ERROR_SCHEMA):
    flask-smorest's own, {"code": <int>, "status", "errors"}, described a shape
    no answer has, for every operation's 400 and default response."""
    error = ma.fields.Nested(ErrorDetail, required=True)


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def refuse_head() -> None:
    """For a GET whose serving is recorded (an export, audited as
    downloaded): Flask answers HEAD by running the GET, so a link checker
    or a prefetch recorded a download nobody made."""
    if request.method == "HEAD":
        raise ApiError(405, "method_not_allowed",
                       "HEAD is not served here: a GET of it is recorded as a download",
                       headers={"Allow": "GET"})


def invalid_fields(details: dict[str, list[str]]) -> ApiError:
    """A 400 naming each field of `details`, as a schema's refusal reads."""
    return ApiError(400, "validation_error", f"invalid input: {', '.join(details)}", details)


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None):
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    response = jsonify(body)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _code_for(exc: HTTPException) -> str:
    return (exc.name or "error").lower().replace(" ", "_").replace("'", "")


def _validation_details(messages: Any) -> dict:
    """webargs nests messages by location ({"json": {"email": [...]}}); the
    caller wants the field. Locations are kept only when it is ambiguous."""
    if isinstance(messages, dict) and len(messages) == 1:
        location, inner = next(iter(messages.items()))
        if location in ("json", "query", "querystring", "form", "files", "headers", "view_args"):
            return inner if isinstance(inner, dict) else {"_body": inner}
    return messages if isinstance(messages, dict) else {"_body": messages}


MAX_DETAILS = 50


def _at_most(details: dict) -> dict:
    """The first MAX_DETAILS fields named, and how many more: 20,000 unknown
    keys in a 240 KB body came back as a 700 KB answer naming each."""
    if len(details) <= MAX_DETAILS:
        return details
    named = dict(sorted(details.items(), key=lambda item: str(item[0]))[:MAX_DETAILS])
    named["_more"] = [f"{len(details) - MAX_DETAILS} more fields are wrong"]
    return named


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        data = getattr(exc, "data", None) or {}
        if "messages" in data or "errors" in data:
            details = _at_most(_validation_details(data.get("errors") or data.get("messages")))
            fields = ", ".join(sorted(map(str, details))) if isinstance(details, dict) else ""
            message = f"invalid input: {fields}" if fields else "invalid input"
            return error_response(400, "validation_error", message, details,
                                  data.get("headers"))
        # Its own headers too: a 405's Allow, a 401's WWW-Authenticate.
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return error_response(exc.code or 500, _code_for(exc), exc.description or exc.name,
                              None, {**headers, **(data.get("headers") or {})})

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; the request id is in "
                              "the X-Request-Id header")
