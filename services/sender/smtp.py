"""The Messenger over SMTP: pooled, reused connections to weighted relays,
with a per-recipient-domain concurrency cap.

Why threads and smtplib rather than aiosmtplib: the rest of the sender is
synchronous (kafka-python, pymongo), a socket wait releases the GIL, and a
few long-lived connections (one thread each) are all a relay wants. One
more thread composes (renders and signs) the batch's messages a few ahead
of the connections, so that a connection whose reply has come back finds
the GIL free instead of queueing behind seven others rendering (RSA signing
releases the GIL, so composing still overlaps the network waits).

Relays: SANDESH_SMTP_RELAYS="host:port:weight,..." (default the stack's
SANDESH_SMTP_HOST:SANDESH_SMTP_PORT). Connections are spread over the
relays in proportion to their weights; STARTTLS and AUTH apply to every
relay when configured.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import select
import smtplib
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from services.sender.compose import ComposeError, Outgoing
from services.sender.domain import ACCEPTED, PERMANENT, TRANSIENT, Job, classify
from shared.logs import mask_emails
from shared.thread_names import name_this_thread

log = logging.getLogger(__name__)

RELEASED = "released"  # not attempted (deadline or shutdown): goes back to the queue
COMPOSE_FAILED = "compose_failed"


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    weight: int = 1


def parse_relays(spec: str, default_host: str, default_port: int) -> list[Relay]:
    if not spec.strip():
        return [Relay(default_host, default_port, 1)]
    relays = []
    for item in filter(None, (p.strip() for p in spec.split(","))):
        parts = item.rsplit(":", 2) if item.count(":") >= 2 else item.rsplit(":", 1) + ["1"]
        host, port, weight = parts[0], int(parts[1]), int(parts[2])
        if weight <= 0 or not 0 < port < 65536:
            raise ValueError(f"relay {item!r}: port 1..65535, weight > 0")
        relays.append(Relay(host, port, weight))
    return relays


def spread(relays: list[Relay], connections: int) -> list[Relay]:
    """One relay per connection, in proportion to the weights (each relay
    gets at least one connection)."""
    total = sum(r.weight for r in relays)
    counts = {r: max(1, round(connections * r.weight / total)) for r in relays}
    return [r for r in relays for _ in range(counts[r])]


@dataclass
class SendTask:
    job: Job
    compose: Callable[[], Outgoing]
    domain_limit: int
    outcome: str = ""         # ACCEPTED, TRANSIENT, PERMANENT, RELEASED or COMPOSE_FAILED
    code: int | None = None
    reply: str = ""
    outgoing: Outgoing | None = None
    batch: "_Batch | None" = field(default=None, repr=False)  # the one it was submitted in

    @property
    def domain(self) -> str:
        return self.job.recipient_domain


@dataclass
class _Batch:
    deadline: float
    remaining: int = 0        # not finished yet
    pending: list[SendTask] = field(default_factory=list)   # not composed yet, in order
    ready: list[SendTask] = field(default_factory=list)     # composed, waiting for a connection
    composing: int = 0
    finished: list[SendTask] = field(default_factory=list)  # not collected yet
    collect_at: int = 1       # how many finished tasks the engine waits for


class SmtpMessenger:
    def __init__(self, relays: list[Relay], connections: int = 4, *, starttls: bool = False,
                 username: str = "", password: str = "", timeout: float = 30.0,
                 local_hostname: str | None = None, max_unrecorded: int = 32):
        # Sent but not yet collected by the engine (so not yet recorded):
        # what a kill -9 could send twice, on top of one record's worth.
        self.max_unrecorded = max_unrecorded
        self.starttls = starttls
        self.username = username
        self.password = password
        self.timeout = timeout
        self.local_hostname = local_hostname
        # One lock, three kinds of waiter, each woken only for what it
        # waits for: the engine (finished tasks), the connections (a
        # composed task, room in its domain or under max_unrecorded) and the
        # composer (a task to compose, room ahead of the connections).
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        self._work = threading.Condition(lock)
        self._room = threading.Condition(lock)
        self._batch: _Batch | None = None
        self._in_flight: dict[str, int] = {}
        self._closing = False
        # Each connection thread's connection while it is being opened or
        # is inside a transaction (thread name -> connection), for
        # cut_transactions.
        self._live: dict[str, smtplib.SMTP] = {}
        self._cut = False
        lanes = spread(relays, connections)
        self.compose_ahead = 2 * len(lanes)
        self._threads = [threading.Thread(target=self._run, args=(relay, f"smtp-{i}"), daemon=True,
                                          name=f"smtp-{i}-{relay.host}:{relay.port}")
                         for i, relay in enumerate(lanes)]
        self._threads.append(threading.Thread(target=self._compose_ahead, daemon=True,
                                              name="compose"))
        for thread in self._threads:
            thread.start()

    # -- the engine's side ----------------------------------------------------
    def submit(self, tasks: list[SendTask], deadline: float) -> None:
        """Compose and send these tasks (the previous batch must be collected).
        Tasks not started by `deadline` (time.monotonic) are RELEASED."""
        with self._cond:
            if self._closing:  # the connections are gone or going: start nothing
                for task in tasks:
                    task.outcome = RELEASED
                self._batch = _Batch(deadline, finished=list(tasks))
                return
            self._batch = _Batch(deadline, remaining=len(tasks), pending=list(tasks))
            for task in tasks:
                task.batch = self._batch
            self._room.notify_all()

    def collect(self, at_least: int, timeout: float = 0.5) -> list[SendTask]:
        """Tasks finished since the last call: returns once `at_least` are,
        or the batch is complete, or `timeout` passed."""
        with self._cond:
            batch = self._batch
            if batch is None:
                return []
            batch.collect_at = at_least
            self._cond.wait_for(lambda: self._collectable(batch), timeout)
            done, batch.finished = batch.finished, []
            self._work.notify_all()  # connections waiting for room may go on
            if not batch.remaining and not done:
                self._batch = None
            return done

    def release(self) -> None:
        """Shutting down: finish the sends in flight, start no new one."""
        with self._cond:
            self._closing = True
            for condition in (self._cond, self._work, self._room):
                condition.notify_all()

    def cut_transactions(self) -> int:
        """Shutting down, out of time: cut the connections still inside a
        transaction (a relay slow to answer kept a SIGTERM past its 30 s).
        Their tasks come back RELEASED, as if this sender had been killed:
        the job is read again, with the same attempt and Message-ID (the
        relay may have the message: one duplicate at most). Counted as a
        deferral, a cut on a job's last attempt dead-lettered it. None is
        tried again here. Returns how many."""
        with self._cond:
            self._cut = True
        live = list(self._live.values())
        for conn in live:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)  # the thread's read returns at once
            except (AttributeError, OSError):
                pass  # closed meanwhile
        return len(live)

    def close(self) -> None:
        self.release()
        for thread in self._threads:
            thread.join(timeout=5)

    # -- both sides, under the lock --------------------------------------------
    def _finish(self, batch: _Batch, task: SendTask) -> None:
        batch.remaining -= 1
        batch.finished.append(task)
        # Wake the engine only when what it waits for is there: woken for
        # every task, it took the lock and the GIL ~30 times per record,
        # in between the connections' replies, to find it had to wait on.
        if self._collectable(batch):
            self._cond.notify()

    @staticmethod
    def _collectable(batch: _Batch) -> bool:
        """What the engine's collect waits for: its count, or the batch complete."""
        return len(batch.finished) >= batch.collect_at or not batch.remaining

    def _no_new_sends(self, batch: _Batch) -> bool:
        """Past the batch's deadline, or shutting down."""
        return self._closing or time.monotonic() > batch.deadline

    def _release_unstarted(self, batch: _Batch) -> bool:
        """Past the deadline or shutting down: every task not yet sent (nor
        being composed) is RELEASED. True if that is the case."""
        if not self._no_new_sends(batch):
            return False
        for task in batch.pending + batch.ready:
            task.outcome = RELEASED
            self._finish(batch, task)
        batch.pending.clear()
        batch.ready.clear()
        return True

    # -- the composer's side -----------------------------------------------------
    def _compose_ahead(self) -> None:
        """Compose the batch's messages in order, a few ahead of the
        connections. Composing here rather than in the connection threads
        keeps them free for their sockets: each wakes up for its relay's
        reply without queueing for the GIL behind seven others rendering
        and signing. Measured with 8 connections into the stack's sink:
        1,190-1,228 msgs/s and 0.88-0.93 ms of CPU per message, against
        938-999 and 0.97-1.04 when each connection composed its own."""
        name_this_thread("compose")
        while True:
            with self._room:
                batch, task = self._next_to_compose()
                while task is None:
                    if self._closing:
                        return
                    self._room.wait(0.5)
                    batch, task = self._next_to_compose()
            self._compose(task)
            with self._room:
                batch.composing -= 1
                if task.outcome:  # could not be composed
                    self._finish(batch, task)
                elif self._no_new_sends(batch):
                    task.outcome = RELEASED
                    self._finish(batch, task)
                else:
                    batch.ready.append(task)
                    self._work.notify()

    def _next_to_compose(self) -> tuple[_Batch | None, SendTask | None]:
        batch = self._batch
        if batch is None or not batch.pending or self._release_unstarted(batch):
            return batch, None
        if len(batch.ready) + batch.composing >= self.compose_ahead:
            return batch, None
        batch.composing += 1
        return batch, batch.pending.pop(0)

    @staticmethod
    def _compose(task: SendTask) -> None:
        try:
            task.outgoing = task.compose()
        except ComposeError as exc:
            task.outcome, task.reply = COMPOSE_FAILED, str(exc)
        except Exception as exc:  # a bug must not kill the composer
            log.exception("compose failed unexpectedly", extra={"job_id": task.job.job_id})
            task.outcome, task.reply = RELEASED, f"{type(exc).__name__}"

    # -- the connections' side ------------------------------------------------
    def _take(self) -> SendTask | None:
        """Under the lock: the next composed task whose domain has room, or None."""
        batch = self._batch
        if batch is None or self._release_unstarted(batch) or not batch.ready:
            return None
        if len(batch.finished) >= self.max_unrecorded:
            return None  # let the engine record what went out before sending more
        for position, task in enumerate(batch.ready):
            if self._in_flight.get(task.domain, 0) < task.domain_limit:
                del batch.ready[position]
                self._in_flight[task.domain] = self._in_flight.get(task.domain, 0) + 1
                self._room.notify()  # one more may be composed
                return task
        return None

    def _done(self, task: SendTask) -> None:
        with self._cond:
            self._in_flight[task.domain] -= 1
            # Into its own batch: if the engine gave that one up (its record
            # failed) and submitted another, this send must not count there.
            self._finish(task.batch, task)
            if self._batch is not None and self._batch.ready:
                self._work.notify()  # its domain has room again (none waits for an empty queue)

    def _run(self, relay: Relay, os_name: str) -> None:
        name_this_thread(os_name)
        conn: smtplib.SMTP | None = None
        while True:
            with self._work:
                task = self._take()
                while task is None and not (self._closing and not self._unsent()):
                    self._work.wait(0.5)
                    task = self._take()
            if task is None:  # closing, nothing left: QUIT outside the lock, which a slow
                if conn is not None:  # relay's QUIT held from collect() for its whole timeout
                    _quit(conn)
                return
            try:
                conn = self._deliver(relay, conn, task)
            except Exception as exc:  # never lose the task nor the thread: it goes again
                log.exception("delivery failed unexpectedly", extra={"job_id": task.job.job_id})
                _close(conn)
                conn = None
                task.outcome, task.code, task.reply = TRANSIENT, None, f"{type(exc).__name__}"
            self._done(task)

    def _unsent(self) -> bool:
        batch = self._batch
        return batch is not None and bool(batch.pending or batch.ready or batch.composing)

    def _connect(self, relay: Relay, name: str) -> smtplib.SMTP:
        """A connection, greeted and ready. It is live (cut_transactions can
        end it) from before its socket exists: a relay slow to greet, or to
        answer EHLO, STARTTLS or AUTH, would otherwise hold a SIGTERM."""
        conn = _Connection(self, local_hostname=self.local_hostname, timeout=self.timeout)
        self._live[name] = conn
        try:
            code, greeting = conn.connect(relay.host, relay.port)
            if code != 220:  # as SMTP(host) checks: a relay that greets 554 takes nothing
                raise smtplib.SMTPConnectError(code, greeting)
            _hello(conn)
            if self.starttls:
                conn.starttls(context=ssl.create_default_context())
                _hello(conn)
            if self.username:
                conn.login(self.username, self.password)
        except BaseException:
            _close(conn)
            raise
        return conn

    def _deliver(self, relay: Relay, conn: smtplib.SMTP | None, task: SendTask):
        """One SMTP transaction. Returns the connection to keep (None if it broke)."""
        out = task.outgoing
        name = threading.current_thread().name
        if conn is not None and _spoke_unasked(conn):
            _close(conn)  # e.g. "421 idle too long", then closed: not one to send on
            conn = None
        for fresh in (conn is None, True):  # a reused connection may have timed out: once more
            try:
                if conn is None:
                    conn = self._connect(relay, name)
                self._live[name] = conn
                code, reply = self._transaction(conn, out)
                task.code, task.reply = code, reply
                task.outcome = classify(code)
                if task.outcome != ACCEPTED:
                    _reset(conn)
                return conn
            except OSError as exc:  # smtplib's errors are OSErrors too (AUTH refused)
                _close(conn)
                conn = None
                after_mail = getattr(exc, "_sandesh_after_mail", False)
                if self._cut:  # our shutdown, not the relay's answer: no attempt is used
                    task.code, task.reply, task.outcome = None, "shutting down", RELEASED
                    return None
                if isinstance(exc, _Closing) and fresh:
                    task.code, task.reply, task.outcome = exc.code, _text(exc.reply), TRANSIENT
                    return None
                if fresh or after_mail:
                    task.code, task.reply, task.outcome = None, _text(f"connection: {exc}"), TRANSIENT
                    return None
            finally:
                self._live.pop(name, None)
        return conn

    @staticmethod
    def _transaction(conn: smtplib.SMTP, out: Outgoing) -> tuple[int, str]:
        if out.smtputf8 and not conn.has_extn("smtputf8"):
            # RFC 6531 3.7.5: not deliverable through this relay. smtplib
            # raised, taken as a broken connection: a retry, five times over.
            return NO_SMTPUTF8
        if _can_pipeline(conn, out):
            return _pipelined(conn, out)
        options = ["SMTPUTF8", "BODY=8BITMIME"] if out.smtputf8 else []
        code, reply = _mail(conn, out.mail_from, options)
        if code == 421:
            raise _Closing(code, reply)
        if code != 250:
            return code, _text(reply)
        try:
            code, reply = _rcpt(conn, out.recipient)
            if code not in (250, 251):
                return code, _text(reply)
            code, reply = _data(conn, out.message)
            return code, _text(reply)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            exc._sandesh_after_mail = True  # never replay a transaction that got this far
            raise


