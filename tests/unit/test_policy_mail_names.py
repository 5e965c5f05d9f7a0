"""The name a policy notice's contact gets from an account user's: one line,
as contacts takes it. A user stored with a line break in their name made
contacts refuse them, and that failed the whole mailing, every user's."""
from services.gateway.policy_mail import CONTACT_NAME_MAX, _contact_name
from services.gateway.users import UserIn


def test_a_users_name_with_line_breaks_or_controls_becomes_one_line():
    assert _contact_name("Ana\r\nBcc: x@example.com") == "Ana Bcc: x@example.com"
    assert _contact_name("Ana\x00 \tLee") == "Ana Lee"
    assert _contact_name(None) == ""
    assert len(_contact_name("a" * 300)) == CONTACT_NAME_MAX


def test_a_user_cannot_be_given_a_name_with_a_line_break_any_more():
    for name in ("Ana\nLee", "Ana Lee\n", "Ana\x00"):
        assert "name" in UserIn().validate({"email": "ana@example.com", "name": name}), name
    assert UserIn().validate({"email": "ana@example.com", "name": "Ana\tLee"}) == {}


def test_template_syntax_in_a_policy_summary_is_shown_as_written_never_run():
    from shared import templating
    from services.gateway.policy_mail import _inert
    summary = "We keep {{ name }} and {% for x in y %}data{% endfor %} <b>30 days</b>"
    source = f"<p>{_inert(summary)}</p>"
    templating.check(source, True)
    rendered = templating.render(source, {"name": "SECRET"}, True)
    assert "SECRET" not in rendered
    import html
    assert html.unescape(rendered) == f"<p>{summary}</p>"
