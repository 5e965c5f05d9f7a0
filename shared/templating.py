"""The one template environment: campaigns checks templates with it at save
time, the sender renders them with it at send time.

Jinja2's immutable sandbox with a small allow-list of filters and no globals:
a template sees only the merge data it is given and can neither call
methods that mutate it nor reach Python internals. HTML templates
autoescape, so a contact's name can never inject markup.

Merge data (see `merge_context`): `email`, `name`, `fields` (custom fields,
`{{ fields.city | default("there") }}`), the same under `contact`, and the
links the sender adds: `unsubscribe_url`, `postal_address`. A missing value
renders empty (or its `default(...)`), it never fails a send.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Mapping

from jinja2 import ChainableUndefined, Environment, Template, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Names the sender provides on top of the contact's data.
UNSUBSCRIBE_URL = "unsubscribe_url"
POSTAL_ADDRESS = "postal_address"

ALLOWED_FILTERS = ("default", "d", "upper", "lower", "title", "capitalize", "trim",
                   "truncate", "replace", "escape", "e", "urlencode", "length", "join",
                   "first", "last", "int", "round", "wordwrap", "striptags")


class TemplateSyntaxProblem(ValueError):
    """A template that does not compile: where and why (for the API's error)."""

    def __init__(self, line: int | None, message: str):
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line
        self.message = message


class TemplateRenderProblem(ValueError):
    """A template that compiled but cannot render (e.g. the sandbox refused
    an operation). Permanent for that template version."""


def make_environment(html: bool) -> Environment:
    env = ImmutableSandboxedEnvironment(autoescape=html, undefined=ChainableUndefined,
                                       auto_reload=False, cache_size=0)
    env.filters = {name: env.filters[name] for name in ALLOWED_FILTERS}
    env.globals.clear()
    return env


_ENVIRONMENTS = {True: make_environment(True), False: make_environment(False)}


@lru_cache(maxsize=256)
def compile_template(source: str, html: bool) -> Template:
    """The compiled template (cached: a campaign compiles each part once)."""
    try:
        return _ENVIRONMENTS[html].from_string(source)
    except TemplateSyntaxError as exc:  # includes unknown filters (TemplateAssertionError)
        raise TemplateSyntaxProblem(exc.lineno, exc.message or str(exc)) from None
    except TemplateError as exc:
        raise TemplateSyntaxProblem(None, str(exc)) from None


def check(source: str, html: bool) -> None:
    """Raise TemplateSyntaxProblem unless `source` compiles in the sandbox."""
    compile_template(source, html)


def render(source: str, context: Mapping[str, Any], html: bool) -> str:
    return render_compiled(compile_template(source, html), context)


def render_compiled(template: Template, context: Mapping[str, Any]) -> str:
    try:
        return template.render(context)
    except TemplateError as exc:  # SecurityError and friends
        raise TemplateRenderProblem(str(exc)) from None


def merge_context(email: str, name: str | None, fields: Mapping[str, Any] | None,
                  **extra: Any) -> dict[str, Any]:
    """An absent name or field is left undefined, so `default(...)` applies."""
    contact: dict[str, Any] = {"email": email, "fields": {k: v for k, v in (fields or {}).items()
                                                          if v is not None and v != ""}}
    if name:
        contact["name"] = name
    return {**contact, "contact": contact, **extra}
