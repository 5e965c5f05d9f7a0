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


def test_a_users_contact_is_found_past_the_first_page_of_its_prefix(monkeypatch):
    """One page of 100 was read: with more addresses beginning with the
    user's (pat@example.co among pat@example.co000.org...), a deleted
    user's contact was missed and stayed on the list, mailed every notice."""
    from urllib.parse import parse_qs, urlsplit
    from services.gateway import policy_mail
    pages = {None: ({"items": [{"id": f"c{i}", "email": f"pat@example.co{i:03d}.org"}
                               for i in range(100)], "next_cursor": "p2"}),
             "p2": {"items": [{"id": "mine", "email": "Pat@Example.co"}], "next_cursor": None}}
    asked = []

    def call(identity, service, method, path, body=None, ok=(200,)):
        cursor = parse_qs(urlsplit(path).query).get("cursor", [None])[0]
        asked.append(cursor)
        return pages[cursor]

    monkeypatch.setattr(policy_mail, "_call", call)
    assert [c["id"] for c in policy_mail._contacts_with(None, "pat@example.co")] == ["mine"]
    assert asked == [None, "p2"]
