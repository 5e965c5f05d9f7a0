import pytest

from shared.http.internal_auth import (SIGNATURE, Identity, InvalidSignature, signed_headers,
                                       verify)


def test_signed_request_verifies():
    headers = signed_headers("s3cret", "GET", "/api/v1/lists?limit=5", Identity("acc", "key1"),
                             now=1000)
    assert verify("s3cret", headers, "GET", "/api/v1/lists?limit=5", now=1010) == \
        Identity("acc", "key1")


@pytest.mark.parametrize("change", [
    dict(method="DELETE"), dict(target="/api/v1/lists?limit=6"), dict(secret="other"),
    dict(now=1000 + 301)])
def test_anything_changed_is_refused(change):
    headers = signed_headers("s3cret", "GET", "/api/v1/lists?limit=5", Identity("acc", "k"),
                             now=1000)
    args = dict(secret="s3cret", method="GET", target="/api/v1/lists?limit=5", now=1000)
    args.update(change)
    with pytest.raises(InvalidSignature):
        verify(args["secret"], headers, args["method"], args["target"], now=args["now"])


def test_forged_account_header_is_refused():
    headers = signed_headers("s3cret", "GET", "/x", Identity("acc", "k"), now=1000)
    headers["X-Sandesh-Account"] = "someone-else"
    with pytest.raises(InvalidSignature):
        verify("s3cret", headers, "GET", "/x", now=1000)


def test_missing_headers_and_missing_secret_are_refused():
    with pytest.raises(InvalidSignature):
        verify("s3cret", {}, "GET", "/x")
    headers = signed_headers("", "GET", "/x", Identity("a", "k"))
    headers[SIGNATURE] = headers[SIGNATURE]
    with pytest.raises(InvalidSignature):
        verify("", headers, "GET", "/x")


def test_a_signature_with_non_ascii_characters_is_refused_not_an_error():
    headers = signed_headers("s3cret", "GET", "/x", Identity("acc", "k"), now=1000)
    headers[SIGNATURE] = "é" * len(headers[SIGNATURE])   # was a TypeError: a 500, not a 401
    with pytest.raises(InvalidSignature):
        verify("s3cret", headers, "GET", "/x", now=1000)
