"""The SMTP messenger against local aiosmtpd servers: weighted relays carry
traffic in proportion, STARTTLS and AUTH when configured, and a job that
cannot be composed becomes failed (never lost) through the real engine."""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import socketserver
import ssl
import threading
import time
import uuid

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.sender import dkim, smtp
from services.sender.compose import Composer, ComposeSettings, Outgoing
from services.sender.domain import Campaign, Job
from services.sender.engine import DONE, Engine
from services.sender.throttle import MemoryCounter, RateLimiter
from shared.tracking_tokens import Keyring
from tests.unit.sender.test_engine import Fakes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    """Accepts everything; remembers each message's session facts."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.lock = threading.Lock()
        self.sessions: set[int] = set()
        self.messages: list[dict] = []

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            self.sessions.add(id(session))
            self.messages.append({"rcpt": envelope.rcpt_tos[0], "tls": session.ssl is not None,
                                  "login": session.authenticated and session.auth_data.login
                                  if isinstance(session.auth_data, LoginPassword) else None,
                                  "content": envelope.content})
        return "250 OK queued"


def serve(handler, **options) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **options)
    controller.start()
    return controller


def task(n: int, email: str = None) -> smtp.SendTask:
    job = Job(f"j{n}", "c", f"p{n}", "a", None, email or f"r{n}@x.test", None, {}, 0, None,
              False, None)
    out = Outgoing(job, b"Subject: x\r\n\r\nhello\r\n", "b+x@sandesh.test", f"<j{n}@d>", False)
    return smtp.SendTask(job, lambda: out, 8)


def run(messenger: smtp.SmtpMessenger, tasks) -> None:
    messenger.submit(tasks, time.monotonic() + 60)
    left = len(tasks)
    while left:
        left -= len(messenger.collect(len(tasks)))


def test_weighted_relays_carry_the_traffic_in_proportion():
    heavy, light = Recorder(delay=0.01), Recorder(delay=0.01)
    servers = [serve(heavy), serve(light)]
    relays = [smtp.Relay("127.0.0.1", servers[0].port, 3), smtp.Relay("127.0.0.1", servers[1].port, 1)]
    messenger = smtp.SmtpMessenger(relays, connections=4, max_unrecorded=1000)
    try:
        tasks = [task(i) for i in range(200)]
        run(messenger, tasks)
        assert {t.outcome for t in tasks} == {smtp.ACCEPTED}
        assert (len(heavy.sessions), len(light.sessions)) == (3, 1)  # connections by weight
        share = len(heavy.messages) / 200
        assert len(heavy.messages) + len(light.messages) == 200
        assert 0.6 <= share <= 0.9, share  # 3:1 is 0.75
    finally:
        messenger.close()
        for server in servers:
            server.stop()


@pytest.fixture
def tls_files(tmp_path):
    """A self-signed certificate for 127.0.0.1 that the client trusts."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_starttls_and_auth_when_configured(tls_files, monkeypatch):
    cert_path, key_path = tls_files
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))  # the client's default context trusts it
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    users = {b"relay-user": b"s3cret"}

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and users.get(auth_data.login) == auth_data.password
        return AuthResult(success=ok, auth_data=auth_data)

    recorder = Recorder()
    server = serve(recorder, tls_context=context, require_starttls=True,
                   authenticator=authenticate, auth_require_tls=True, auth_required=True)
    relay = smtp.Relay("127.0.0.1", server.port)
    try:
        plain = smtp.SmtpMessenger([relay], connections=1, timeout=10)
        try:  # without STARTTLS this relay refuses the transaction
            refused = [task(1)]
            run(plain, refused)
            assert refused[0].outcome != smtp.ACCEPTED and recorder.messages == []
        finally:
            plain.close()
        secure = smtp.SmtpMessenger([relay], connections=2, starttls=True,
                                    username="relay-user", password="s3cret", timeout=10)
        try:
            tasks = [task(i) for i in range(5)]
            run(secure, tasks)
            assert [t.outcome for t in tasks] == [smtp.ACCEPTED] * 5
        finally:
            secure.close()
        assert len(recorder.messages) == 5
        assert all(m["tls"] and m["login"] == b"relay-user" for m in recorder.messages)
    finally:
        server.stop()


