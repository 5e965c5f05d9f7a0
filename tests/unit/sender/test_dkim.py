"""Our signatures verify with dkimpy, an independent implementation, reading
the TXT record file an operator would publish."""
import hashlib

import dkim as dkimpy
import pytest

from services.sender import dkim
from services.sender.mime import Part, Skeleton


@pytest.fixture(params=["rsa", "ed25519"])
def key_dir(tmp_path, request):
    assert dkim.ensure_key(tmp_path, "Sandesh.Test", "s1", request.param)
    return tmp_path


def message(subject="Hello", name="Jane Doe") -> bytes:
    skeleton = Skeleton("Sandesh", "news@sandesh.test", None,
                        [("Feedback-ID", "c:a:marketing:sandesh")])
    return skeleton.build(to_name=name, to_email="jane@example.com", subject=subject,
                          date="Sun, 01 Mar 2026 12:00:00 +0000", message_id="<j1@sandesh.test>",
                          headers=[("List-Unsubscribe", "<https://t.example/u/x>"),
                                   ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")],
                          parts=[Part("text/plain", "Hi  there \n\n\n"),
                                 Part("text/html", "<p>Hi</p>")])


def verify(signed: bytes, key_dir) -> bool:
    return dkimpy.verify(signed, dnsfunc=dkim.txt_record_lookup(key_dir))


def test_txt_record_file_is_what_an_operator_publishes(key_dir):
    txt = (key_dir / "s1._domainkey.sandesh.test.txt").read_text()
    assert txt.startswith("v=DKIM1; k=") and "; p=" in txt
    assert oct((key_dir / "s1._domainkey.sandesh.test.pem").stat().st_mode)[-3:] == "600"
    assert not dkim.ensure_key(key_dir, "sandesh.test", "s1")  # one key is enough


def test_signed_message_verifies_with_dkimpy(key_dir):
    signer = dkim.Signer(dkim.load_keys(key_dir))
    signed = signer.sign(message(), "sandesh.test")
    assert verify(signed, key_dir)
    header = signed.split(b"\r\n\r\n")[0]
    for name in (b"list-unsubscribe", b"list-unsubscribe-post", b"from", b"subject", b"to"):
        assert name in header.split(b"h=")[1].split(b";")[0]


def test_folded_and_non_ascii_headers_verify(key_dir):
    signer = dkim.Signer(dkim.load_keys(key_dir))
    long_subject = "Grüße, a subject long enough to fold over several lines " * 3
    signed = signer.sign(message(long_subject, "José Müller-Lüdenscheidt, Ph.D."), "sandesh.test")
    assert b"\r\n " in signed.split(b"\r\n\r\n")[0]  # really folded
    assert verify(signed, key_dir)


def test_tampering_breaks_the_signature(key_dir):
    signer = dkim.Signer(dkim.load_keys(key_dir))
    signed = signer.sign(message(), "sandesh.test")
    assert not verify(signed.replace(b"Subject: Hello", b"Subject: Hellp"), key_dir)
    assert not verify(signed.replace(b"<p>Hi</p>", b"<p>Ho</p>"), key_dir)


def test_two_keys_sign_twice_and_both_verify(tmp_path):
    dkim.ensure_key(tmp_path, "sandesh.test", "rsa1", "rsa")
    # ensure_key makes one key per domain: make the second one aside
    dkim.ensure_key(tmp_path / "ed", "sandesh.test", "ed1", "ed25519")
    for f in (tmp_path / "ed").iterdir():
        f.rename(tmp_path / f.name)
    signer = dkim.Signer(dkim.load_keys(tmp_path))
    signed = signer.sign(message(), "sandesh.test")
    assert signed.count(b"DKIM-Signature:") == 2
    d = dkimpy.DKIM(signed)
    lookup = dkim.txt_record_lookup(tmp_path)
    assert d.verify(0, dnsfunc=lookup) and d.verify(1, dnsfunc=lookup)


@pytest.mark.parametrize("body,expected", [
    (b"", b""), (b"\r\n\r\n", b""), (b"a  b \t\r\nc\r\n\r\n", b"a b\r\nc\r\n"), (b"x \t", b"x\r\n")])
def test_relaxed_body(body, expected):
    assert dkim.relaxed_body(body) == expected


def test_unknown_domain_is_refused(key_dir):
    with pytest.raises(dkim.DkimKeyMissing):
        dkim.Signer(dkim.load_keys(key_dir)).sign(message(), "other.test")


@pytest.mark.parametrize("size", [0, 1, 2046, 2047, 2048, 4094, 4095, 4096, 10_000])
def test_the_piecewise_hash_is_sha256(size):
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert dkim.sha256_keeping_gil(data) == hashlib.sha256(data).digest()


def test_a_body_hashed_in_several_pieces_verifies(key_dir):
    skeleton = Skeleton("Sandesh", "news@sandesh.test", None, [])
    long_text = "".join(f"Line {i} of a long newsletter, with  spaces \n" for i in range(400))
    signed = dkim.Signer(dkim.load_keys(key_dir)).sign(skeleton.build(
        to_name="Jane", to_email="jane@example.com", subject="Long",
        date="Sun, 01 Mar 2026 12:00:00 +0000", message_id="<j2@sandesh.test>", headers=[],
        parts=[Part("text/plain", long_text)]), "sandesh.test")
    assert len(signed.partition(b"\r\n\r\n")[2]) > 4 * 2047
    assert verify(signed, key_dir)
    assert not verify(signed.replace(b"Line 399 of", b"Line 398 of"), key_dir)
