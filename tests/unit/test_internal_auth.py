import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from shared.http.internal_auth import (CONTENT_SHA256, SIGNATURE, UNSIGNED_PAYLOAD, Identity,
                                       InvalidSignature, canonical_query, signed_headers, verify)

BODY = b'{"name": "Newsletter"}'


def body_of(data: bytes):
    return lambda: data


def test_signed_request_verifies():
    headers = signed_headers("s3cret", "GET", "/api/v1/lists?limit=5", Identity("acc", "key1"),
                             now=1000)
    assert verify("s3cret", headers, "GET", "/api/v1/lists?limit=5", body_of(b""),
                  now=1010) == Identity("acc", "key1")


def test_a_signed_body_verifies():
    headers = signed_headers("s3cret", "POST", "/api/v1/lists", Identity("acc", "k"), BODY,
                             now=1000)
    assert verify("s3cret", headers, "POST", "/api/v1/lists", body_of(BODY), now=1000) == \
        Identity("acc", "k")


@pytest.mark.parametrize("change", [
    dict(method="DELETE"), dict(target="/api/v1/lists?limit=6"), dict(secret="other"),
    dict(now=1000 + 301), dict(body=b'{"name": "Newsletter", "x": 1}')])
def test_anything_changed_is_refused(change):
    headers = signed_headers("s3cret", "POST", "/api/v1/lists?limit=5", Identity("acc", "k"),
                             BODY, now=1000)
    args = dict(secret="s3cret", method="POST", target="/api/v1/lists?limit=5", now=1000,
                body=BODY)
    args.update(change)
    with pytest.raises(InvalidSignature):
        verify(args["secret"], headers, args["method"], args["target"], body_of(args["body"]),
               now=args["now"])


def test_a_replayed_request_with_another_body_is_refused():
    """A signed PATCH seen on the network, sent again within the five
    minutes a signature lives, with a body of the sender's choosing."""
    headers = signed_headers("s3cret", "PATCH", "/api/v1/contacts/c1", Identity("acc", "k"),
                             b'{"name": "Ann"}', now=1000)
    with pytest.raises(InvalidSignature, match="body"):
        verify("s3cret", headers, "PATCH", "/api/v1/contacts/c1",
               body_of(b'{"status": "active", "name": "Mallory"}'), now=1010)


def test_a_digest_swapped_for_unsigned_payload_breaks_the_signature():
    headers = signed_headers("s3cret", "PATCH", "/x", Identity("acc", "k"), b"{}", now=1000)
    headers[CONTENT_SHA256] = UNSIGNED_PAYLOAD
    headers["Content-Type"] = "multipart/form-data; boundary=b"
    with pytest.raises(InvalidSignature, match="bad signature"):
        verify("s3cret", headers, "PATCH", "/x", body_of(b"anything"), now=1000)


def test_only_an_upload_may_leave_its_body_unsigned_and_its_body_is_not_read():
    read = []
    headers = signed_headers("s3cret", "POST", "/api/v1/lists/l1/imports", Identity("acc", "k"),
                             None, now=1000)
    upload = {**headers, "Content-Type": "multipart/form-data; boundary=xyz"}
    assert verify("s3cret", upload, "POST", "/api/v1/lists/l1/imports",
                  lambda: read.append(1) or b"", now=1000) == Identity("acc", "k")
    assert read == []
    as_json = {**headers, "Content-Type": "application/json"}
    with pytest.raises(InvalidSignature, match="upload"):
        verify("s3cret", as_json, "POST", "/api/v1/lists/l1/imports", body_of(b"{}"), now=1000)


def test_a_bad_signature_never_gets_the_body_read():
    headers = signed_headers("s3cret", "POST", "/x", Identity("acc", "k"), BODY, now=1000)
    headers[SIGNATURE] = "0" * 64

    def refuse_to_read():
        raise AssertionError("the body was read before the signature was checked")
    with pytest.raises(InvalidSignature, match="bad signature"):
        verify("s3cret", headers, "POST", "/x", refuse_to_read, now=1000)


def test_forged_account_header_is_refused():
    headers = signed_headers("s3cret", "GET", "/x", Identity("acc", "k"), now=1000)
    headers["X-Sandesh-Account"] = "someone-else"
    with pytest.raises(InvalidSignature):
        verify("s3cret", headers, "GET", "/x", body_of(b""), now=1000)


def test_missing_headers_and_missing_secret_are_refused():
    with pytest.raises(InvalidSignature):
        verify("s3cret", {}, "GET", "/x", body_of(b""))
    headers = signed_headers("s3cret", "GET", "/x", Identity("a", "k"))
    del headers[CONTENT_SHA256]
    with pytest.raises(InvalidSignature, match="gateway"):
        verify("s3cret", headers, "GET", "/x", body_of(b""))
    headers = signed_headers("", "GET", "/x", Identity("a", "k"))
    with pytest.raises(InvalidSignature):
        verify("", headers, "GET", "/x", body_of(b""))


def test_a_signature_with_non_ascii_characters_is_refused_not_an_error():
    headers = signed_headers("s3cret", "GET", "/x", Identity("acc", "k"), now=1000)
    headers[SIGNATURE] = "é" * len(headers[SIGNATURE])   # was a TypeError: a 500, not a 401
    with pytest.raises(InvalidSignature):
        verify("s3cret", headers, "GET", "/x", body_of(b""), now=1000)
    headers = signed_headers("s3cret", "POST", "/x", Identity("acc", "k"), BODY, now=1000)
    headers[CONTENT_SHA256] = "é"
    with pytest.raises(InvalidSignature):
        verify("s3cret", headers, "POST", "/x", body_of(BODY), now=1000)


@pytest.mark.parametrize("raw, canonical", [
    (b"name=%c3%a9", "name=%C3%A9"), (b"name=%7e%41", "name=~A"), (b"a=1%2fb", "a=1%2Fb"),
    (b"a=100%", "a=100%25"), (b"a=%zz", "a=%25zz"), (b"a=b c", "a=b%20c"),
    (b"a=\xff", "a=%FF"), (b"e=ann@x.com&f=[1]", "e=ann@x.com&f=%5B1%5D")])
def test_a_query_has_one_canonical_spelling(raw, canonical):
    assert canonical_query(raw) == canonical


def _sent_query(query: str) -> str:
    """The query requests (and urllib3) put on the wire for this one."""
    return requests.Request("GET", f"http://service/api/v1/x?{query}").prepare().url.split("?", 1)[1]


@given(st.binary(max_size=40))
def test_the_http_client_sends_the_canonical_query_unchanged(raw):
    """What the gateway signs is what the service receives: requests turned
    %7e into ~ and %c3 into %C3 on the way, and the signatures differed."""
    canonical = canonical_query(raw)
    assert canonical_query(canonical.encode()) == canonical
    if canonical:
        assert _sent_query(canonical) == canonical


def test_a_query_spelt_two_ways_verifies_either_way():
    headers = signed_headers("s3cret", "GET", "/api/v1/contacts?name=%c3%a9", Identity("a", "k"),
                             now=1000)
    assert verify("s3cret", headers, "GET", "/api/v1/contacts?name=%C3%A9", body_of(b""),
                  now=1000) == Identity("a", "k")
