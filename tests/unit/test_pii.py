import pytest

from shared.pii import InvalidEmail, email_domain, email_hash, normalise_email


@pytest.mark.parametrize("raw,expected", [
    ("  Jane.Doe@Example.COM ", "Jane.Doe@example.com"),
    ("user@BÜCHER.de", "user@bücher.de"),
    ("user@xn--bcher-kva.de", "user@bücher.de"),
])
def test_normalises(raw, expected):
    assert normalise_email(raw) == expected


@pytest.mark.parametrize("raw", ["", "no-at-sign", "a@b", "a b@example.com", "x@-bad-.com",
                                 "a" * 65 + "@example.com", "x@" + "d" * 250 + ".com",
                                 "a@b@example.com", None])
def test_refuses(raw):
    with pytest.raises(InvalidEmail):
        normalise_email(raw)


def test_hash_is_keyed_and_case_insensitive():
    h = email_hash("Jane@example.com", "salt1")
    assert h == email_hash("jane@EXAMPLE.com", "salt1")
    assert h != email_hash("jane@example.com", "salt2")
    assert "jane" not in h
    assert email_domain("jane@example.com") == "example.com"
