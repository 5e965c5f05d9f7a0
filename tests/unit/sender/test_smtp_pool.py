"""The SMTP messenger against a local aiosmtpd server: pooled connections,
a per-domain concurrency cap, 4xx/5xx classes, weighted relays."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from services.sender import smtp
from services.sender.compose import Outgoing
from services.sender.domain import Job


class SlowHandler:
    def __init__(self):
        self.lock = threading.Lock()
        self.active: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.sessions: set = set()
        self.received = 0

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address.startswith("perm"):
            return "550 5.1.1 no such user <perm@x.test>"
        if address.startswith("temp"):
            return "451 4.3.0 try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        domain = envelope.rcpt_tos[0].rpartition("@")[2]
        with self.lock:
            self.sessions.add(id(session))
            self.active[domain] = self.active.get(domain, 0) + 1
            self.peak[domain] = max(self.peak.get(domain, 0), self.active[domain])
        await asyncio.sleep(0.02)
        with self.lock:
            self.active[domain] -= 1
            self.received += 1
        return "250 OK queued"


@contextlib.contextmanager
def serving(handler):
    """An aiosmtpd server on a free loopback port running `handler`: its port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture
def server():
    handler = SlowHandler()
    with serving(handler) as port:
        yield handler, port


def task(n: int, email: str, limit: int) -> smtp.SendTask:
    job = Job(f"j{n}", "c", f"p{n}", "a", None, email, None, {}, 0, None, False, None)
    out = Outgoing(job, b"Subject: x\r\n\r\nhello\r\n", "b+x@sandesh.test", f"<j{n}@d>", False)
    return smtp.SendTask(job, lambda: out, limit)


def run(messenger: smtp.SmtpMessenger, tasks) -> None:
    messenger.submit(tasks, time.monotonic() + 30)
    left = len(tasks)
    while left:
        left -= len(messenger.collect(len(tasks)))


def test_connections_are_reused_and_one_domain_gets_at_most_its_cap(server):
    handler, port = server
    messenger = smtp.SmtpMessenger([smtp.Relay("127.0.0.1", port)], connections=4,
                                   max_unrecorded=1000)
    try:
        tasks = [task(i, f"r{i}@{'capped' if i % 2 else 'open'}.test", 1 if i % 2 else 8)
                 for i in range(40)]
        run(messenger, tasks)
        assert {t.outcome for t in tasks} == {smtp.ACCEPTED}
        assert handler.received == 40
        assert handler.peak["capped.test"] == 1 and handler.peak["open.test"] > 1
        assert len(handler.sessions) <= 4  # four pooled connections, not one per message
    finally:
        messenger.close()


def test_answers_are_classified_and_replies_masked(server):
    handler, port = server
    messenger = smtp.SmtpMessenger([smtp.Relay("127.0.0.1", port)], connections=2)
    try:
        tasks = [task(1, "perm@x.test", 8), task(2, "temp@x.test", 8), task(3, "ok@x.test", 8)]
        run(messenger, tasks)
        assert [(t.outcome, t.code) for t in tasks] == [
            (smtp.PERMANENT, 550), (smtp.TRANSIENT, 451), (smtp.ACCEPTED, 250)]
        assert "<email>" in tasks[0].reply and "perm@" not in tasks[0].reply
    finally:
        messenger.close()


def test_a_batch_given_up_mid_flight_does_not_leak_into_the_next(server):
    """The engine gives a batch up when recording its outcomes fails, and
    submits the next. Sends of the old one still in flight finished into
    the new batch: its count went wrong, so a job of it got no outcome."""
    handler, port = server
    messenger = smtp.SmtpMessenger([smtp.Relay("127.0.0.1", port)], connections=2)
    try:
        old = [task(i, f"old{i}@x.test", 8) for i in range(6)]
        messenger.submit(old, time.monotonic() + 30)
        messenger.collect(1)             # some are in flight now; the rest is given up
        new = [task(10 + i, f"new{i}@x.test", 8) for i in range(3)]
        messenger.submit(new, time.monotonic() + 30)
        got, deadline = [], time.monotonic() + 10
        while len(got) < len(new) and time.monotonic() < deadline:
            got.extend(messenger.collect(len(new)))
        assert sorted(t.job.job_id for t in got) == ["j10", "j11", "j12"]
        assert all(t.outcome == smtp.ACCEPTED for t in new)
    finally:
        messenger.close()


def test_a_dead_relay_is_a_transient_failure():
    messenger = smtp.SmtpMessenger([smtp.Relay("127.0.0.1", 1)], connections=1, timeout=2)
    try:
        tasks = [task(1, "a@x.test", 8)]
        run(messenger, tasks)
        assert tasks[0].outcome == smtp.TRANSIENT and tasks[0].code is None
    finally:
        messenger.close()


def test_relays_share_connections_by_weight():
    relays = smtp.parse_relays("a:25:3,b:2525:1", "x", 1)
    assert [(r.host, r.port, r.weight) for r in relays] == [("a", 25, 3), ("b", 2525, 1)]
    spread = smtp.spread(relays, 8)
    assert sum(r.host == "a" for r in spread) == 6 and sum(r.host == "b" for r in spread) == 2
    assert smtp.parse_relays("", "127.0.0.1", 2525) == [smtp.Relay("127.0.0.1", 2525, 1)]


