import pytest

from shared import templating
from shared.templating import TemplateRenderProblem, TemplateSyntaxProblem, merge_context


def test_merge_fields_with_defaults():
    ctx = merge_context("jane@example.com", None, {"city": "Pune", "empty": ""})
    out = templating.render('{{ name|default("friend") }} in {{ fields.city }}, '
                            '{{ fields.empty|default("n/a") }} {{ fields.nope.deeper|default("-") }}',
                            ctx, html=False)
    assert out == "friend in Pune, n/a -"


def test_html_autoescapes_merge_data_but_text_does_not():
    ctx = merge_context("a@example.com", "<b>Jo & Co</b>", {})
    assert templating.render("{{ name }}", ctx, html=True) == "&lt;b&gt;Jo &amp; Co&lt;/b&gt;"
    assert templating.render("{{ name }}", ctx, html=False) == "<b>Jo & Co</b>"


@pytest.mark.parametrize("source,line", [("ok\n{% if %}", 2), ("{{ name|nosuch }}", 1),
                                         ("{{ name|safe }}", 1)])
def test_syntax_problems_name_the_line(source, line):
    with pytest.raises(TemplateSyntaxProblem) as info:
        templating.check(source, html=True)
    assert info.value.line == line and info.value.message


@pytest.mark.parametrize("source", ["{{ fields.update({'x': 1}) }}", "{{ range(3) }}",
                                    "{{ ''.__class__.__mro__[1].__subclasses__() }}"])
def test_sandbox_refuses_anything_but_the_merge_data(source):
    with pytest.raises(TemplateRenderProblem):
        templating.render(source, merge_context("a@example.com", "A", {}), html=False)
