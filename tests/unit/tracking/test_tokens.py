"""Signed tracking tokens: round trip, tampering, truncation, rotation."""
from __future__ import annotations

import base64
import hmac
import uuid

import pytest

from shared import tracking_tokens as tt
from shared.tracking_tokens import InvalidToken, Keyring, LinkContext

KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()


SENT_AT = 1_796_000_000   # 2026-11-30, in a version 2 token


def ctx(sent_at: int | None = None) -> LinkContext:
    return LinkContext(*(uuid.uuid4().hex for _ in range(4)), sent_at=sent_at)


@pytest.fixture
def ring() -> Keyring:
    return Keyring.from_env(f"k1:{KEY_A}")


def all_tokens(ring, c):
    """Every kind, with and without the time the message was sent."""
    list_id = uuid.uuid4().hex
    timed = LinkContext(c.account_id, c.campaign_id, c.contact_id, c.job_id, sent_at=SENT_AT)
    return [token for each in (c, timed) for token in (
        tt.open_token(ring, each), tt.click_token(ring, each, 7),
        tt.unsubscribe_token(ring, each), tt.unsubscribe_token(ring, each, list_id))
    ] + [tt.bounce_token(ring, c), tt.click_token(ring, timed, 3, PERSONAL)]


PERSONAL = "https://shop.example/account?id=42&ref=mail"


def test_round_trip_of_every_kind(ring):
    c = ctx()
    list_id = uuid.uuid4().hex
    assert tt.verify(ring, tt.open_token(ring, c)) == tt.Claims("open", c, None, None, c.job_id, 1)
    click = tt.verify(ring, tt.click_token(ring, c, 65535))
    assert (click.kind, click.context, click.link_index) == ("click", c, 65535)
    unsub = tt.verify(ring, tt.unsubscribe_token(ring, c, list_id))
    assert (unsub.kind, unsub.context, unsub.list_id) == ("unsubscribe", c, list_id)
    assert tt.verify(ring, tt.unsubscribe_token(ring, c)).list_id is None
    bounce = tt.verify(ring, tt.bounce_token(ring, c))
    assert (bounce.kind, bounce.job_id, bounce.context) == ("bounce", c.job_id, None)


def test_a_version_2_token_carries_when_its_message_was_sent(ring):
    """Tracking judges a hit soon after delivery by it, before it has read
    the message's delivery.sent. Version 1 tokens (sent before) still verify."""
    c = ctx(SENT_AT)
    list_id = uuid.uuid4().hex
    assert tt.verify(ring, tt.open_token(ring, c)) == tt.Claims("open", c, None, None, c.job_id, 1)
    click = tt.verify(ring, tt.click_token(ring, c, 65535))
    assert (click.context.sent_at, click.link_index) == (SENT_AT, 65535)
    unsub = tt.verify(ring, tt.unsubscribe_token(ring, c, list_id))
    assert (unsub.context, unsub.list_id) == (c, list_id)
    assert tt.verify(ring, tt.unsubscribe_token(ring, c)).context.sent_at == SENT_AT
    assert tt.verify(ring, tt.open_token(ring, ctx())).context.sent_at is None
    assert tt.verify(ring, tt.bounce_token(ring, c)).job_id == c.job_id   # bounce: no time
    raw = base64.urlsafe_b64decode(tt.open_token(ring, c) + "==")
    assert raw[1] >> 4 == 2 and int.from_bytes(raw[66:70], "big") == SENT_AT


@pytest.mark.parametrize("sent_at", [-1, 2 ** 32, 1.5, "1796000000"])
def test_a_sent_time_a_token_cannot_hold_is_refused(sent_at):
    with pytest.raises(ValueError):
        ctx(sent_at)