def test_a_batch_submitted_after_shutdown_began_comes_back_released_at_once(server):
    """SIGTERM between two batches: the connections have gone, and the batch
    the loop had already polled must come back RELEASED (not attempted, goes
    again) instead of waiting for ever for a connection to take it."""
    handler, port = server
    messenger = smtp.SmtpMessenger([smtp.Relay("127.0.0.1", port)], connections=2)
    messenger.release()
    for thread in messenger._threads:
        thread.join(5)
    tasks = [task(i, f"r{i}@x.test", 8) for i in range(3)]
    messenger.submit(tasks, time.monotonic() + 60)
    done = messenger.collect(3, timeout=5)
    assert [t.outcome for t in done] == [smtp.RELEASED] * 3
    assert messenger.collect(0, 0) == [] and handler.received == 0


class GatedHandler:
    """Accepts every message, but answers DATA only once the gate is open."""

    def __init__(self):
        self.gate = threading.Event()
        self.received = 0

    async def handle_DATA(self, server, session, envelope):
        while not self.gate.is_set():
            await asyncio.sleep(0.01)
        self.received += 1
        return "250 OK queued"


@pytest.fixture
def gated():
    """A relay holding every DATA until its gate opens, and a messenger
    with two connections to it."""
    handler = GatedHandler()
    with serving(handler) as port:
        messenger = smtp.SmtpMessenger([smtp.Relay("127.0.0.1", port)], connections=2,
                                       max_unrecorded=1000)
        try:
            yield handler, messenger
        finally:
            handler.gate.set()  # let the connections still waiting go
            messenger.close()


def counted_tasks(n: int, composed: list[str]) -> list[smtp.SendTask]:
    def compose(inner: smtp.SendTask):
        composed.append(threading.current_thread().name)
        return inner.compose()
    tasks = [task(i, f"r{i}@x.test", 8) for i in range(n)]
    return [smtp.SendTask(t.job, lambda t=t: compose(t), t.domain_limit) for t in tasks]


def wait_until_steady(values: list, seconds: float = 0.5) -> None:
    """Until `values` stops growing for `seconds`."""
    seen = -1
    while seen != len(values):
        seen = len(values)
        time.sleep(seconds)


def test_messages_are_composed_off_the_connections_and_a_bounded_number_ahead(gated):
    """Connection threads only talk to their relay (they would otherwise
    queue for the GIL behind the others' rendering and signing), and the
    composer stays at most two messages per connection ahead of them: a
    stalled relay does not have the whole batch built in memory."""
    handler, messenger = gated
    composed: list[str] = []
    tasks = counted_tasks(50, composed)
    messenger.submit(tasks, time.monotonic() + 60)
    wait_until_steady(composed)
    assert len(composed) == 2 + messenger.compose_ahead == 6  # two on the wire, four ahead
    handler.gate.set()
    left = len(tasks)
    while left:
        left -= len(messenger.collect(left, timeout=5))
    assert {t.outcome for t in tasks} == {smtp.ACCEPTED} and handler.received == 50
    assert len(composed) == 50 and not any(name.startswith("smtp-") for name in composed)


def test_messages_composed_ahead_but_not_started_by_the_deadline_come_back_released(gated):
    """Past the batch's deadline nothing new starts: the messages on the
    wire finish, everything else (composed or not) comes back RELEASED to
    go again, and nothing is lost, though the connections are still stuck."""
    handler, messenger = gated
    tasks = [task(i, f"r{i}@x.test", 8) for i in range(20)]
    messenger.submit(tasks, time.monotonic() + 0.5)
    released = []
    deadline = time.monotonic() + 10
    while len(released) < 18 and time.monotonic() < deadline:
        released += messenger.collect(18, timeout=1)
    assert len(released) == 18 and {t.outcome for t in released} == {smtp.RELEASED}
    handler.gate.set()
    on_the_wire = messenger.collect(2, timeout=5)
    assert [t.outcome for t in on_the_wire] == [smtp.ACCEPTED] * 2
    assert {t.job.job_id for t in released + on_the_wire} == {t.job.job_id for t in tasks}
    assert handler.received == 2


def os_thread_names() -> list[str]:
    names = []
    for task_dir in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            names.append((task_dir / "comm").read_text().strip())
    return names


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="thread names read from Linux /proc")
def test_the_connections_and_the_composer_carry_os_thread_names():
    # top -H, ps -L and the send benchmark's split by thread read these.
    messenger = smtp.SmtpMessenger([smtp.Relay("127.0.0.1", 1)], connections=3, timeout=2)
    try:
        def named():
            names = os_thread_names()
            return sorted(n for n in names if n.startswith("smtp-")), names.count("compose")

        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and named() != (["smtp-0", "smtp-1", "smtp-2"], 1):
            time.sleep(0.01)
        assert named() == (["smtp-0", "smtp-1", "smtp-2"], 1)
    finally:
        messenger.close()


@pytest.mark.timeout(15)
def test_a_relay_that_never_answers_quit_keeps_the_sender_no_longer_than_the_quit_timeout():
    """QUIT waited for the connection's own timeout (30 s), holding a
    SIGTERM's 30 s, and under the messenger's lock."""
    import smtplib
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def mute_at_quit():
        conn, _ = listener.accept()
        conn.sendall(b"220 mute ESMTP\r\n")
        conn.recv(1024)  # EHLO
        conn.sendall(b"250 mute\r\n")
        conn.recv(1024)  # QUIT: no answer, for longer than the connection's timeout
        time.sleep(40)
        conn.close()

    threading.Thread(target=mute_at_quit, daemon=True).start()
    client = smtplib.SMTP("127.0.0.1", listener.getsockname()[1], timeout=30)
    client.ehlo()
    smtp._quit(client)
    assert client.sock is None  # closed after QUIT_TIMEOUT, not the connection's 30 s
    listener.close()
