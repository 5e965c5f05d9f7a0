"""SIGTERM against a relay that never finishes a transaction, never
finishes greeting, or never completes the TCP handshake: the sender still
exits in time, and the message it was sending is retried later."""
from __future__ import annotations

import signal
import socket
import threading
import time

import pytest

from shared import topics
from tests.integration.sender.harness import DomainRelay, Senders, dump_logs, hexid, recipients
from tests.kafka_freeze import kafka_frozen_on_demand

pytestmark = pytest.mark.timeout(200)


class StallingRelay:
    """Takes a message up to its final dot (or, stalling at the greeting,
    takes nothing), then answers with a continuation line ("250-...", or
    "220-...") every second, for ever: each reply comes well within the
    sender's SMTP timeout, so only a cut ends the wait."""

    def __init__(self, stall_at: str):
        self.stall_at = stall_at
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.stalling = threading.Event()
        self.cut = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        lines = conn.makefile("rb")
        try:
            if self.stall_at == "greeting":
                self._stall(conn, b"220-still waking up\r\n")
            conn.sendall(b"220 stalling.test ESMTP\r\n")
            for line in lines:
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    conn.sendall(b"250 stalling.test\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go on\r\n")
                    for body_line in lines:
                        if body_line == b".\r\n":
                            break
                    self._stall(conn, b"250-still thinking\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")
            self.cut.set()  # the sender closed its end
        except OSError:
            self.cut.set()
        finally:
            conn.close()

    def _stall(self, conn: socket.socket, line: bytes) -> None:
        self.stalling.set()
        while True:
            conn.sendall(line)
            time.sleep(1)

    def close(self) -> None:
        self.server.close()


