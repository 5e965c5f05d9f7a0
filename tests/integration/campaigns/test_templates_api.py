"""Templates: validated in the sender's sandbox at save, versioned, immutable."""
import base64

import pytest

HTML = ('<html><body><h1>Hello {{ name | default("there") }}</h1>'
        '<p>See <a href="https://shop.example.com/sale">the sale</a>.</p></body></html>')


def create(client, **overrides):
    body = {"name": "Spring", "subject": "Hi {{ name | default('there') }}", "html": HTML,
            **overrides}
    response = client.post("/api/v1/templates", body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_create_derives_text_and_appends_unsubscribe_and_postal_address(client):
    template = create(client)
    current = template["current"]
    assert template["version"] == 1 and current["version"] == 1
    assert current["text_derived"] is True
    assert "the sale (https://shop.example.com/sale)" in current["text"]
    assert "{{ unsubscribe_url }}" in current["html"] and "{{ unsubscribe_url }}" in current["text"]
    assert "{{ postal_address }}" in current["html"] and "{{ postal_address }}" in current["text"]
    assert current["html"].index("{{ unsubscribe_url }}") < current["html"].index("</body>")
    assert current["links"] == ["https://shop.example.com/sale"]


def test_a_template_with_its_own_unsubscribe_link_is_left_alone(client):
    html = '<p>Hi</p><p><a href="{{ unsubscribe_url }}">Leave</a> {{ postal_address }}</p>'
    current = create(client, html=html, text="Hi {{ unsubscribe_url }} {{ postal_address }}")
    assert current["current"]["html"] == html
    assert current["current"]["text_derived"] is False


def test_system_mail_gets_no_footer_and_is_the_platforms_alone(client):
    """System mail carries no unsubscribe link, List-Unsubscribe or postal
    address: any account could send its marketing that way (CAN-SPAM)."""
    body = {"name": "Code", "kind": "system", "subject": "s", "html": "<p>Your code</p>"}
    refused = client.post("/api/v1/templates", body)
    assert refused.status_code == 403 and "kind" in refused.get_json()["error"]["details"]
    made = client.post("/api/v1/templates", body, principal="operator")
    assert made.status_code == 201
    assert "unsubscribe_url" not in made.get_json()["current"]["html"]
    path = f"/api/v1/templates/{made.get_json()['id']}"
    assert client.patch(path, {"kind": "system", "subject": "t"}).status_code == 403
    campaign = client.post("/api/v1/campaigns", {"name": "x", "kind": "system"})
    assert campaign.status_code == 403
    draft = client.post("/api/v1/campaigns", {"name": "x"}).get_json()
    assert client.patch(f"/api/v1/campaigns/{draft['id']}", {"kind": "system"}).status_code == 403


def test_a_template_that_does_not_parse_is_refused_with_field_line_and_reason(client):
    response = client.post("/api/v1/templates", {
        "name": "Broken", "subject": "ok", "html": "<p>one</p>\n<p>{{ name </p>\n"})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert "html" in error["details"]
    assert "line 2" in error["details"]["html"][0]


def test_a_filter_outside_the_allow_list_is_refused(client):
    response = client.post("/api/v1/templates", {
        "name": "Sneaky", "subject": "{{ name | attr('x') }}", "html": "<p>x</p>"})
    assert response.status_code == 400
    assert "subject" in response.get_json()["error"]["details"]


@pytest.mark.parametrize("value", ["a\r\nBcc: x@y.z", "A\u0000B", "A\u001bC", "A\u000bD"])
def test_line_breaks_and_control_characters_in_subject_or_preheader_are_refused(client, value):
    for field in ("subject", "preheader"):
        body = {"name": "x", "subject": "s", "html": "<p>x</p>", field: value}
        response = client.post("/api/v1/templates", body)
        assert response.status_code == 400
        assert field in response.get_json()["error"]["details"]


def test_every_edit_is_a_new_version_and_old_versions_stay(client):
    template = create(client)
    path = f"/api/v1/templates/{template['id']}"
    response = client.patch(path, {"subject": "New subject"})
    assert response.status_code == 200
    edited = response.get_json()
    assert edited["version"] == 2 and edited["current"]["subject"] == "New subject"
    assert edited["current"]["html"] == template["current"]["html"]
    first = client.get(f"{path}/versions/1").get_json()
    assert first["subject"] == template["current"]["subject"]
    versions = client.get(f"{path}/versions?limit=1").get_json()
    assert [v["version"] for v in versions["items"]] == [1]
    rest = client.get(f"{path}/versions?limit=1&cursor={versions['next_cursor']}").get_json()
    assert [v["version"] for v in rest["items"]] == [2] and rest["next_cursor"] is None
    for missing in ("0", "3", str(10 ** 20)):   # not the latest; no overflow past 8 bytes
        assert client.get(f"{path}/versions/{missing}").status_code == 404
    huge = base64.urlsafe_b64encode(b'{"version": 100000000000000000000}').decode()
    refused = client.get(f"{path}/versions?cursor={huge}")
    assert refused.status_code == 400 and "cursor" in refused.get_json()["error"]["details"]
    bad = client.patch(path, {"html": "{% if %}"})
    assert bad.status_code == 400 and "html" in bad.get_json()["error"]["details"]
    assert client.get(path).get_json()["version"] == 2


def test_an_empty_edit_is_a_400_and_makes_no_version(client):
    """An empty PATCH answered 200 and made a new version, identical to the
    last, that could never be removed."""
    template = create(client)
    path = f"/api/v1/templates/{template['id']}"
    for body in ({}, None):
        response = client.patch(path, body)
        assert response.status_code == 400, response.get_json()
        assert list(response.get_json()["error"]["details"]) == ["_body"]
    assert client.get(path).get_json()["version"] == 1


def test_another_account_sees_nothing(client):
    template = create(client)
    other = client.get(f"/api/v1/templates/{template['id']}", account_id="someone-else")
    assert other.status_code == 404
    listing = client.get("/api/v1/templates", account_id="someone-else").get_json()
    assert listing["items"] == []


def test_unknown_fields_are_refused(client):
    response = client.post("/api/v1/templates", {"name": "x", "subject": "s", "html": "<p/>",
                                                 "account_id": "other"})
    assert response.status_code == 400
    assert "account_id" in response.get_json()["error"]["details"]


def test_a_template_too_large_for_its_launch_event_is_refused_at_save(client):
    """campaign.launched carries the template, and a Kafka message is at
    most 1 MiB: 180,000 characters of Hindi (3 bytes each, then the text
    part derived from them) saved, and its campaign was stuck in "sending"."""
    hindi = "<p>" + "नमस्ते दुनिया " * 13_000 + "</p>"
    assert len(hindi) < 1_000_000   # within the field's own length limit
    response = client.post("/api/v1/templates", {"name": "Big", "subject": "Hi", "html": hindi})
    assert response.status_code == 400, response.get_json()
    assert "at most 700,000" in response.get_json()["error"]["details"]["html"][0]
    create(client, html="<p>" + "नमस्ते दुनिया " * 5_000 + "</p>")  # a large one that fits


def test_a_placeholder_in_a_comment_or_under_fields_still_gets_the_footer(client):
    """The check was whether the source held the placeholder's name, so a
    comment saying "unsubscribe_url" left the template without a link."""
    for html in ("<p>Hi</p>{# unsubscribe_url postal_address: TODO #}",
                 '<p>Hi <a href="{{ fields.unsubscribe_url }}">x</a> {{ fields.postal_address }}</p>'):
        current = create(client, html=html)["current"]
        for part in (current["html"], current["text"]):
            assert "{{ unsubscribe_url }}" in part and "{{ postal_address }}" in part
