"""Real processes for the sender's integration tests: an SMTP sink of the
test's own (devstack/smtp_sink.py on a free port, own Maildir and fault
file, so failure injection never disturbs anyone else), sender processes
(`python -m services.sender.worker`) the test can SIGTERM or kill -9, and
topics of the test's own (SANDESH_SENDER_TOPIC_PREFIX) on the real Kafka,
with the sender's records in a database of the test's own on the real
FerretDB."""
from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from email import message_from_bytes, policy
from pathlib import Path

from aiosmtpd.controller import Controller

from shared import mongo, topics
from shared.events import decode, new_event
from shared.kafka.admin import delete_topics, ensure_topics
from shared.kafka.kafka_impl import KafkaSink
from shared.kafka.producer import EventProducer
from shared.topics import TopicSpec
from tests.kafka_reader import TopicReader

REPO = Path(__file__).resolve().parents[3]
PYTHON = sys.executable
TOPIC_NAMES = [topics.SEND_JOBS, topics.SEND_RETRY, topics.SEND_DLQ, topics.DELIVERY_EVENTS,
               topics.CAMPAIGNS_EVENTS, topics.CONTACTS_EVENTS, topics.TRACKING_EVENTS,
               topics.PRIVACY_REQUESTS, topics.PRIVACY_ACKS]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hexid() -> str:
    return uuid.uuid4().hex