class UnansweredHandshake:
    """A relay whose accept queue is full and which never accepts: Linux
    drops the SYNs of any further connect, which then waits in SYN_SENT for
    its whole timeout (the SMTP timeout, 30 s). Two connects of its own
    fill the queue (a backlog of 0 holds one)."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(0)
        self.port = self.server.getsockname()[1]
        self.fillers = [self._connect_without_waiting() for _ in range(2)]
        self.filler_ends = {f"0100007F:{filler.getsockname()[1]:04X}" for filler in self.fillers}
        time.sleep(0.2)
        assert self._connects_waiting(fillers=True) >= 1, "the accept queue did not fill"
        self.stalling = threading.Event()
        self.cut = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _connect_without_waiting(self) -> socket.socket:
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        return filler

    def _watch(self) -> None:
        """stalling: a connect to the relay other than the fillers' waits in
        SYN_SENT; cut: none waits any more. (Told apart by their own ends,
        not by a count of waiting connects taken once: the fillers' states
        may change under load, and a SIGTERM sent on a miscount reached a
        sender still starting, before its handler.)"""
        while True:
            if self._connects_waiting():
                self.stalling.set()
            elif self.stalling.is_set():
                self.cut.set()
                return
            time.sleep(0.1)

    def _connects_waiting(self, fillers: bool = False) -> int:
        """Connects to the relay in SYN_SENT: the fillers', or the others'."""
        remote = f"0100007F:{self.port:04X}"
        with open("/proc/net/tcp") as table:
            rows = [line.split() for line in table.readlines()[1:]]
        return sum(1 for row in rows if row[2] == remote and row[3] == "02"  # SYN_SENT
                   and (row[1] in self.filler_ends) == fillers)

    def close(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.server.close()


@pytest.fixture(params=["data", "greeting", "handshake"])
def relay(request):
    relay = UnansweredHandshake() if request.param == "handshake" \
        else StallingRelay(request.param)
    yield relay
    relay.close()


def test_a_sigterm_cuts_a_transaction_the_relay_never_finishes_and_the_job_goes_again(
        stack_env, tmp_path, sink, unique, relay):
    """Its only attempt, cut (after DATA, while the relay greets, or while
    the connect waits for the handshake):
    released as after a kill -9, not counted (a deferral on the last attempt
    dead-lettered it), and the next sender sends it."""
    senders = Senders(stack_env, tmp_path, sink, unique, SANDESH_SMTP_PORT=relay.port,
                      SANDESH_SMTP_CONNECTIONS=1, SANDESH_SENDER_SHUTDOWN_CUT_SECONDS=3,
                      SANDESH_SEND_MAX_ATTEMPTS=1)
    try:
        proc = senders.start()
        account, campaign = hexid(), hexid()
        senders.launch(account, campaign)
        [job_id] = senders.jobs(account, campaign, recipients(1, unique))
        senders.wait(relay.stalling.is_set, 90, "the relay to hold the message")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(40)
        took = time.monotonic() - started
        assert proc.returncode == 0, dump_logs(tmp_path)
        # cut 3 s after the SIGTERM; without the cut it waited for ever
        assert took < 15, took
        assert relay.cut.wait(5)
        assert [e.type for e in senders.events() if e.data.get("job_id") == job_id] == []
        assert senders.events(topics.SEND_DLQ) == []
        senders.env["SANDESH_SMTP_PORT"] = str(sink.port)   # the next sender, a relay that answers
        senders.start()
        senders.wait(lambda: sink.count() == 1, 90, "the released job to be sent")
        outcomes = [(e.type, e.data["attempt"]) for e in senders.events()
                    if e.data.get("job_id") == job_id]
        assert outcomes == [("delivery.sent", 0)]
    finally:
        senders.dispose()


def test_a_sigterm_while_kafka_takes_no_delivery_events_exits_in_time_and_they_are_announced_later(
        stack_env, tmp_path, sink, unique):
    """The batch's messages are sent and recorded, but Kafka does not answer
    its delivery events. Told to stop, the sender gives up the flush (it
    waited the producer's two-minute message timeout), commits nothing and
    exits in time; the next sender finds the jobs recorded as sent and
    announces them, without sending them again."""
    relay = DomainRelay(slow_seconds=1.0)  # Kafka is frozen while the batch is on the wire
    senders = Senders(stack_env, tmp_path, sink, unique, SANDESH_SMTP_PORT=relay.port,
                      SANDESH_SENDER_SHUTDOWN_CUT_SECONDS=3)
    try:
        proc = senders.start()
        account, campaign = hexid(), hexid()
        senders.launch(account, campaign)
        people = [(hexid(), f"p{n}-{unique}@slow.test", "N") for n in range(6)]
        with kafka_frozen_on_demand() as freeze:
            job_ids = senders.jobs(account, campaign, people)
            senders.wait(lambda: relay.in_data["slow.test"] > 0, 90, "the batch on the wire")
            freeze()
            senders.wait(lambda: sum(relay.accepted.values()) == len(people), 30,
                         "every message accepted")
            time.sleep(2)  # recorded; the flush of their events waits on Kafka
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(40)
            took = time.monotonic() - started
        assert proc.returncode == 0, dump_logs(tmp_path)
        assert took < 15, took  # the cut (3 s) and the flush's grace (5 s)
        senders.start()
        senders.wait(lambda: {e.data["job_id"] for e in senders.events(idle=0.5)
                              if e.type == "delivery.sent"} == set(job_ids),
                     90, "every job announced")
        assert sorted(relay.accepted.values()) == [1] * len(people)  # not sent again
        print(f"exited {took:.1f} s after the SIGTERM")
    finally:
        senders.dispose()
        relay.stop()


def test_a_send_loop_stuck_on_kafka_fails_its_liveness_check_and_passes_once_it_goes_on(
        stack_env, tmp_path, sink, unique):
    """The liveness probe is what restarts a stuck sender (a sender once
    stopped after a Kafka disruption, logging nothing): while its batch's
    flush waits on a frozen Kafka, /healthz says so, naming the send loop;
    once Kafka answers, the loop turns again and /healthz passes."""
    import json
    import urllib.error
    import urllib.request

    from tests.integration.sender.harness import free_port

    port = free_port()

    def healthz() -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())
        except OSError:
            return 0, {}

    relay = DomainRelay(slow_seconds=1.0)
    senders = Senders(stack_env, tmp_path, sink, unique, SANDESH_SMTP_PORT=relay.port,
                      SANDESH_SENDER_PORT=port, SANDESH_SENDER_STALL_SECONDS=3)
    try:
        senders.start()
        account, campaign = hexid(), hexid()
        senders.launch(account, campaign)
        senders.wait(lambda: healthz()[0] == 200, 60, "a live sender")
        people = [(hexid(), f"p{n}-{unique}@slow.test", "N") for n in range(4)]
        with kafka_frozen_on_demand() as freeze:
            job_ids = senders.jobs(account, campaign, people)
            senders.wait(lambda: relay.in_data["slow.test"] > 0, 90, "the batch on the wire")
            freeze()
            status, body = senders.wait(lambda: (lambda got: got if got[0] == 503 else None)(
                healthz()), 60, "the liveness check to fail")
            assert body["status"] == "stalled" and "send loop" in body["checks"]["send_loop"]
        senders.wait(lambda: healthz()[0] == 200, 150, "the loop turning again")
        senders.wait(lambda: {e.data["job_id"] for e in senders.events(idle=0.5)
                              if e.type == "delivery.sent"} == set(job_ids),
                     90, "every job announced")
        assert sorted(relay.accepted.values()) == [1] * len(people)
    finally:
        senders.dispose()
        relay.stop()