def test_a_personal_links_click_token_carries_its_url_signed(ring):
    c = ctx(SENT_AT)
    click = tt.verify(ring, tt.click_token(ring, c, 3, PERSONAL))
    assert (click.kind, click.context, click.link_index, click.url) == ("click", c, 3, PERSONAL)
    assert tt.verify(ring, tt.click_token(ring, c, 3)).url is None
    # Merge data made it ("?email="): it is not readable from the token,
    # which every request log on the way to tracking holds.
    raw = base64.urlsafe_b64decode(tt.click_token(ring, c, 3, PERSONAL) + "==")
    assert b"shop" not in raw and b"ref=mail" not in raw
    loop = [tt.click_token(ring, c, 3, f"https://shop.example/p/{n}") for n in range(2)]
    assert loop[0][:96] == loop[1][:96] and loop[0][96:110] != loop[1][96:110]  # own nonces
    assert [tt.verify(ring, token).url for token in loop] == [
        "https://shop.example/p/0", "https://shop.example/p/1"]
    longest = "https://s.example/" + "a" * (tt.MAX_PERSONAL_URL_BYTES - 18)
    assert tt.verify(ring, tt.click_token(ring, c, 0, longest)).url == longest
    # What the tracking service accepts in a request line (gunicorn: 4,094 bytes).
    assert len(f"GET /t/c/{tt.click_token(ring, c, 0, longest)} HTTP/1.1") < 4094


def test_a_token_cannot_carry_a_url_it_should_not_redirect_to(ring):
    for url in ("javascript:alert(1)", "https://shop.example/a b", "https://shop.example/\r\nX: y",
                "https://shop.example/zürich", "https://s.example/" + "a" * tt.MAX_PERSONAL_URL_BYTES):
        with pytest.raises(ValueError):
            tt.click_token(ring, ctx(SENT_AT), 0, url)
    with pytest.raises(ValueError):  # version 1 has no room for it
        tt.click_token(ring, ctx(), 0, PERSONAL)


def test_link_mac_is_truncated_hmac_sha256_of_the_token(ring):
    """The format every sender and tracking pod must agree on, checked
    against the standard library's one-shot HMAC."""
    raw = base64.urlsafe_b64decode(tt.click_token(ring, ctx(), 3) + "==")
    message, mac = raw[:-tt.LINK_MAC_BYTES], raw[-tt.LINK_MAC_BYTES:]
    assert mac == hmac.digest(b"a" * 32, message, "sha256")[:tt.LINK_MAC_BYTES]


def test_tokens_are_compact_and_url_safe(ring):
    c = ctx()
    for token in all_tokens(ring, c):
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert "=" not in token
    assert len(tt.open_token(ring, c)) == 104
    assert len(tt.click_token(ring, c, 3)) == 107
    assert len(tt.open_token(ring, ctx(SENT_AT))) == 110
    assert len(tt.click_token(ring, ctx(SENT_AT), 3)) == 112
    assert len(tt.bounce_token(ring, ctx(SENT_AT))) == 45


