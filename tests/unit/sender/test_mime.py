"""What the skeleton writes parses back, with the standard library's email
package (policy=default), to the same headers and parts as the same message
built with EmailMessage."""
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings, strategies as st

from services.sender.mime import (HeaderInjection, Part, Skeleton, address, quoted_printable,
                                  unstructured)

DATE = format_datetime(datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc))
EXTRA = [("List-Unsubscribe", "<https://t.example/u/abc>, <mailto:u@bounce.example?subject=u%20abc>"),
         ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
         ("List-Id", "<l1.acct.sandesh.test>")]
CONSTANT = [("Feedback-ID", "camp:acct:marketing:sandesh")]


def reference(from_name, from_email, to_name, to_email, subject, text, html, utf8):
    msg = EmailMessage(policy=(policy.SMTPUTF8 if utf8 else policy.SMTP))
    msg["From"] = Address(from_name or "", addr_spec=from_email)
    # email.headerregistry.Address refuses a non-ASCII local part; the
    # header parser accepts it (RFC 6532) when given as text.
    msg["To"] = f"{to_name} <{to_email}>" if utf8 else Address(to_name or "", addr_spec=to_email)
    msg["Subject"] = subject
    msg["Date"] = DATE
    msg["Message-ID"] = "<job1@sandesh.test>"
    msg["Reply-To"] = "replies@sandesh.test"
    for name, value in EXTRA + CONSTANT:
        msg[name] = value
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


def ours(from_name, from_email, to_name, to_email, subject, text, html):
    skeleton = Skeleton(from_name, from_email, "replies@sandesh.test", CONSTANT)
    return skeleton.build(to_name=to_name, to_email=to_email, subject=subject, date=DATE,
                          message_id="<job1@sandesh.test>", headers=EXTRA,
                          parts=[Part("text/plain", text), Part("text/html", html)])


def assert_same_message(mine: bytes, ref: bytes):
    a = message_from_bytes(mine, policy=policy.default)
    b = message_from_bytes(ref, policy=policy.default)
    assert not a.defects and not b.defects
    assert sorted(k.lower() for k in a.keys()) == sorted(k.lower() for k in b.keys())
    for name in b.keys():
        if name == "Content-Type":  # the boundary differs; compared below
            continue
        if name in ("From", "To", "Reply-To"):
            assert a[name].addresses == b[name].addresses, name
        else:
            # the reference sometimes folds right after the colon, which its
            # own parser reads back as a leading space
            assert str(a[name]).strip() == str(b[name]).strip(), name
    assert a.get_content_type() == b.get_content_type() == "multipart/alternative"
    pa, pb = list(a.iter_parts()), list(b.iter_parts())
    assert [p.get_content_type() for p in pa] == [p.get_content_type() for p in pb]
    for x, y in zip(pa, pb):
        assert x.get_content_charset() == y.get_content_charset() == "utf-8"
        assert x.get_content() == y.get_content()
    for line in mine.split(b"\r\n"):
        assert len(line) <= 998 and b"\n" not in line and b"\r" not in line


CASES = [
    ("Sandesh News", "news@sandesh.test", "Jane Doe", "jane@example.com", "Hello Jane", "ascii"),
    ("Zoë Café", "news@sandesh.test", "José Müller", "jose@example.com",
     "Grüße aus Köln — ünïcödé subject that is long enough to need several encoded words 🎉",
     "non-ascii names and subject"),
    ('Acme, Inc. "Best"', "news@sandesh.test", "Doe, Jane", "jane@example.com",
     "Specials: <>, ; and a very long ascii subject line " + "word " * 30, "specials, folding"),
    (None, "news@sandesh.test", None, "x@example.com", "Tab\there,  two spaces", "no names"),
    ("सन्देश", "news@sandesh.test", "राम", "राम@उदाहरण.भारत", "नमस्ते दुनिया", "SMTPUTF8 address"),
]
TEXT = "Hi there,\n\nA line with trailing space \nand a = sign, tab\there, ünïcode, and a very long line " + "x" * 200 + "\n.\nFrom the team"
HTML = "<html><body><p>Hi ünï = 1</p>\n<a href=\"https://example.com/?a=1&amp;b=2\">x</a>" + "<span>y</span>" * 40 + "</body></html>"


