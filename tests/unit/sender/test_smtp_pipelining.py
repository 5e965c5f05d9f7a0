"""PIPELINING (RFC 2920): with a relay that offers it, MAIL, RCPT and DATA
go in one write and their replies are read in order; the first refusal is
the answer, and no reply is left unread on the connection."""
from __future__ import annotations

import smtplib
import time

import pytest

from services.sender import smtp
from services.sender.compose import Outgoing
from services.sender.domain import ACCEPTED, PERMANENT, TRANSIENT, Job
from tests.unit.sender.test_smtp_commands import _RecordingConnection
from tests.unit.sender.loopback import LoopbackServer
from tests.unit.sender.test_smtp_relays import free_port

ENVELOPE = b"MAIL FROM:<b+x@sandesh.test>\r\nRCPT TO:<r@x.test>\r\nDATA\r\n"


def outgoing(email: str = "r@x.test", smtputf8: bool = False) -> Outgoing:
    job = Job("j1", "c", "p1", "a", None, email, None, {}, 0, None, False, None)
    return Outgoing(job, b"Subject: x\r\n\r\n.dot\r\nhello\r\n", "b+x@sandesh.test", "<j1@d>",
                    smtputf8)


def relay(replies, pipelining: bool = True) -> _RecordingConnection:
    conn = _RecordingConnection(replies)
    if pipelining:
        conn.esmtp_features["pipelining"] = ""
    return conn


def test_an_accepted_message_takes_one_write_for_the_envelope_and_one_for_the_body():
    conn = relay([(250, b"ok"), (250, b"ok"), (354, b"go"), (250, b"queued as 1")])
    assert smtp.SmtpMessenger._transaction(conn, outgoing()) == (250, "queued as 1")
    assert conn.data_sent == [ENVELOPE, b"Subject: x\r\n\r\n..dot\r\nhello\r\n.\r\n"]
    assert conn.sent == [] and conn.replies == []  # no step-by-step command, every reply read


@pytest.mark.parametrize("replies, answer, after_envelope", [
    # the recipient refused, DATA refused for want of one: nothing more is sent
    ([(250, b"ok"), (550, b"5.1.1 no such user"), (503, b"5.5.1 no valid recipients")],
     (550, "5.1.1 no such user"), []),
    # a relay that takes DATA anyway gets an empty message, never this one
    ([(250, b"ok"), (451, b"4.3.0 try later"), (354, b"go"), (554, b"5.5.1 no recipients")],
     (451, "4.3.0 try later"), [b".\r\n"]),
    # the sender refused: its answer, though the rest were refused after it
    ([(553, b"5.1.8 bad sender"), (503, b"5.5.1 MAIL first"), (503, b"5.5.1 RCPT first")],
     (553, "5.1.8 bad sender"), []),
    # DATA itself refused
    ([(250, b"ok"), (250, b"ok"), (554, b"5.7.1 policy")], (554, "5.7.1 policy"), []),
])
def test_the_first_refusal_is_the_answer_and_every_reply_is_read(replies, answer,
                                                                  after_envelope):
    conn = relay(replies)
    assert smtp.SmtpMessenger._transaction(conn, outgoing()) == answer
    assert conn.data_sent == [ENVELOPE] + after_envelope
    assert conn.replies == []


@pytest.mark.parametrize("conn, out", [
    (relay([], pipelining=False), outgoing()),               # not offered
    (relay([]), outgoing("bob <r@x.test>")),                 # not a plain address
    (relay([]), outgoing("बॉब@उदाहरण.भारत", smtputf8=True)),   # SMTPUTF8: smtplib's own path
])
def test_without_the_extension_or_with_unusual_addresses_commands_go_one_by_one(conn, out):
    conn.replies = [(250, b"ok"), (250, b"ok"), (354, b"go"), (250, b"queued")]
    assert smtp.SmtpMessenger._transaction(conn, out)[0] == 250
    assert [cmd.split()[0] for cmd in conn.sent] == ["mail", "rcpt", "data"]


def send_all(messenger: smtp.SmtpMessenger, tasks: list[smtp.SendTask]) -> list[smtp.SendTask]:
    """The tasks as they finish, within 30 s."""
    messenger.submit(tasks, time.monotonic() + 30)
    done, deadline = [], time.monotonic() + 30
    while len(done) < len(tasks) and time.monotonic() < deadline:
        done += messenger.collect(len(tasks))
    return done