class _Connection(smtplib.SMTP):
    """smtplib.SMTP whose socket a shutdown cut can reach from the moment it
    is made: smtplib assigns `sock` only once the connect returns. The TCP
    connect itself waits in short slices, looking at the cut between them:
    a relay that never completed the handshake held a SIGTERM for the whole
    SMTP timeout, and a cut coming between a look and a blocking connect
    was missed (shutting a socket down before its connect does nothing).
    No handshake or greeting is waited for after a cut. (Resolving the
    relay's name happens before and is not cut.)"""

    CUT_CHECK_SECONDS = 0.2

    def __init__(self, messenger: SmtpMessenger, **kwargs):
        self._messenger = messenger
        super().__init__(**kwargs)

    def _get_socket(self, host, port, timeout):
        self._host = host  # as SMTP(host) sets it: STARTTLS checks the certificate's name
        if timeout is socket._GLOBAL_DEFAULT_TIMEOUT:
            timeout = socket.getdefaulttimeout()
        error: OSError = OSError(f"no address for {host}")
        for family, kind, proto, _, address in socket.getaddrinfo(host, port, 0,
                                                                   socket.SOCK_STREAM):
            self.sock = sock = socket.socket(family, kind, proto)
            try:
                if self.source_address:
                    sock.bind(self.source_address)
                self._connect_unless_cut(sock, address, timeout)
                sock.settimeout(timeout)
                return sock
            except OSError as exc:
                sock.close()
                if self._messenger._cut:
                    raise OSError("shutting down") from exc
                error = exc
        raise error

    def _connect_unless_cut(self, sock: socket.socket, address, timeout: float | None) -> None:
        sock.setblocking(False)
        code = sock.connect_ex(address)
        deadline = None if timeout is None else time.monotonic() + timeout
        waiting = select.poll()  # not select(): it fails for a descriptor over 1023
        waiting.register(sock, select.POLLOUT)
        while code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
            if self._messenger._cut:
                raise OSError("shutting down")
            left = self.CUT_CHECK_SECONDS if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"connect to {address} timed out")
            if waiting.poll(min(left, self.CUT_CHECK_SECONDS) * 1000):  # done, or failed
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))
        if self._messenger._cut:
            raise OSError("shutting down")


