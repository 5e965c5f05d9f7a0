"""What the SMTP client makes of relays that do not answer as the happy
path expects: a pooled connection the relay closed while idle, a relay that
takes only HELO or refuses EHLO, no SMTPUTF8 for an address that needs it,
a reply that is no SMTP reply, DATA answered 250. Each against a relay on a
real socket, scripted per command."""
from __future__ import annotations

import socket
import time

import pytest

from services.sender import smtp
from services.sender.compose import Outgoing
from services.sender.domain import ACCEPTED, PERMANENT, TRANSIENT, Job
from tests.unit.sender.loopback import LoopbackServer


class ScriptedRelay(LoopbackServer):
    """Answers each command as `once` or `answers` say (verb -> reply bytes), else as
    a plain relay offering `extensions`. `idle_seconds`: a connection idle
    this long gets "421 timeout" and is closed, as Postfix does."""

    def __init__(self, extensions=("PIPELINING", "8BITMIME"), answers=None,
                 idle_seconds: float | None = None):
        self.extensions = list(extensions)
        self.answers = answers or {}
        self.once: dict[str, bytes] = {}  # verb -> the reply to its next use only
        self.idle_seconds = idle_seconds
        self.commands: list[str] = []
        self.messages: list[bytes] = []
        super().__init__()

    def _session(self, conn):
        conn.settimeout(self.idle_seconds)
        lines = conn.makefile("rb")
        conn.sendall(b"220 scripted relay\r\n")
        try:
            while True:
                try:
                    line = lines.readline()
                except socket.timeout:
                    conn.sendall(b"421 4.4.2 timeout exceeded\r\n")
                    return
                if not line:
                    return
                verb = line[:4].upper().decode()
                self.commands.append(verb)
                if verb in self.once:
                    conn.sendall(self.once.pop(verb))
                elif verb in self.answers:
                    conn.sendall(self.answers[verb])
                elif verb == "EHLO":
                    names = ["scripted"] + self.extensions
                    conn.sendall(b"".join(f"250{'-' if n < len(names) - 1 else ' '}{name}\r\n"
                                          .encode() for n, name in enumerate(names)))
                elif verb == "DATA":
                    conn.sendall(b"354 go on\r\n")
                    self.messages.append(b"".join(iter(lines.readline, b".\r\n")))
                    conn.sendall(b"250 2.0.0 queued\r\n")
                elif verb == "QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")
        except OSError:
            return
        finally:
            conn.close()


@pytest.fixture
def relays():
    made = []

    def make(**kwargs) -> ScriptedRelay:
        made.append(ScriptedRelay(**kwargs))
        return made[-1]
    yield make
    for relay in made:
        relay.stop()


def outgoing(n: int = 0, email: str = "r@example.com", smtputf8: bool = False) -> Outgoing:
    job = Job(f"j{n}", "c", f"p{n}", "a", None, email, None, {}, 0, None, False, None)
    return Outgoing(job, b"Subject: x\r\n\r\nhello\r\n", "b+x@sandesh.test", f"<j{n}@d>",
                    smtputf8)


def send(messenger: smtp.SmtpMessenger, outs: list[Outgoing]) -> list[tuple]:
    tasks = [smtp.SendTask(out.job, lambda out=out: out, 10) for out in outs]
    messenger.submit(tasks, time.monotonic() + 20)
    done, deadline = [], time.monotonic() + 20
    while len(done) < len(tasks) and time.monotonic() < deadline:
        done += messenger.collect(len(tasks))
    return [(task.outcome, task.code) for task in tasks]


