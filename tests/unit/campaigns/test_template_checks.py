"""A template the sender's sandbox would refuse is refused when saved (400
naming the part, the line and the reason), not at send for every recipient."""
import pytest

from services.campaigns import usecases
from shared import templating
from shared.http.errors import ApiError


class _Templates:
    def create(self, account_id, meta, parts):
        return meta, parts


def save(**parts):
    body = {"name": "t", "subject": "Hi", "html": "<p>Hi</p>", **parts}
    ports = usecases.Ports(templates=_Templates(), campaigns=None, jobs=None, progress=None,
                           producer=None)
    return usecases.create_template(ports, "account-1", body)


def refusal(**parts) -> ApiError:
    with pytest.raises(ApiError) as caught:
        save(**parts)
    assert (caught.value.status, caught.value.code) == (400, "validation_error")
    return caught.value


@pytest.mark.parametrize("field,source,line,reason", [
    ("html", '<p>{% include "/etc/passwd" %}</p>', 1, "include is not allowed"),
    ("html", '<p>Hi</p>\n\n{% import "macros" as m %}', 3, "import is not allowed"),
    ("html", '{% from "macros" import row %}', 1, "from ... import is not allowed"),
    ("html", '<p>Hi</p>\n{% extends "/etc/passwd" %}', 2, "extends is not allowed"),
    ("html", "<p>{{ ''.__class__.__mro__ }}</p>", 1, "a name starting with _ is not allowed"),
    ("text", "Hi\n{{ name._foo }}", 2, "'_foo': a name starting with _"),
    ("html", '<p>{{ name["__class__"] }}</p>', 1, "'__class__': a name starting with _"),
    ("html", "{% for i in range(100000000) %}<p>{{ i }}</p>{% endfor %}", 1,
     "only these methods can be called"),
    ("html", "<p>\n{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", 2, "a macro is not allowed"),
    ("text", "{% if name is in 'Ann' %}x{% endif %}", 1, "the test 'in' is not allowed"),
    ("subject", '{{ "x"*1000000 }}', 1, "a repetition over 10000"),
    ("preheader", '{{ name | default("x") * 20000 }}', 1, "a repetition over 10000"),
])
def test_what_the_sandbox_would_refuse_is_refused_at_save(field, source, line, reason):
    error = refusal(**{field: source})
    assert list(error.details) == [field] and field in error.message
    message = error.details[field][0]
    assert message.startswith(f"template error at line {line}: ") and reason in message


@pytest.mark.parametrize("field,source,reason", [
    ("subject", '{{ "Hi\\r\\nBcc: victim@example.com" }}', "when rendered: must not contain a "
                                                          "line break"),
    ("subject", '{{ name | default("") | wordwrap(3) }}', "line break"),
    ("subject", '{{ "x" * 999 }}', "renders to 999 characters; at most 998"),
    ("preheader", '{{ "x" * 501 }}', "renders to 501 characters; at most 500"),
])
def test_a_header_that_renders_what_the_sender_refuses_is_refused(field, source, reason):
    error = refusal(**{field: source})
    assert list(error.details) == [field] and reason in error.details[field][0]


def test_ordinary_templates_still_save():
    html = ('<html><body><h1>Hello {{ name | default("there") | title }}</h1>'
            '<p>{{ fields.city | default("your city") | upper }}, '
            '{{ contact.fields.plan | default("free") }}</p><ul>'
            '{% for item in ["shoes", "hats"] %}<li>{{ loop.index }}. {{ item | capitalize }}'
            '</li>{% endfor %}</ul><p>{{ ["a", "b"] | join(", ") }} '
            '{{ fields.bio | default("a long story") | truncate(9) | replace("long", "short") }}'
            ' {{ "-" * 20 }}</p>'
            '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> {{ postal_address }}</p>'
            '</body></html>')
    subject = "Hi {{ name | default('there') }}, {{ fields.n | default(0) | int + 1 }} left"
    meta, parts = save(subject=subject, preheader="For {{ email }}", html=html)
    assert parts["html"] == html and "Unsubscribe" in parts["text"]


def test_a_custom_field_is_rendered_as_missing_so_one_that_fails_without_a_default_is_refused():
    """A contact without the field would fail to compose: int() of nothing."""
    error = refusal(subject="{{ fields.age | int }} years")
    assert "has no attribute 'age'" in error.details["subject"][0]
    save(subject='{{ fields.age | default(30) | int }} years')


def test_the_repetition_limit_is_the_same_at_save_and_at_send():
    context = templating.merge_context("jo@example.com", "Jo", {})
    at_the_limit, over_it = '<p>{{ "x" * 10000 }}</p>', '<p>{{ "x" * 10001 }}</p>'
    save(html=at_the_limit)
    assert templating.render(at_the_limit, context, html=True) == f"<p>{'x' * 10000}</p>"
    refusal(html=over_it)
    with pytest.raises(templating.TemplateRenderProblem, match="repetition over 10000"):
        templating.render(over_it, context, html=True)


def test_html_that_breaks_once_its_links_are_tracked_is_refused():
    """The sender replaces each link by its click URL: a link holding "#}"
    had closed a comment the template opened, and every recipient failed."""
    error = refusal(html='<html><body>{# <a href="http://a.b/#}">x</a> {% if name %} #}'
                         ' {% endif %}</body></html>')
    assert list(error.details) == ["html"] and "links tracked" in error.details["html"][0]


def test_a_preheader_and_html_that_pass_alone_but_not_as_sent_together_are_refused():
    """The sender renders the preheader inside the HTML part, one template:
    one render budget."""
    error = refusal(preheader="{{ ('x' * 10000 * 9)|length }}",
                    html="<p>{{ ('x' * 10000 * 17)|length }}</p>")
    assert list(error.details) == ["preheader"]
    assert "preheader inside the HTML" in error.details["preheader"][0]