# What a message whose address needs SMTPUTF8 gets from a relay without it.
NO_SMTPUTF8 = (553, "5.6.7 the relay does not offer SMTPUTF8, which the recipient's "
                    "address needs (RFC 6531)")


class _Closing(OSError):
    """421 to MAIL: the relay is closing the connection (an idle timeout,
    a restart). Nothing of the message went: on a reused connection it is
    sent again once on a fresh one."""

    def __init__(self, code: int, reply: bytes | str):
        super().__init__(f"{code} {_text(reply)}")
        self.code, self.reply = code, reply


def _hello(conn: smtplib.SMTP) -> None:
    """EHLO, else (refused as unknown, 5xx) HELO; SMTPHeloError, a
    connection error, when neither is accepted. Unchecked, a relay that
    takes only HELO, or one that answered EHLO 421, answered every MAIL
    with 503 "send HELO first": a permanent failure each."""
    code, reply = conn.ehlo()
    if 500 <= code < 600:
        code, reply = conn.helo()
    if not 200 <= code < 300:
        raise smtplib.SMTPHeloError(code, reply)


def _spoke_unasked(conn: smtplib.SMTP) -> bool:
    """Whether the relay sent something between transactions, or closed the
    connection: an idle connection is ended with "421 ... timeout" (Postfix
    after 300 s), which the next MAIL would read as its own answer."""
    sock = conn.sock
    if sock is None:
        return True
    waiting = select.poll()
    waiting.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(waiting.poll(0))


