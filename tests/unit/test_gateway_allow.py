"""What the gateway answers an OPTIONS with: the methods the merged OpenAPI
document gives the path (services/gateway/openapi.methods_in)."""
from services.gateway.openapi import methods_in

DOC = {"paths": {
    "/api/v1/suppressions": {"get": {}, "post": {}},
    "/api/v1/suppressions/check": {"post": {}},
    "/api/v1/suppressions/{suppression_id}": {"delete": {}, "parameters": []},
    "/api/v1/lists/{list_id}/imports": {"get": {}, "post": {}, "parameters": []},
}}


def test_a_paths_methods_come_with_head_beside_get_and_options():
    assert methods_in(DOC, "/api/v1/suppressions") == ["GET", "POST", "HEAD", "OPTIONS"]
    assert methods_in(DOC, "/api/v1/lists/abc/imports") == ["GET", "POST", "HEAD", "OPTIONS"]


def test_a_literal_segment_wins_over_a_parameter_that_also_matches():
    assert methods_in(DOC, "/api/v1/suppressions/check") == ["POST", "OPTIONS"]
    assert methods_in(DOC, "/api/v1/suppressions/checks") == ["DELETE", "OPTIONS"]


def test_a_parameter_is_one_whole_segment_and_a_path_no_document_names_is_none():
    for path in ("/api/v1/lists/a/b/imports", "/api/v1/lists//imports",
                 "/api/v1/lists/abc/imports/x", "/api/v1/suppressions/", "/api/v1/other",
                 "/api/v1/suppressionsX"):
        assert methods_in(DOC, path) is None, path