def test_every_byte_flipped_is_rejected(ring):
    for token in all_tokens(ring, ctx()):
        is_bounce = len(token) == 45
        raw = (base64.b32decode(token.upper() + "=" * (-len(token) % 8)) if is_bounce
               else base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        for position in range(len(raw)):
            for mask in (0x01, 0x80, 0xFF):
                flipped = bytearray(raw)
                flipped[position] ^= mask
                forged = (base64.b32encode(bytes(flipped)).rstrip(b"=").decode().lower() if is_bounce
                          else base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=").decode())
                with pytest.raises(InvalidToken):
                    tt.verify(ring, forged)


def test_every_character_changed_is_rejected(ring):
    # Catches non-canonical base64: a changed last character must not decode
    # to the genuine bytes.
    for token in all_tokens(ring, ctx()):
        alphabet = "abcdefghijklmnopqrstuvwxyz234567" if len(token) == 45 else \
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        for position in range(len(token)):
            for other in alphabet:
                if other == token[position]:
                    continue
                forged = token[:position] + other + token[position + 1:]
                with pytest.raises(InvalidToken):
                    tt.verify(ring, forged)


@pytest.mark.parametrize("cut", [1, 2, 3, 10, 50])
def test_truncated_and_extended_tokens_are_rejected(ring, cut):
    for token in all_tokens(ring, ctx()):
        with pytest.raises(InvalidToken):
            tt.verify(ring, token[:-cut])
        with pytest.raises(InvalidToken):
            tt.verify(ring, token + "A" * cut)


@pytest.mark.parametrize("garbage", ["", "x", "====", "%00", "../../etc", "é" * 104, "A" * 104])
def test_garbage_is_rejected(ring, garbage):
    with pytest.raises(InvalidToken):
        tt.verify(ring, garbage)


def test_key_rotation_old_key_verifies_new_key_signs():
    c = ctx()
    old_ring = Keyring.from_env(f"k0:{KEY_A}")
    sent_before = [tt.open_token(old_ring, c), tt.bounce_token(old_ring, c)]
    rotated = Keyring.from_env(f"k1:{KEY_B},k0:{KEY_A}")
    for token in sent_before:
        assert tt.verify(rotated, token).job_id == c.job_id
    fresh = tt.open_token(rotated, c)
    assert tt.verify(rotated, fresh).key_id == 1
    with pytest.raises(InvalidToken):  # the old ring does not know k1
        tt.verify(old_ring, fresh)


def test_unknown_key_id_and_same_id_with_another_key_are_rejected():
    c = ctx()
    token = tt.open_token(Keyring.from_env(f"k5:{KEY_A}"), c)
    with pytest.raises(InvalidToken):
        tt.verify(Keyring.from_env(f"k1:{KEY_A}"), token)
    with pytest.raises(InvalidToken):
        tt.verify(Keyring.from_env(f"k5:{KEY_B}"), token)


@pytest.mark.parametrize("value", ["", "k1", f"x1:{KEY_A}", f"k256:{KEY_A}", "k1:!!!",
                                   "k1:" + base64.b64encode(b"short").decode(),
                                   f"k1:{KEY_A},k1:{KEY_B}"])
def test_bad_keyring_values_are_refused(value):
    with pytest.raises(ValueError):
        Keyring.from_env(value)


def test_keyring_accepts_urlsafe_and_bare_numeric_ids():
    key = base64.urlsafe_b64encode(bytes(range(200, 232))).decode().rstrip("=")
    ring = Keyring.from_env(f" 7:{key} , k0:{KEY_A} ")
    assert ring.signing_id == 7


def test_context_ids_must_be_hex():
    with pytest.raises(ValueError):
        LinkContext("not-hex", uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex)


@pytest.mark.parametrize("index", [-1, 65536, 1.5])
def test_link_index_out_of_range(ring, index):
    with pytest.raises(ValueError):
        tt.click_token(ring, ctx(), index)


def test_urls(ring):
    c = ctx()
    base = "https://t.example.com/"
    assert tt.open_url(base, ring, c) == f"https://t.example.com/t/o/{tt.open_token(ring, c)}"
    assert tt.click_url(base, ring, c, 2) == f"https://t.example.com/t/c/{tt.click_token(ring, c, 2)}"
    assert tt.unsubscribe_url(base, ring, c) == f"https://t.example.com/u/{tt.unsubscribe_token(ring, c)}"


def test_verp_round_trip_survives_case_folding(ring):
    c = ctx()
    address = tt.verp_address(ring, c, "bounces.example.com")
    local, _, domain = address.partition("@")
    assert len(local) <= 64 and domain == "bounces.example.com"
    for seen in (address, address.upper(), f"Mailer <{address}>", f"rfc822; {address}"):
        token = tt.parse_verp(seen)
        assert tt.verify(ring, token).job_id == c.job_id
    assert tt.parse_verp("someone@example.com") is None
    assert tt.parse_verp("") is None
