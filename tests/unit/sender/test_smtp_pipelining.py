"""PIPELINING (RFC 2920): with a relay that offers it, MAIL, RCPT and DATA
go in one write and their replies are read in order; the first refusal is
the answer, and no reply is left unread on the connection."""
from __future__ import annotations

import smtplib
import socket
import threading
import time

import pytest

from services.sender import smtp
from services.sender.compose import Outgoing
from services.sender.domain import ACCEPTED, PERMANENT, TRANSIENT, Job

ENVELOPE = [b"MAIL FROM:<b+x@sandesh.test>\r\n", b"RCPT TO:<r@x.test>\r\n", b"DATA\r\n"]
MESSAGE = b"Subject: x\r\n\r\n.dot\r\nhello\r\n"


class ScriptedRelay:
    """A relay on a real socket that answers MAIL, RCPT, DATA and the message
    with the replies it is given, in order, and logs every command and
    message it receives. Offering PIPELINING, it holds its answers until DATA
    has arrived (as RFC 2920 allows), so a client that waits for each answer
    before the next command stalls; without, it answers each at once."""

    def __init__(self, replies: list[bytes], pipelining: bool = True):
        self.replies, self.pipelining = list(replies), pipelining
        self.log: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self.listener.accept()
        lines = conn.makefile("rb")
        conn.sendall(b"220 scripted relay\r\n")
        held = 0
        while line := lines.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                offer = b"250-PIPELINING\r\n" if self.pipelining else b""
                conn.sendall(b"250-scripted\r\n" + offer + b"250 8BITMIME\r\n")
                continue
            self.log.append(line)
            if verb not in (b"MAIL", b"RCPT", b"DATA"):
                conn.sendall(b"221 bye\r\n" if verb == b"QUIT" else b"250 ok\r\n")
                continue
            held += 1
            if self.pipelining and verb != b"DATA":
                continue
            answers = [self.replies.pop(0) for _ in range(held)]
            held = 0
            conn.sendall(b"".join(answers))
            if answers[-1].startswith(b"354"):
                self.log.append(b"".join(iter(lines.readline, b".\r\n")) + b".\r\n")
                conn.sendall(self.replies.pop(0))
        conn.close()


def send_one(relay: ScriptedRelay, out: Outgoing) -> smtp.SendTask:
    messenger = smtp.SmtpMessenger([smtp.Relay("127.0.0.1", relay.port)], connections=1,
                                   timeout=3)
    task = smtp.SendTask(out.job, lambda: out, 8)
    try:
        messenger.submit([task], time.monotonic() + 30)
        assert messenger.collect(1, timeout=15) == [task]
    finally:
        messenger.close()
    return task


def outgoing(email: str = "r@x.test") -> Outgoing:
    job = Job("j1", "c", "p1", "a", None, email, None, {}, 0, None, False, None)
    return Outgoing(job, MESSAGE, "b+x@sandesh.test", "<j1@d>", False)


def test_an_accepted_message_goes_in_two_round_trips_and_arrives_stuffed():
    relay = ScriptedRelay([b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n", b"250 queued as 1\r\n"])
    task = send_one(relay, outgoing())
    assert (task.outcome, task.code, task.reply) == (ACCEPTED, 250, "queued as 1")
    assert relay.log[:4] == ENVELOPE + [b"Subject: x\r\n\r\n..dot\r\nhello\r\n.\r\n"]


@pytest.mark.parametrize("replies, answer, after_envelope", [
    # the recipient refused, DATA refused for want of one: no message follows
    ([b"250 ok\r\n", b"550 5.1.1 no such user\r\n", b"503 5.5.1 no valid recipients\r\n"],
     (PERMANENT, 550, "5.1.1 no such user"), []),
    # a relay that takes DATA anyway gets an empty message, never this one
    ([b"250 ok\r\n", b"451 4.3.0 try later\r\n", b"354 go\r\n", b"554 5.5.1 no recipients\r\n"],
     (TRANSIENT, 451, "4.3.0 try later"), [b".\r\n"]),
    # the sender refused: its answer, though the rest were refused after it
    ([b"553 5.1.8 bad sender\r\n", b"503 5.5.1 MAIL first\r\n", b"503 5.5.1 RCPT first\r\n"],
     (PERMANENT, 553, "5.1.8 bad sender"), []),
    # DATA itself refused
    ([b"250 ok\r\n", b"250 ok\r\n", b"554 5.7.1 policy\r\n"], (PERMANENT, 554, "5.7.1 policy"),
     []),
])
def test_the_first_refusal_is_the_answer_and_the_connection_stays_in_step(replies, answer,
                                                                           after_envelope):
    relay = ScriptedRelay(replies)
    task = send_one(relay, outgoing())
    assert (task.outcome, task.code, task.reply) == answer
    # every reply was read: the RSET after the refusal got its own answer
    assert relay.log == ENVELOPE + after_envelope + [b"RSET\r\n", b"QUIT\r\n"]


def test_without_pipelining_the_commands_go_one_by_one_and_stop_at_a_refusal():
    relay = ScriptedRelay([b"250 ok\r\n", b"550 5.1.1 no such user\r\n"], pipelining=False)
    task = send_one(relay, outgoing())
    assert (task.outcome, task.code) == (PERMANENT, 550)
    assert relay.log == ENVELOPE[:2] + [b"RSET\r\n", b"QUIT\r\n"]


class GroupingRelay:
    """A relay on a real socket that offers PIPELINING and, as RFC 2920
    allows, answers MAIL, RCPT and DATA only once all three have arrived: a
    client that waits for each reply before the next command stalls here."""

    def __init__(self, refuse: str = ""):
        self.refuse = refuse
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.messages: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

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

    def stop(self):
        self.listener.close()


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
        messenger.submit(tasks, time.monotonic() + 30)
        done, deadline = [], time.monotonic() + 30
        while len(done) < len(tasks) and time.monotonic() < deadline:
            done += messenger.collect(len(tasks))
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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
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
        messenger.submit(tasks, time.monotonic() + 30)
        done, deadline = [], time.monotonic() + 30
        while len(done) < len(tasks) and time.monotonic() < deadline:
            done += messenger.collect(len(tasks))
        assert {t.job.email: t.code for t in done} == {"a@x.test": 250, "nobody@x.test": 550,
                                                      "b@x.test": 250}
        stored = sorted(p.read_bytes().split(b"\r\n", 2)[2]
                        for p in (tmp_path / "maildir" / "new").iterdir())
        assert stored == [b"Subject: j0\r\n\r\n.hi\r\n", b"Subject: j2\r\n\r\n.hi\r\n"]
    finally:
        messenger.close()
        controller.stop()