def test_a_relay_that_refuses_the_login_defers_every_task_and_keeps_the_connections(
        tls_files, monkeypatch):
    """AUTH refused (or STARTTLS failing) while connecting: each task comes
    back TRANSIENT with the reason, none is left unfinished (the engine would
    wait for it forever), and the connection threads live on."""
    cert_path, key_path = tls_files
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)

    def refuse(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=False, handled=False)

    recorder = Recorder()
    server = serve(recorder, tls_context=context, require_starttls=True,
                   authenticator=refuse, auth_require_tls=True, auth_required=True)
    messenger = smtp.SmtpMessenger([smtp.Relay("127.0.0.1", server.port)], connections=2,
                                   starttls=True, username="relay-user", password="wrong",
                                   timeout=10)
    try:
        for attempt in range(2):  # a second batch proves the threads survived the first
            tasks = [task(10 * attempt + i) for i in range(4)]
            run(messenger, tasks)
            assert [t.outcome for t in tasks] == [smtp.TRANSIENT] * 4
            assert all("535" in t.reply for t in tasks), tasks[0].reply
        assert all(thread.is_alive() for thread in messenger._threads)
        assert recorder.messages == []
    finally:
        messenger.close()
        server.stop()


class _RefusingRelay(socketserver.StreamRequestHandler):
    """Greets 554 and keeps the connection, answering 503 to all but QUIT,
    as RFC 5321 section 3.1 allows a server that takes no mail."""

    def handle(self):
        self.wfile.write(b"554 5.3.2 no SMTP service here\r\n")
        for line in self.rfile:
            if line[:4].upper() == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            self.wfile.write(b"503 5.5.1 bad sequence of commands\r\n")


def test_a_relay_that_greets_with_a_refusal_defers_the_tasks_rather_than_failing_them():
    """Connecting without smtplib's own greeting check took the 554 for a
    ready connection: MAIL then got 503, a 5xx, and every job sent through
    it failed for good."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _RefusingRelay)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    messenger = smtp.SmtpMessenger([smtp.Relay("127.0.0.1", server.server_address[1])],
                                   connections=1, timeout=10)
    try:
        tasks = [task(i) for i in range(3)]
        run(messenger, tasks)
        assert [t.outcome for t in tasks] == [smtp.TRANSIENT] * 3
        assert all("554" in t.reply for t in tasks), tasks[0].reply
    finally:
        messenger.close()
        server.shutdown()
        server.server_close()


def test_a_job_that_cannot_be_composed_becomes_failed_not_lost(tmp_path):
    """The real messenger and composer under the engine: the recipient whose
    name would inject a header is failed with the reason, the rest is sent."""
    recorder = Recorder()
    server = serve(recorder)
    dkim.ensure_key(tmp_path, "sandesh.test", "s", "ed25519")
    account = uuid.uuid4().hex
    campaign = Campaign.from_launched(account, {
        "campaign_id": "c1", "template": {"version": 1, "subject": "Hi {{ name }}",
                                          "html": "<p>Hi {{ name }}</p>"},
        "sender": {"from_email": "news@sandesh.test"}, "postal_address": "1 Main St"})
    composer = Composer(campaign, ComposeSettings(Keyring.from_env("k1:" + "A" * 43 + "="),
                                                  "https://t.example", "sandesh.test"),
                        dkim.Signer(dkim.load_keys(tmp_path)))
    jobs = [Job(f"j{n}", "c1", uuid.uuid4().hex, account, None, f"r{n}@example.com", name, {},
                0, None, False, None, data={"job_id": f"j{n}"})
            for n, name in enumerate(["Ann", "Eve\r\nBcc: all@example.com", "Bob"])]
    fakes = Fakes([campaign])
    messenger = smtp.SmtpMessenger([smtp.Relay("127.0.0.1", server.port)], connections=2)
    engine = Engine(campaigns=fakes, contacts=fakes, deliveries=fakes, parked=fakes, held=fakes,
                    limiter=RateLimiter(MemoryCounter()), slots=fakes, messenger=messenger,
                    composer_for=lambda c: composer, publisher=fakes)
    try:
        result = engine.handle([jobs])
    finally:
        messenger.close()
        server.stop()
    assert result == {"j0": DONE, "j1": DONE, "j2": DONE}
    assert {job_id: state for job_id, state, _ in fakes.records} == {
        "j0": "sent", "j1": "failed", "j2": "sent"}
    failed = [d for _, t, d in fakes.published if t == "delivery.failed"]
    assert [d["job_id"] for d in failed] == ["j1"]
    assert failed[0]["reason"].startswith("cannot compose") and "all@example.com" not in str(failed)
    assert sorted(m["rcpt"] for m in recorder.messages) == ["r0@example.com", "r2@example.com"]