class _ProtocolError(OSError):
    """A reply no relay should give at this point (DATA answered 250: the
    relay took no message). The connection is dropped and the job tried
    again later, never counted as sent."""


# smtplib's mail() and rcpt() parse every address with email.utils.parseaddr
# to quote it: ~10% of the sender's CPU. An address that is plainly an
# addr-spec (no space, quote, bracket or line break) is sent as <addr> as it
# is, which is what quoteaddr returns for it; any other goes through smtplib.
_PLAIN_ADDRESS = re.compile(r"[^\s<>()\[\]\\,;:\"@]+@[^\s<>()\[\]\\,;:\"@]+")


def _mail(conn: smtplib.SMTP, sender: str, options: list[str]):
    if options or not sender.isascii() or not _PLAIN_ADDRESS.fullmatch(sender):
        return conn.mail(sender, options)  # SMTPUTF8 also switches the command encoding
    conn.putcmd("mail", f"FROM:<{sender}>")
    return conn.getreply()


def _rcpt(conn: smtplib.SMTP, recipient: str):
    if not recipient.isascii() or not _PLAIN_ADDRESS.fullmatch(recipient):
        return conn.rcpt(recipient)
    conn.putcmd("rcpt", f"TO:<{recipient}>")
    return conn.getreply()


def _data(conn: smtplib.SMTP, message: bytes):
    """smtplib's data() without its regex: dot-stuffing every line that
    starts with "." by a regular expression over the whole message was ~5% of
    the sender's CPU; bytes.replace does the same. A refused DATA comes back
    as its reply (smtplib raises), to be classified like any other."""
    conn.putcmd("data")
    code, reply = conn.getreply()
    if code != 354:
        if code < 400:
            raise _ProtocolError(f"DATA answered {code}")
        return code, reply
    return _body(conn, message)