def messenger_for(relay: ScriptedRelay) -> smtp.SmtpMessenger:
    return smtp.SmtpMessenger([smtp.Relay("127.0.0.1", relay.port)], 1, timeout=5)


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_pooled_connection_the_relay_closed_while_idle_is_replaced_not_blamed(relays,
                                                                                 pipelining):
    """The relay's "421 timeout" was read as the answer to the next MAIL:
    after every idle spell, each connection's first message was deferred."""
    relay = relays(extensions=["PIPELINING"] if pipelining else [], idle_seconds=0.5)
    messenger = messenger_for(relay)
    try:
        assert send(messenger, [outgoing(0)]) == [(ACCEPTED, 250)]
        time.sleep(1.0)  # the relay says 421 and closes
        assert send(messenger, [outgoing(1)]) == [(ACCEPTED, 250)]
        assert relay.sessions == 2 and len(relay.messages) == 2
    finally:
        messenger.close()


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_421_to_mail_on_a_reused_connection_sends_once_more_on_a_fresh_one(relays, pipelining):
    """The relay closing a busy connection (a restart): nothing of the
    message went, so it goes again at once on a new connection."""
    relay = relays(extensions=["PIPELINING"] if pipelining else [])
    messenger = messenger_for(relay)
    try:
        assert send(messenger, [outgoing(0)]) == [(ACCEPTED, 250)]
        relay.once["MAIL"] = b"421 4.3.2 shutting down\r\n"  # the new connection's is 250
        assert send(messenger, [outgoing(1)]) == [(ACCEPTED, 250)]
        assert relay.sessions == 2
    finally:
        messenger.close()


def test_a_421_to_mail_on_a_fresh_connection_is_a_deferral_with_its_code(relays):
    relay = relays(answers={"MAIL": b"421 4.3.2 shutting down\r\n"})
    messenger = messenger_for(relay)
    try:
        assert send(messenger, [outgoing(0)]) == [(TRANSIENT, 421)]
    finally:
        messenger.close()


def test_a_relay_that_takes_only_helo_gets_helo(relays):
    """EHLO's answer was ignored: MAIL then got 503 "send HELO first", a
    permanent failure for every recipient."""
    relay = relays(answers={"EHLO": b"502 5.5.2 command not recognized\r\n"})
    messenger = messenger_for(relay)
    try:
        assert send(messenger, [outgoing(0)]) == [(ACCEPTED, 250)]
        assert relay.commands[:3] == ["EHLO", "HELO", "MAIL"]
    finally:
        messenger.close()


def test_a_refused_ehlo_is_a_deferral_not_a_verdict_on_the_address(relays):
    relay = relays(answers={"EHLO": b"421 4.7.0 too many connections\r\n",
                            "MAIL": b"503 5.5.1 send HELO first\r\n"})
    messenger = messenger_for(relay)
    try:
        assert send(messenger, [outgoing(0)]) == [(TRANSIENT, None)]
        assert "MAIL" not in relay.commands
    finally:
        messenger.close()


def test_an_address_that_needs_smtputf8_fails_for_good_where_it_is_not_offered(relays):
    """smtplib raised, taken as a broken connection: a retry, five times
    over, and the pooled connection torn down each time."""
    relay = relays(extensions=["PIPELINING", "8BITMIME"])
    messenger = messenger_for(relay)
    try:
        assert send(messenger, [outgoing(0)]) == [(ACCEPTED, 250)]
        assert send(messenger, [outgoing(1, "josé@example.com", smtputf8=True)]) == \
            [(PERMANENT, 553)]
        assert send(messenger, [outgoing(2)]) == [(ACCEPTED, 250)]
        assert relay.sessions == 1 and "MAIL" in relay.commands
    finally:
        messenger.close()


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize("verb", ["MAIL", "RCPT"])
def test_a_reply_that_is_no_smtp_reply_is_a_deferral_not_a_failure(relays, pipelining, verb):
    relay = relays(extensions=["PIPELINING"] if pipelining else [],
                   answers={verb: b"something odd\r\n"})
    messenger = messenger_for(relay)
    try:
        [(outcome, _)] = send(messenger, [outgoing(0)])
        assert outcome == TRANSIENT
    finally:
        messenger.close()


@pytest.mark.parametrize("pipelining", [True, False])
def test_data_answered_250_is_no_delivery(relays, pipelining):
    """The relay took no message, yet 250 was recorded as sent."""
    relay = relays(extensions=["PIPELINING"] if pipelining else [],
                   answers={"DATA": b"250 ok\r\n"})
    messenger = messenger_for(relay)
    try:
        assert send(messenger, [outgoing(0)]) == [(TRANSIENT, None)]
        assert relay.messages == []
    finally:
        messenger.close()
