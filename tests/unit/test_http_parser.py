"""The JSON body parser every service's routes share (shared/http/blueprint.py):
bad bodies get a JSON 4xx that says what is wrong, never a 500 or a silent 200."""
import flask_smorest
import marshmallow as ma
import pytest
from flask import Flask

from shared.http import blueprint
from shared.http.blueprint import Blueprint
from shared.http.errors import register_error_handlers


class Thing(ma.Schema):
    name = ma.fields.String()
    n = ma.fields.Integer()


def client_of(add_routes):
    """A test client of an app whose one Blueprint add_routes(blp) fills."""
    app = Flask("parser-test")
    app.config.update(API_TITLE="t", API_VERSION="v1", OPENAPI_VERSION="3.0.3")
    api = flask_smorest.Api(app)
    register_error_handlers(app)
    blp = Blueprint("things", __name__)
    add_routes(blp)
    api.register_blueprint(blp)
    return app.test_client()


@pytest.fixture
def client():
    def add_routes(blp):
        @blp.route("/things", methods=["POST", "PATCH"])
        @blp.arguments(Thing)
        def things(body):
            return body

    return client_of(add_routes)


def _post(client, body: bytes, content_type="application/json"):
    return client.post("/things", data=body, content_type=content_type)


def test_a_json_body_is_read(client):
    response = _post(client, b'{"name": "caf\\u00e9", "n": 2}')
    assert response.status_code == 200 and response.get_json() == {"name": "café", "n": 2}


@pytest.mark.parametrize("body", [
    b'{"n": ' + b"1" * 5000 + b"}",        # more digits than int() takes
    b"[" * 100_000 + b"]" * 100_000,       # deeper than Python recurses
    b'{"name": ',                          # plain bad JSON, as before
])
def test_json_that_cannot_be_taken_is_a_400_naming_the_body(client, body):
    response = _post(client, body)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "validation_error" and "Invalid JSON body" in error["details"]["_body"][0]


def test_a_body_that_is_not_json_is_a_415_not_an_empty_change(client):
    for method in (client.post, client.patch):
        response = method("/things", data='{"name": "x"}', content_type="text/plain")
        assert response.status_code == 415
        assert response.get_json()["error"]["code"] == "unsupported_media_type"
    assert client.patch("/things").status_code == 200  # no body at all: nothing to check


def test_a_body_over_the_limit_is_a_413(client, monkeypatch):
    monkeypatch.setattr(blueprint, "MAX_JSON_BYTES", 64)
    assert _post(client, b'{"name": "' + b"x" * 40 + b'"}').status_code == 200
    response = _post(client, b'{"name": "' + b"x" * 80 + b'"}')
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"


NUL = "the NUL character (\\u0000) is not allowed"
HALF_PAIR = "Invalid JSON body: a \\u escape names half of a surrogate pair."


@pytest.mark.parametrize("body,field,message", [
    # NUL was stored as given in 37 fields (a list's name, a template...)
    (b'{"name": "a\\u0000b"}', "name", NUL),
    (b'{"name": "ok", "tags": ["x", {"k": "\\u0000"}]}', "tags.1.k", NUL),
    (b'{"fields": {"ci\\u0000ty": "Pune"}}', "fields", NUL),
    (b'"\\u0000"', "_body", NUL),
    # BSON cannot store half a surrogate pair; the answer named the body, not the field
    (b'{"name": "\\ud800"}', "name", HALF_PAIR),
    (b'{"tags": ["ok", {"k\\udfff": 1}]}', "tags.1", HALF_PAIR),
    (b'"\\ud800"', "_body", HALF_PAIR),
])
def test_text_no_field_can_take_is_a_400_naming_where(client, body, field, message):
    response = _post(client, body)
    assert response.status_code == 400
    assert response.get_json()["error"]["details"] == {field: [message]}


def test_a_nul_deep_in_a_body_is_found(client):
    assert _post(client, b"[" * 900 + b'"\\u0000"' + b"]" * 900).status_code == 400


def test_a_query_parameter_or_a_body_where_none_is_taken_is_a_400():
    """GET /lists/<id>?expand=members answered 200, as if understood."""
    class Page(ma.Schema):
        limit = ma.fields.Integer()

    def add_routes(blp):
        @blp.route("/plain", methods=["GET", "POST"])
        @blp.response(200)
        def plain():
            return {"ok": True}

        @blp.route("/paged")
        @blp.arguments(Page, location="query")
        def paged(args):
            return args

    client = client_of(add_routes)
    assert client.get("/plain").status_code == 200
    refused = client.get("/plain?expand=members&b=1")
    assert refused.status_code == 400
    assert refused.get_json()["error"]["details"] == {"b": ["Unknown field."],
                                                      "expand": ["Unknown field."]}
    assert client.get("/paged?limit=3").get_json() == {"limit": 3}
    assert client.post("/plain").status_code == 200
    with_body = client.post("/plain", data="{junk", content_type="application/json")
    assert with_body.status_code == 400
    assert with_body.get_json()["error"]["details"] == {"_body": ["this endpoint takes no body"]}
    assert client.post("/plain", data=" {} ", content_type="application/json").status_code == 200
    twice = client.get("/paged?limit=3&limit=500")
    assert twice.status_code == 400
    assert twice.get_json()["error"]["details"] == {"limit": ["given more than once"]}
    assert client.get("/paged?nope=1").status_code == 400
    nul = client.get("/paged?limit=1%00")
    assert nul.status_code == 400
    assert nul.get_json()["error"]["details"] == {"limit": ["the NUL character (%00) is not allowed"]}


def test_thousands_of_bad_fields_are_named_fifty_and_counted(client):
    """20,000 unknown keys in a 240 KB body came back as a 700 KB 400
    naming each."""
    import json
    body = json.dumps({f"k{i:05d}": 1 for i in range(20_000)}).encode()
    response = _post(client, body)
    assert response.status_code == 400 and len(response.get_data()) < 10_000
    details = response.get_json()["error"]["details"]
    assert len(details) == 51 and details["_more"] == ["19950 more fields are wrong"]
    assert "k00000" in details


def test_a_json_boolean_is_true_or_false_only():
    """"tracking": "no" turned tracking off; "yes" and 1 were true."""
    from shared.http.fields import JsonBoolean

    class Flags(ma.Schema):
        on = JsonBoolean()

    assert Flags().load({"on": True}) == {"on": True}
    assert Flags().load({"on": False}) == {"on": False}
    for value in ("no", "yes", "true", 1, 0, None):
        with pytest.raises(ma.ValidationError) as caught:
            Flags().load({"on": value})
        assert "on" in caught.value.messages