def _body(conn: smtplib.SMTP, message: bytes):
    """The message after DATA's 354, dot-stuffed, and the relay's verdict."""
    stuffed = (b"." + message if message.startswith(b".") else message).replace(b"\n.", b"\n..")
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    conn.send(stuffed + b".\r\n")
    return conn.getreply()


def _can_pipeline(conn: smtplib.SMTP, out: Outgoing) -> bool:
    """The relay said PIPELINING in its EHLO, and both addresses go as
    they are (an SMTPUTF8 or unusual address takes smtplib's own path)."""
    return (not out.smtputf8 and conn.has_extn("pipelining")
            and out.mail_from.isascii() and _PLAIN_ADDRESS.fullmatch(out.mail_from) is not None
            and out.recipient.isascii() and _PLAIN_ADDRESS.fullmatch(out.recipient) is not None)


def _pipelined(conn: smtplib.SMTP, out: Outgoing) -> tuple[int, str]:
    """RFC 2920: MAIL, RCPT and DATA in one write and their three replies
    read in order, then the message: two round trips to the relay instead
    of four, which is what bounds a connection's rate on a distant relay.

    The first refusal is the answer. A relay that accepts DATA although the
    envelope failed gets an empty message ("." alone), which it must refuse
    for want of a recipient (RFC 2920 section 3.1)."""
    conn.send(f"MAIL FROM:<{out.mail_from}>\r\nRCPT TO:<{out.recipient}>\r\nDATA\r\n"
              .encode("ascii"))
    mail = conn.getreply()  # a connection that broke before this answer sent nothing: replayable
    if mail[0] == 421:
        raise _Closing(*mail)
    try:
        rcpt, data = conn.getreply(), conn.getreply()
        envelope_ok = mail[0] == 250 and rcpt[0] in (250, 251)
        if data[0] == 354 and envelope_ok:
            code, reply = _body(conn, out.message)
            return code, _text(reply)
        if envelope_ok and data[0] < 400:
            raise _ProtocolError(f"DATA answered {data[0]}")
        if data[0] == 354:
            conn.send(b".\r\n")
            conn.getreply()
        for code, reply in (mail, rcpt, data):
            if code not in (250, 251, 354):
                return code, _text(reply)
        return data[0], _text(data[1])  # unreachable by RFC 5321; classified like any reply
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        exc._sandesh_after_mail = True  # never replay a transaction that got this far
        raise


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return mask_emails(" ".join(text.split()))[:450]


def _reset(conn: smtplib.SMTP) -> None:
    try:
        conn.rset()
    except (smtplib.SMTPException, OSError):
        pass


QUIT_TIMEOUT = 2.0  # a relay slow to answer QUIT must not hold a SIGTERM's 30 s


def _quit(conn: smtplib.SMTP) -> None:
    try:
        if conn.sock is not None:
            conn.sock.settimeout(QUIT_TIMEOUT)
        conn.quit()
    except (smtplib.SMTPException, OSError):
        _close(conn)


def _close(conn: smtplib.SMTP | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except OSError:
            pass