@pytest.mark.parametrize("case", CASES, ids=[c[-1] for c in CASES])
def test_skeleton_matches_email_message(case):
    from_name, from_email, to_name, to_email, subject, _ = case
    utf8 = not to_email.isascii()
    mine = ours(from_name, from_email, to_name, to_email, subject, TEXT, HTML)
    ref = reference(from_name, from_email, to_name, to_email, subject, TEXT, HTML, utf8)
    assert_same_message(mine, ref)
    if not utf8:
        assert mine.isascii()  # RFC 2047 everywhere: no 8-bit header or body bytes


@pytest.mark.parametrize("value", ["Hi\r\nBcc: victim@example.com", "a\nb", "a\rb"])
def test_line_breaks_in_header_values_are_refused(value):
    with pytest.raises(HeaderInjection):
        unstructured("Subject", value)
    with pytest.raises(HeaderInjection):
        address("To", value, "x@example.com")
    with pytest.raises(HeaderInjection):
        ours(None, "a@sandesh.test", value, "x@example.com", "s", "t", "h")
    with pytest.raises(HeaderInjection):
        ours(None, "a@sandesh.test", None, "x@example.com", value, "t", "h")


@pytest.mark.parametrize("control", ["\x00", "\x1b", "\x0b", "\x7f"])
def test_a_control_character_from_merge_data_never_reaches_a_header_raw(control):
    """A name imported with an ESC in it, or a subject merged from one, went
    into To and Subject as it was; RFC 5322 allows no control characters."""
    message = ours(None, "a@sandesh.test", f"Ann{control}Lee", "x@example.com",
                   f"Hello{control}there\tyou", "t", "h")
    head = message.split(b"\r\n\r\n", 1)[0]
    assert control.encode() not in head
    parsed = message_from_bytes(message, policy=policy.default)
    assert not parsed.defects
    assert parsed["Subject"] == "Hello there\tyou" and parsed["To"] == "Ann Lee <x@example.com>"


def test_an_address_with_several_recipients_is_refused():
    with pytest.raises(HeaderInjection):
        address("To", None, "a@example.com, b@example.com")


def test_quoted_printable_round_trips_whatever_the_line_ends():
    import quopri
    text = "a\r\nb\rc\n" + "é" * 100 + " \n"
    assert quopri.decodestring(quoted_printable(text).replace(b"\r\n", b"\n")).decode() == \
        text.replace("\r\n", "\n").replace("\r", "\n")


_ascii_body = st.text(st.sampled_from([chr(c) for c in range(0x20, 0x7F)] + ["\t", "\n", "\r", "="]),
                     max_size=400)


@settings(max_examples=300, deadline=None)
@given(text=_ascii_body)
def test_quoted_printable_of_ascii_is_valid_and_reads_back(text):
    import quopri
    encoded = quoted_printable(text)
    lines = encoded.split(b"\r\n")
    assert lines[-1] == b"" and all(len(line) <= 76 for line in lines)
    assert all(not line.endswith((b" ", b"\t")) for line in lines)  # trailing space is lost in transit
    assert all(b"\n" not in line and b"\r" not in line for line in lines)
    normal = text.replace("\r\n", "\n").replace("\r", "\n")
    normal += "" if normal.endswith("\n") else "\n"
    assert quopri.decodestring(encoded.replace(b"\r\n", b"\n")).decode() == normal


def test_quoted_printable_never_splits_an_escape_across_lines():
    for width in range(70, 80):
        encoded = quoted_printable("x" * width + "=" * 5 + " ")
        for line in encoded.split(b"\r\n"):
            body = line[:-1] if line.endswith(b"=") and not line.endswith(b"=3D") else line
            assert body.replace(b"=3D", b"").replace(b"=20", b"").count(b"=") == 0, encoded