class GroupingRelay(LoopbackServer):
    """A relay on a real socket that offers PIPELINING and, as RFC 2920
    allows, answers MAIL, RCPT and DATA only once all three have arrived: a
    client that waits for each reply before the next command stalls here."""

    def __init__(self, refuse: str = ""):
        self.refuse = refuse
        self.messages: list[bytes] = []
        super().__init__()

    def _session(self, conn):
        lines = conn.makefile("rb")
        conn.sendall(b"220 grouping relay\r\n")
        group: list[bytes] = []
        while line := lines.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                conn.sendall(b"250-grouping\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb in (b"MAIL", b"RCPT", b"DATA"):
                group.append(line)
                if verb == b"DATA":
                    self._answer_group(conn, lines, group)
                    group = []
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                break
            else:
                conn.sendall(b"250 ok\r\n")
        conn.close()

    def _answer_group(self, conn, lines, group):
        refused = self.refuse and self.refuse.encode() in group[1]
        if len(group) != 3:
            conn.sendall(b"503 5.5.1 bad sequence\r\n" * len(group))
        elif refused:
            conn.sendall(b"250 ok\r\n550 5.1.1 no such user\r\n503 5.5.1 no valid recipients\r\n")
        else:
            conn.sendall(b"250 ok\r\n250 ok\r\n354 go\r\n")
            body = b"".join(iter(lines.readline, b".\r\n"))
            self.messages.append(body)
            conn.sendall(b"250 2.0.0 queued\r\n")

def test_messages_reach_a_relay_that_answers_only_whole_groups():
    server = GroupingRelay(refuse="nobody@")
    messenger = smtp.SmtpMessenger([smtp.Relay("127.0.0.1", server.port)], connections=2,
                                   timeout=3)
    tasks = [smtp.SendTask(job, lambda job=job: Outgoing(job, b"Subject: x\r\n\r\nhi\r\n",
                                                          "b+x@sandesh.test", "<m@d>", False), 8)
             for job in (Job(f"j{n}", "c", f"p{n}", "a", None, email, None, {}, 0, None, False,
                             None)
                         for n, email in enumerate(["a@x.test", "nobody@x.test", "b@x.test",
                                                    "c@x.test", "d@x.test"]))]
    try:
        done = send_all(messenger, tasks)
        outcomes = {t.job.email: (t.outcome, t.code) for t in done}
        assert outcomes == {"a@x.test": (ACCEPTED, 250), "b@x.test": (ACCEPTED, 250),
                            "c@x.test": (ACCEPTED, 250), "d@x.test": (ACCEPTED, 250),
                            "nobody@x.test": (PERMANENT, 550)}
        assert TRANSIENT not in {o for o, _ in outcomes.values()}
        assert server.messages == [b"Subject: x\r\n\r\nhi\r\n"] * 4
    finally:
        messenger.close()
        server.stop()


def test_the_stack_sink_offering_pipelining_takes_pipelined_messages_and_refusals(tmp_path):
    """aiosmtpd (the stack's sink) reads pipelined commands in order: with
    PIPELINING offered, messages arrive whole and a refused recipient is
    refused, with nothing stored for it."""
    import json

    from aiosmtpd.controller import Controller

    from devstack.smtp_sink import Faults, MaildirWriter, SinkHandler

    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"fail_recipients": {"nobody@x.test": 550}}))
    handler = SinkHandler(MaildirWriter(tmp_path / "maildir"), Faults(faults), pipelining=True)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    messenger = smtp.SmtpMessenger([smtp.Relay("127.0.0.1", port)], connections=1, timeout=5)
    try:
        probe = smtplib.SMTP("127.0.0.1", port)
        probe.ehlo()
        assert probe.has_extn("pipelining")
        probe.quit()
        jobs = [Job(f"j{n}", "c", f"p{n}", "a", None, email, None, {}, 0, None, False, None)
                for n, email in enumerate(["a@x.test", "nobody@x.test", "b@x.test"])]
        tasks = [smtp.SendTask(job, lambda job=job: Outgoing(
            job, f"Subject: {job.job_id}\r\n\r\n.hi\r\n".encode(), "b+x@sandesh.test", "<m@d>",
            False), 8) for job in jobs]
        done = send_all(messenger, tasks)
        assert {t.job.email: t.code for t in done} == {"a@x.test": 250, "nobody@x.test": 550,
                                                      "b@x.test": 250}
        stored = sorted(p.read_bytes().split(b"\r\n", 2)[2]
                        for p in (tmp_path / "maildir" / "new").iterdir())
        assert stored == [b"Subject: j0\r\n\r\n.hi\r\n", b"Subject: j2\r\n\r\n.hi\r\n"]
    finally:
        messenger.close()
        controller.stop()
