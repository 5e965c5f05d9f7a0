"""The local SMTP sink: accepts every message and stores it in a Maildir.

    python -m devstack.smtp_sink            # settings from the environment (run/stack.env)

Each message is stored as one file in $SANDESH_MAILDIR/new/, with the DATA
bytes exactly as received, preceded by two headers that record the envelope:

    X-Sink-Mail-From: <MAIL FROM address, "<>" for the null sender>
    X-Sink-Rcpt-To: <RCPT TO addresses, comma separated>

Failure injection: $SANDESH_SMTP_SINK_FAULTS (run/smtp-sink/faults.json) is
re-read whenever it changes (checked at every RCPT), so tests switch faults
on and off without a restart; see devstack.sink_faults.

PIPELINING (RFC 2920) is offered only with SANDESH_SMTP_SINK_PIPELINING=1
(aiosmtpd reads pipelined commands in order but does not say so). The stack
leaves it off: the send benchmark's ceiling is plain smtplib, which never
pipelines, and the sender is compared with it on equal terms.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.smtp import SMTP

log = logging.getLogger("smtp-sink")

DATA_SIZE_LIMIT = 10 * 1024 * 1024


@dataclass
class FaultConfig:
    transient_rate: float = 0.0
    permanent_rate: float = 0.0
    # address -> (SMTP code, how many times; None = always)
    fail_recipients: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    seed: int | None = None

    @classmethod
    def from_json(cls, raw: dict) -> "FaultConfig":
        if not isinstance(raw, dict):
            raise ValueError("the top level must be a JSON object")
        unknown = set(raw) - {"transient_rate", "permanent_rate", "fail_recipients", "seed"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}")
        rates = {}
        for key in ("transient_rate", "permanent_rate"):
            value = float(raw.get(key, 0.0))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{key} must be between 0 and 1")
            rates[key] = value
        if rates["transient_rate"] + rates["permanent_rate"] > 1.0:
            raise ValueError("transient_rate + permanent_rate must not exceed 1")
        recipients = {}
        for address, spec in (raw.get("fail_recipients") or {}).items():
            if isinstance(spec, dict):
                code, times = int(spec.get("code", 550)), spec.get("times")
                times = None if times is None else int(times)
            else:
                code, times = int(spec), None
            if not 400 <= code <= 599:
                raise ValueError(f"fail_recipients[{address!r}]: code {code} is not a 4xx or 5xx")
            recipients[address.lower()] = (code, times)
        seed = raw.get("seed")
        return cls(rates["transient_rate"], rates["permanent_rate"], recipients,
                   None if seed is None else int(seed))


def reply_for(code: int, address: str) -> str:
    if code < 500:
        return f"{code} 4.3.0 Injected transient failure for <{address}>, try again later"
    return f"{code} 5.1.1 Injected permanent failure: mailbox <{address}> unavailable"


class Faults:
    """The fault file, re-read when its mtime/size/inode change."""

    def __init__(self, path: Path | None):
        self.path = path
        self._key: tuple | None = None
        self.config = FaultConfig()
        self.rng = random.Random()
        self.used: dict[str, int] = {}

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
        except (FileNotFoundError, TypeError):
            key = None
        if key == self._key:
            return
        self._key = key
        self.used = {}
        if key is None:
            self.config = FaultConfig()
            log.info("faults cleared")
        else:
            try:
                self.config = FaultConfig.from_json(json.loads(Path(self.path).read_text()))
                log.info("faults now %s", self.config)
            except (OSError, ValueError, TypeError) as exc:
                self.config = FaultConfig()
                log.warning("ignoring %s (no faults injected): %s", self.path, exc)
        self.rng = random.Random(self.config.seed)

    def reply_for_rcpt(self, address: str) -> str | None:
        """An error reply to give this RCPT, or None to accept it."""
        if self.path is None:
            return None
        self._refresh()
        cfg = self.config
        listed = cfg.fail_recipients.get(address.lower())
        if listed:
            code, times = listed
            if times is None or self.used.get(address.lower(), 0) < times:
                self.used[address.lower()] = self.used.get(address.lower(), 0) + 1
                return reply_for(code, address)
            return None
        if cfg.permanent_rate or cfg.transient_rate:
            draw = self.rng.random()  # a new draw per attempt: a retry can succeed
            if draw < cfg.permanent_rate:
                return reply_for(550, address)
            if draw < cfg.permanent_rate + cfg.transient_rate:
                return reply_for(451, address)
        return None


class MaildirWriter:
    """Writes message files the Maildir way: tmp/ then an atomic rename into new/."""

    def __init__(self, root: Path):
        self.root = root
        for sub in ("tmp", "new", "cur"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
        self.pid = os.getpid()
        self.counter = 0
        self.stored = 0

    def add(self, data: bytes) -> str:
        self.counter += 1
        now = time.time()
        name = f"{int(now)}.M{int(now % 1 * 1e6)}P{self.pid}Q{self.counter}.{self.host}"
        tmp = self.root / "tmp" / name
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, self.root / "new" / name)
        self.stored += 1
        return name


class SinkHandler:
    def __init__(self, maildir: MaildirWriter, faults: Faults, pipelining: bool = False):
        self.maildir = maildir
        self.faults = faults
        self.pipelining = pipelining

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        error = self.faults.reply_for_rcpt(address)
        if error:
            return error
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        mail_from = envelope.mail_from or "<>"
        header = (f"X-Sink-Mail-From: {mail_from}\r\n"
                  f"X-Sink-Rcpt-To: {', '.join(envelope.rcpt_tos)}\r\n").encode("utf-8", "surrogateescape")
        name = self.maildir.add(header + envelope.original_content)
        return f"250 2.0.0 OK: queued as {name}"


async def _report(maildir: MaildirWriter, every: float = 30.0) -> None:
    last = 0
    while True:
        await asyncio.sleep(every)
        if maildir.stored != last:
            log.info("stored %d messages (%d in the last %.0f s)", maildir.stored,
                        maildir.stored - last, every)
            last = maildir.stored


async def serve(host: str, port: int, maildir_path: Path, faults_path: Path | None,
                pipelining: bool = False) -> None:
    maildir = MaildirWriter(maildir_path)
    handler = SinkHandler(maildir, Faults(faults_path), pipelining)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, data_size_limit=DATA_SIZE_LIMIT, enable_SMTPUTF8=True,
                     hostname="sandesh-sink", ident="Sandesh SMTP sink", loop=loop),
        host, port, reuse_address=True, backlog=256)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reporter = asyncio.create_task(_report(maildir))
    log.info("SMTP sink listening on %s:%d, storing into %s (faults: %s)",
                host, port, maildir_path, faults_path)
    await stop.wait()
    reporter.cancel()
    server.close()
    await server.wait_closed()
    log.info("SMTP sink stopped after storing %d messages", maildir.stored)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    missing = [v for v in ("SANDESH_SMTP_PORT", "SANDESH_MAILDIR") if not os.environ.get(v)]
    if missing:
        raise SystemExit(f"smtp_sink: set {', '.join(missing)} (e.g. `set -a; . run/stack.env`)")
    faults = os.environ.get("SANDESH_SMTP_SINK_FAULTS")
    asyncio.run(serve(os.environ.get("SANDESH_SMTP_HOST", "127.0.0.1"), int(os.environ["SANDESH_SMTP_PORT"]),
                      Path(os.environ["SANDESH_MAILDIR"]), Path(faults) if faults else None,
                      os.environ.get("SANDESH_SMTP_SINK_PIPELINING") == "1"))


if __name__ == "__main__":
    main()