def wait_for(predicate, timeout: float, what: str, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Sink:
    def __init__(self, root: Path):
        self.port = free_port()
        self.maildir = root / "maildir"
        self.faults = root / "faults.json"
        env = {**os.environ, "SANDESH_SMTP_HOST": "127.0.0.1", "SANDESH_SMTP_PORT": str(self.port),
               "SANDESH_MAILDIR": str(self.maildir), "SANDESH_SMTP_SINK_FAULTS": str(self.faults)}
        self.log = open(root / "sink.log", "w")
        self.proc = subprocess.Popen([PYTHON, "-m", "devstack.smtp_sink"], cwd=REPO, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._listening, 15, "the SMTP sink")

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def set_faults(self, **spec) -> None:
        from devstack.sink_faults import set_faults
        set_faults(path=self.faults, **spec)

    def messages(self) -> list:
        new = self.maildir / "new"
        return [message_from_bytes(p.read_bytes(), policy=policy.default)
                for p in sorted(new.iterdir())] if new.exists() else []

    def raw_messages(self) -> list[bytes]:
        new = self.maildir / "new"
        return [p.read_bytes() for p in sorted(new.iterdir())] if new.exists() else []

    def count(self) -> int:
        new = self.maildir / "new"
        return len(os.listdir(new)) if new.exists() else 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


class DomainRelay:
    """A real SMTP server (aiosmtpd) that takes `slow_seconds` over each
    message to slow.test, answers 451 to busy.test's recipients and 250 to
    the rest; it counts every RCPT and every message accepted by address,
    and the most transactions it held at once in DATA, by domain."""

    def __init__(self, slow_seconds: float = 0.0):
        self.slow_seconds = slow_seconds
        self.rcpts: collections.Counter = collections.Counter()
        self.accepted: collections.Counter = collections.Counter()
        self.in_data: collections.Counter = collections.Counter()
        self.most_in_data: collections.Counter = collections.Counter()
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.rcpts[address] += 1
        if address.endswith("@busy.test"):
            return "451 4.3.0 busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        domain = envelope.rcpt_tos[0].rpartition("@")[2]
        self.in_data[domain] += 1
        self.most_in_data[domain] = max(self.most_in_data[domain], self.in_data[domain])
        try:
            if domain == "slow.test":
                await asyncio.sleep(self.slow_seconds)
        finally:
            self.in_data[domain] -= 1
        for address in envelope.rcpt_tos:
            self.accepted[address] += 1
        return "250 OK"

    def stop(self) -> None:
        self.controller.stop()


class Senders:
    """Sender processes sharing one group, topics and database."""

    def __init__(self, stack_env: dict, root: Path, sink: Sink, unique: str, **overrides):
        self.root = root
        self.prefix = f"test.{unique}."
        self.db_name = f"test_sender_{unique}"
        self.dkim_dir = root / "dkim"
        self.env = {**os.environ, **stack_env,
                    "SANDESH_SMTP_PORT": str(sink.port), "SANDESH_SMTP_RELAYS": "",
                    "SANDESH_SENDER_TOPIC_PREFIX": self.prefix,
                    "SANDESH_SENDER_GROUP": f"test-sender-{unique}",
                    "SANDESH_SENDER_DB": self.db_name,
                    "SANDESH_DKIM_KEY_DIR": str(self.dkim_dir),
                    "SANDESH_SEND_RETRY_BASE_SECONDS": "0.5",
                    "SANDESH_SEND_CLAIM_LEASE_SECONDS": "10",
                    "SANDESH_SENDER_PORT": "", "PYTHONUNBUFFERED": "1"}
        self.env.update({k: str(v) for k, v in overrides.items()})
        self.procs: list[subprocess.Popen] = []
        self.topics = [self.prefix + name for name in TOPIC_NAMES]
        ensure_topics(stack_env["SANDESH_KAFKA_BOOTSTRAP"],
                      {topic: TopicSpec(6, 3_600_000) for topic in self.topics})
        self.producer = EventProducer(KafkaSink(stack_env["SANDESH_KAFKA_BOOTSTRAP"],
                                                f"test-{unique}"))
        self.bootstrap = stack_env["SANDESH_KAFKA_BOOTSTRAP"]
        self.mongo_uri = stack_env["SANDESH_MONGO_URI"]  # the stack's: a test may point the senders elsewhere

    def start(self) -> subprocess.Popen:
        n = len(self.procs)
        log = open(self.root / f"sender-{n}.log", "w")
        proc = subprocess.Popen([PYTHON, "-m", "services.sender.worker"], cwd=REPO, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def assert_running(self) -> None:
        for n, proc in enumerate(self.procs):
            if proc.returncode is None and proc.poll() is not None:
                raise AssertionError(f"sender {n} exited with {proc.returncode}:\n"
                                     + dump_logs(self.root))

    def wait(self, predicate, timeout: float, what: str):
        def check():
            self.assert_running()
            return predicate()
        try:
            return wait_for(check, timeout, what)
        except AssertionError:
            self.dump_stacks()  # where a sender that stopped making progress waits
            raise

    def dump_stacks(self) -> None:
        """Every live sender prints its threads' stacks into its log
        (shared.worker.dump_stacks_on_sigusr1), which the teardown shows."""
        live = [proc for proc in self.procs if proc.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGUSR1)
        if live:
            time.sleep(1)

    def dispose(self) -> None:
        """The end of the test: stop the senders, drop their database and topics."""
        self.terminate_all()
        mongo.client(self.mongo_uri).drop_database(self.db_name)
        delete_topics(self.bootstrap, self.topics)

    def terminate_all(self, timeout: float = 40) -> list[float]:
        """SIGTERM every live sender; how long each took to exit."""
        took = []
        for proc in self.procs:
            if proc.poll() is None:
                started = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGUSR1)  # where it is stuck, into its log
                    time.sleep(1)
                    proc.kill()
                    proc.wait()
                took.append(time.monotonic() - started)
        return took

    # -- publishing -------------------------------------------------------
    def launch(self, account_id: str, campaign_id: str, **overrides) -> dict:
        data = {"campaign_id": campaign_id, "name": "Test",
                "template": {"version": 1, "subject": "Hello {{ name|default('there') }} ✓",
                             "preheader": "A preheader",
                             "html": "<html><body><p>Hi {{ name }}, see "
                                     "<a href=\"https://example.com/a\">this</a>.</p>"
                                     "<p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>"
                                     "</body></html>",
                             "text": "Hi {{ name }}\nUnsubscribe: {{ unsubscribe_url }}\n",
                             "links": ["https://example.com/a"]},
                "sender": {"from_name": "Sandesh Tests", "from_email": "news@sandesh.test",
                           "sending_domain": "sandesh.test"},
                "audience": {"list_ids": []}, "limits": {}, "tracking": True,
                "postal_address": "1 Test Street", "kind": "marketing"}
        data.update(overrides)
        self.publish(topics.CAMPAIGNS_EVENTS, "campaign.launched", account_id, campaign_id, data)
        return data

    def status(self, account_id: str, campaign_id: str, what: str) -> None:
        self.publish(topics.CAMPAIGNS_EVENTS, f"campaign.{what}", account_id, campaign_id,
                     {"campaign_id": campaign_id})

    def jobs(self, account_id: str, campaign_id: str, recipients: list[tuple[str, str, str]],
             list_id: str | None = None, job_ids: list[str] | None = None) -> list[str]:
        """recipients: (contact id, email, name); returns the job ids (new
        ones unless given)."""
        ids = []
        for n, (contact_id, email, name) in enumerate(recipients):
            job_id = job_ids[n] if job_ids else hexid()
            self.publish(topics.SEND_JOBS, "send.job", account_id, job_id, {
                "job_id": job_id, "campaign_id": campaign_id, "contact_id": contact_id,
                "list_id": list_id, "attempt": 0,
                "recipient": {"email": email, "name": name, "fields": {}}}, flush=False)
            ids.append(job_id)
        self.producer.flush()
        return ids

    def publish(self, topic: str, event_type: str, account_id: str, key: str, data: dict,
                flush: bool = True) -> None:
        event = new_event(event_type, source="tests", subject=key, account_id=account_id,
                          data=data)
        self.producer.publish(self.prefix + topic, event, key=key)
        if flush:
            self.producer.flush()

    # -- reading ------------------------------------------------------------
    def campaign_status(self, campaign_id: str) -> str | None:
        """What the senders' campaigns consumer has recorded."""
        doc = self.recorded("campaigns", campaign_id)
        return doc.get("status") if doc else None

    def recorded(self, collection: str, doc_id: str) -> dict | None:
        """A document of the senders' own database (what their consumers recorded)."""
        from shared import mongo
        return mongo.database(self.env["SANDESH_MONGO_URI"], self.db_name)[collection].find_one(
            {"_id": doc_id})

    def parked(self, job_id: str) -> dict | None:
        """A parked copy of the job (parked_jobs documents are one a park)."""
        from shared import mongo
        return mongo.database(self.env["SANDESH_MONGO_URI"], self.db_name)["parked_jobs"].find_one(
            {"job_id": job_id})

    def events(self, topic: str = topics.DELIVERY_EVENTS, idle: float = 2.0,
               timeout: float = 60.0) -> list:
        """Every event on the topic: each partition read from its beginning
        to the end it had when reading began, then on until no event has come
        for `idle` seconds."""
        with TopicReader(self.bootstrap, self.prefix + topic, decode=decode) as reader:
            return reader.read(idle=idle, timeout=timeout)


def dump_logs(root: Path) -> str:
    return "\n".join(f"== {p.name}\n" + p.read_text()[-16000:] for p in sorted(root.glob("*.log")))


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value))


def recipients(n: int, tag: str):
    return [(hexid(), f"r{i}.{tag}@example.com", f"Récipient {i}") for i in range(n)]


def by_recipient(sink: Sink) -> dict[str, list]:
    out = collections.defaultdict(list)
    for msg in sink.messages():
        out[msg["X-Sink-Rcpt-To"]].append(msg)
    return out
