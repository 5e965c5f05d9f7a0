"""Where a click is sent: a stored link as a browser would request it."""
from __future__ import annotations

from services.tracking.redirects import redirect_location


def test_a_printable_link_is_sent_as_stored():
    """Encoding it again could change the query a signed URL's signature covers."""
    for url in ("https://cdn.example/f?sig=a|b^c&x={1}", "HTTP://shop.example/" + "a" * 5000):
        assert redirect_location(url) == url


def test_a_non_ascii_host_goes_in_idna_form():
    assert redirect_location("https://b\u00fccher.example:8443/caf\u00e9?q=\u00fc") == \
        "https://xn--bcher-kva.example:8443/caf%C3%A9?q=%C3%BC"
    assert redirect_location("https://\u4f8b\u3048.jp/") == "https://xn--r8jz45g.jp/"


def test_what_cannot_be_sent_goes_nowhere():
    for url in ("https://a..\u4f8b.example/", "javascript:alert('\u00e9')", "", "ftp://x.example/\u00e9"):
        assert redirect_location(url) is None
