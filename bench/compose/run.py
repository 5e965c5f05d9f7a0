"""Composing cost: microseconds per message for the sender's Composer (the
send benchmark's campaign: tracking on, 6 links, a name and a subject to
merge), signed with RSA-2048, with Ed25519, and with the signature left out;
beside the same content built and serialised with the standard library's
EmailMessage (the issue's reference: ~0.8 ms), unsigned, in the same run.

    .venv/bin/python -m bench.compose.run [--messages 3000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from email import policy
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.dkim.run import per_call_us  # noqa: E402
from bench.send.run import campaign_data  # noqa: E402
from services.sender import dkim  # noqa: E402
from services.sender.compose import Composer, ComposeSettings  # noqa: E402
from services.sender.domain import Campaign, Job  # noqa: E402
from shared.tracking_tokens import Keyring  # noqa: E402

KEYRING = Keyring.from_env("k1:" + "A" * 43 + "=")


class Unsigned:
    """A signer that signs nothing: the cost of the rest of composing."""

    def has_key(self, domain: str) -> bool:
        return True

    def may_sign(self, domain: str, account_id: str) -> bool:
        return True

    def sign(self, message: bytes, domain: str) -> bytes:
        return message


def composer(signer) -> Composer:
    campaign = Campaign.from_launched(uuid.uuid4().hex, campaign_data(uuid.uuid4().hex))
    return Composer(campaign, ComposeSettings(KEYRING, "https://t.example", "sandesh.test"),
                    signer)


def jobs(campaign: Campaign, n: int) -> list[Job]:
    return [Job(uuid.uuid4().hex, campaign.campaign_id, uuid.uuid4().hex, campaign.account_id,
                None, f"reader{i}@example.com", f"Reader {i}", {}, 0, None, False, None)
            for i in range(n)]


def per_message_us(make: Composer, batch: list[Job]) -> float:
    for job in batch[:50]:  # warm up
        make.compose(job)
    started = time.perf_counter()
    for job in batch:
        make.compose(job)
    return (time.perf_counter() - started) / len(batch) * 1e6


def email_message_us(out: bytes, n: int) -> float:
    """Build and serialise the composed message's headers and parts with
    EmailMessage (modern policy), as a sender without a skeleton would."""
    from email import message_from_bytes
    parsed = message_from_bytes(out, policy=policy.default)
    headers = [(k, str(v)) for k, v in parsed.items()
               if k.lower() not in ("mime-version", "content-type", "dkim-signature")]
    text = parsed.get_body(("plain",)).get_content()
    html = parsed.get_body(("html",)).get_content()

    def build() -> bytes:
        message = EmailMessage(policy=policy.SMTP)
        for name, value in headers:
            message[name] = value
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        return message.as_bytes()

    return per_call_us(build, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    n = parser.parse_args().messages
    figures = {}
    for label, algorithm in (("RSA-2048", "rsa"), ("Ed25519", "ed25519"), ("unsigned", None)):
        if algorithm:
            key_dir = Path(tempfile.mkdtemp())
            dkim.ensure_key(key_dir, "sandesh.test", "bench", algorithm)
            signer = dkim.Signer(dkim.load_keys(key_dir))
        else:
            signer = Unsigned()
        make = composer(signer)
        figures[label] = per_message_us(make, jobs(make.campaign, n))
    sample = composer(Unsigned())
    message = sample.compose(jobs(sample.campaign, 1)[0]).message
    reference = email_message_us(message, max(200, n // 10))
    print(f"message: {len(message)} bytes unsigned; {n} messages per figure")
    for label, us in figures.items():
        print(f"compose, {label:8s} {us:7.1f} us/message")
    print(f"EmailMessage, unsigned, same headers and parts: {reference:7.1f} us/message "
          f"({reference / figures['unsigned']:.1f}x the composer's unsigned figure)")


if __name__ == "__main__":
    main()