def test_a_subject_that_looks_like_an_encoded_word_reads_back_literally():
    # EmailMessage itself decodes such a value on assignment; we keep it.
    subject = "=?utf-8?q?not_an_encoded_word?="
    parsed = message_from_bytes(ours(None, "a@sandesh.test", None, "x@example.com", subject,
                                     "t", "h"), policy=policy.default)
    assert parsed["Subject"] == subject



_header_text = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r\n"),
                       min_size=1, max_size=120).filter(lambda s: s.strip() == s and "  " not in s)


@settings(max_examples=150, deadline=None)
@given(subject=_header_text, to_name=_header_text, from_name=_header_text)
def test_any_subject_and_names_read_back_exactly(subject, to_name, from_name):
    # Compared with the inputs rather than with EmailMessage, whose own
    # folding of long display names differs from ours (both are valid).
    parsed = message_from_bytes(
        ours(from_name, "news@sandesh.test", to_name, "jane@example.com", subject, TEXT, HTML),
        policy=policy.default)
    assert not parsed.defects
    assert parsed["Subject"] == subject
    # Whitespace aside: the parser folds runs of it in a phrase, and puts a
    # space between adjacent encoded-words of a display name, which RFC 2047
    # section 6.2 says to drop (see the next test for the exact value).
    assert "".join(parsed["From"].addresses[0].display_name.split()) == "".join(from_name.split())
    assert "".join(parsed["To"].addresses[0].display_name.split()) == "".join(to_name.split())
    assert parsed["To"].addresses[0].addr_spec == "jane@example.com"


def test_a_long_non_ascii_name_spans_encoded_words_that_decode_exactly():
    from email.header import decode_header, make_header
    name = "Zoë " + "\U0001F389é" * 20
    raw = ours(None, "a@sandesh.test", name, "x@example.com", "s", "t", "h")
    to_value = raw.split(b"\r\nTo:")[1].split(b"\r\nSubject:")[0].decode()
    assert to_value.count("=?utf-8?b?") > 1 and all(len(line) <= 78 for line in to_value.split("\r\n"))
    assert str(make_header(decode_header(to_value))) == f"{name} <x@example.com>"


def test_a_long_word_on_the_smtputf8_path_is_encoded_rather_than_past_998_octets():
    """Raw UTF-8 folds only at spaces: 400 CJK characters made a 1,209-byte line."""
    from services.sender.mime import unstructured
    header = unstructured("Subject", "件" * 400, utf8=True)
    assert all(len(line.encode()) <= 998 for line in header.split("\r\n"))
    assert "=?utf-8?" in header.lower()


@settings(max_examples=150, deadline=None)
@given(subject=_header_text, to_name=_header_text, from_name=_header_text)
def test_every_header_line_holding_an_encoded_word_is_at_most_76_characters(subject, to_name,
                                                                             from_name):
    """RFC 2047 section 2: `Subject: ` beside a whole 72-character word made 81."""
    raw = ours(from_name, "news@sandesh.test", to_name, "jane@example.com", subject, TEXT, HTML)
    head = raw.split(b"\r\n\r\n")[0].decode("ascii")
    assert all(len(line) <= 76 for line in head.split("\r\n") if "=?utf-8?" in line)


@pytest.mark.parametrize("utf8", [False, True])
@pytest.mark.parametrize("width", range(64, 72))
def test_no_header_line_is_whitespace_alone_where_two_spaces_meet_a_long_word(utf8, width):
    """An empty merge field leaves two spaces; before a word too long for
    the line, the second became a line of its own, which a relay trimming
    trailing spaces turns into the end of the headers."""
    subject = "a" * width + "  " + "https://example.com/" + "x" * 80
    header = unstructured("Subject", subject, utf8)
    assert all(line.strip() for line in header.split("\r\n")[:-1])
    parsed = message_from_bytes(ours(None, "a@sandesh.test", None, "x@example.com", subject,
                                     "t", "h"), policy=policy.default)
    assert parsed["Subject"] == subject
