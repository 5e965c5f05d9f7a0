"""DKIM signing cost: microseconds per signature, RSA-2048 and Ed25519,
with the project's signer (services/sender/dkim.py, on `cryptography`)
beside dkimpy's own signer, on the same message in the same run.

    .venv/bin/python -m bench.dkim.run [--messages 2000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import dkim as dkimpy  # noqa: E402

from services.sender import dkim  # noqa: E402
from services.sender.mime import Part, Skeleton  # noqa: E402

HEADERS = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type",
           b"list-unsubscribe", b"list-unsubscribe-post", b"list-id", b"feedback-id"]


def sample_message() -> bytes:
    skeleton = Skeleton("Sandesh Bench", "news@sandesh.test", None,
                        [("Feedback-ID", "c:a:marketing:sandesh")])
    html = "<html><body>" + "<p>Lorem ipsum dolor sit amet, consectetur adipiscing.</p>" * 60 \
        + "</body></html>"
    return skeleton.build(to_name="Jane Doe", to_email="jane@example.com",
                          subject="This week's news, with a subject of a usual length",
                          date="Sun, 01 Mar 2026 12:00:00 +0000", message_id="<j1@sandesh.test>",
                          headers=[("List-Unsubscribe", "<https://t.example/u/abc>"),
                                   ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                                   ("List-Id", "<l.list-id.sandesh.test>")],
                          parts=[Part("text/plain", "Hello\n" * 40), Part("text/html", html)])


def per_call_us(fn, n: int) -> float:
    fn()  # warm up
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    n = parser.parse_args().messages
    message = sample_message()
    print(f"message: {len(message)} bytes; {n} signatures per figure (dkimpy: {max(20, n // 20)})")
    for algorithm in ("rsa", "ed25519"):
        key_dir = Path(tempfile.mkdtemp())
        dkim.ensure_key(key_dir, "sandesh.test", "bench", algorithm)
        signer = dkim.Signer(dkim.load_keys(key_dir))
        ours = per_call_us(lambda: signer.sign(message, "sandesh.test"), n)
        pem = (key_dir / "bench._domainkey.sandesh.test.pem").read_bytes()
        if algorithm == "ed25519":  # dkimpy takes the raw 32-byte seed, base64
            import base64
            from cryptography.hazmat.primitives import serialization
            raw = serialization.load_pem_private_key(pem, None).private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                serialization.NoEncryption())
            pem = base64.b64encode(raw)
        theirs = per_call_us(lambda: dkimpy.sign(
            message, b"bench", b"sandesh.test", pem, canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=b"ed25519-sha256" if algorithm == "ed25519" else b"rsa-sha256",
            include_headers=HEADERS), max(20, n // 20))
        check = dkimpy.verify(signer.sign(message, "sandesh.test"),
                              dnsfunc=dkim.txt_record_lookup(key_dir))
        label = "RSA-2048" if algorithm == "rsa" else "Ed25519 "
        print(f"{label}  ours {ours:8.1f} us/signature   dkimpy {theirs:8.1f} us/signature   "
              f"({theirs / ours:.0f}x)   dkimpy verifies ours: {check}")


if __name__ == "__main__":
    main()
