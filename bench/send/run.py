"""Send benchmark: one campaign to N recipients (DKIM and tracking on)
through real sender processes, Kafka and FerretDB, into an SMTP sink of
its own (devstack/smtp_sink.py on a free port), timed from the first job
published to the last message accepted by the sink; with one sender and
with two. In the same run, the ceiling: a plain script pushing N pre-built
messages into the same sink over the same number of SMTP connections,
measured right before and right after each sender run (the ratio is to the
mean of the two, and both are printed: this machine's speed drifts).

    .venv/bin/python -m bench.send.run            # N=20000, 8 connections per sender, 3 rounds (the defaults)
    .venv/bin/python -m bench.send.run --recipients 5000 --connections 4
    .venv/bin/python -m bench.send.run --dkim ed25519   # what RSA-2048 signing costs the ratio

This machine's speed drifts (the same code's 1-sender ratio read 0.36-0.51
within an hour), so by default the pair of runs is done three times and the
medians are printed at the end. Each sender run also prints the senders' CPU
per message by thread, told apart by their OS names (shared/thread_names.py):
composing, the SMTP connections, the main loop, and the Kafka clients; and
every process's CPU per message over the timed window (the senders, the sink,
Kafka, FerretDB, this benchmark publishing the jobs) with how busy the
machine was: the budget that the ratio comes from (docs/sender.md, Performance).

Needs the local stack's Kafka and FerretDB (make run). The senders use
topics, a consumer group and a database of their own, so the stack's own
senders never see this work.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.send.cpu import (Snapshot, cpu_seconds, machine_times, peak_rss_mb,  # noqa: E402
                            report, snapshot, thread_seconds, thread_split)
from devstack.env import load_stack_env  # noqa: E402
from shared import mongo, topics  # noqa: E402
from shared.events import new_event  # noqa: E402
from shared.kafka.admin import delete_topics, ensure_topics  # noqa: E402
from shared.kafka.producer import EventProducer  # noqa: E402
from shared.kafka.rdkafka_impl import RdKafkaSink  # noqa: E402
from shared.topics import TopicSpec  # noqa: E402

HTML = ("<html><body><h1>Hello {{ name|default('there') }}</h1>"
        + "".join(f'<p>Paragraph {i}: news you can use, <a href="https://example.com/p/{i}">read '
                  f"more</a>.</p>" for i in range(6))
        + "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 8 + "</p>"
        + '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> {{ postal_address }}</p>'
        + "</body></html>")
TEMPLATE = {"version": 1, "subject": "News for {{ name|default('you') }}", "preheader": "This week",
            "html": HTML, "text": "Hello {{ name }}\n\nUnsubscribe: {{ unsubscribe_url }}\n"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def count_files(directory: Path) -> int:
    try:
        return sum(1 for _ in os.scandir(directory))
    except FileNotFoundError:
        return 0


def empty(directory: Path) -> None:
    """Delete the messages earlier runs left in `directory`."""
    for entry in os.scandir(directory):
        os.unlink(entry.path)


def wait_for_files(directory: Path, target: int, deadline: float, check=lambda: None,
                   interval: float = 0.5, since_mtime_ns: int | None = None) -> tuple[float, float]:
    """Wait until `directory` (a Maildir's new/) holds `target` files, and
    return the wall-clock times (time.time()) the first and the last of
    them arrived, read from the directory's mtime, which every file renamed
    into it sets. Listing tens of thousands of files costs 20-80 ms of CPU,
    and listing them ten times a second took a third of a core from the
    stack being measured; so the time comes from the mtime, and the
    directory is listed every `interval` seconds at most, less often when a
    listing is slow (5% of a core at most), and not again before the rate
    seen so far could have brought nine tenths of the files still missing:
    a 20,000-message run is listed about ten times rather than fifty.
    `check` is called on every poll and may raise; the first arrival is the
    first change of the mtime after `since_mtime_ns` (default: now)."""
    directory.mkdir(parents=True, exist_ok=True)
    unchanged = os.stat(directory).st_mtime_ns if since_mtime_ns is None else since_mtime_ns
    first = None
    # The rate is taken from the first listing that found files arriving: a
    # campaign's first message comes seconds after the send call, and a
    # rate that counted those seconds put the next listing a minute late.
    next_listing, initial_count, first_listing = 0.0, None, None  # first_listing: (time, count)
    while True:
        mtime = os.stat(directory).st_mtime_ns
        if first is None and mtime != unchanged:
            first = mtime / 1e9
        if time.monotonic() >= next_listing:
            listed_at = time.monotonic()
            count = count_files(directory)
            if count >= target:
                last = os.stat(directory).st_mtime_ns / 1e9
                return (last if first is None else first), last  # None: all came before the call
            interval = max(interval, 20 * (time.monotonic() - listed_at))
            next_listing = listed_at + max(interval, _time_to_most_of_the_rest(
                first_listing, (listed_at, count), target))
            initial_count = count if initial_count is None else initial_count
            if first_listing is None and count > initial_count:
                first_listing = (listed_at, count)
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {count_files(directory)} of {target} messages arrived")
        check()
        time.sleep(0.02)


def _time_to_most_of_the_rest(first: tuple[float, int] | None, now: tuple[float, int],
                              target: int) -> float:
    """Seconds until nine tenths of the files still missing should be there,
    at the rate seen between two listings (0 before there are two)."""
    if first is None or now[1] <= first[1]:
        return 0.0
    rate = (now[1] - first[1]) / (now[0] - first[0])
    return 0.9 * (target - now[1]) / rate


def wait_for_quiet(busy_below: float = 0.25, for_seconds: int = 3, timeout: float = 900) -> None:
    """Wait until the machine's CPUs are less than `busy_below` busy for
    `for_seconds` seconds in a row (/proc/stat): work left over from before
    (an account erasure, an import being indexed) would run during the
    measurement and be counted against it."""
    deadline, quiet, said = time.monotonic() + timeout, 0, False
    while quiet < for_seconds and time.monotonic() < deadline:
        busy0, total0 = machine_times()
        time.sleep(1)
        busy1, total1 = machine_times()
        share = (busy1 - busy0) / max(1e-9, total1 - total0)
        quiet = quiet + 1 if share < busy_below else 0
        if not quiet and not said:
            print(f"waiting for the machine to be quiet ({share:.0%} busy)...", flush=True)
            said = True


def start_sink(root: Path, pipelining: bool = False) -> tuple[subprocess.Popen, int, Path]:
    port, maildir = free_port(), root / "maildir"
    env = {**os.environ, "SANDESH_SMTP_HOST": "127.0.0.1", "SANDESH_SMTP_PORT": str(port),
           "SANDESH_MAILDIR": str(maildir), "SANDESH_SMTP_SINK_FAULTS": "",
           "SANDESH_SMTP_SINK_PIPELINING": "1" if pipelining else ""}
    proc = subprocess.Popen([sys.executable, "-m", "devstack.smtp_sink"], cwd=REPO, env=env,
                            stdout=open(root / "sink.log", "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port, maildir / "new"
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("the benchmark's SMTP sink did not start")
            time.sleep(0.2)


def ceiling(port: int, messages: list[bytes], connections: int,
            sink_pid: int | None = None) -> tuple[float, float | None]:
    """msgs/s for pre-built messages over `connections` plain smtplib
    connections, and the sink's CPU ms per message meanwhile (given its pid).

    A fifth of them (2,000 at least) goes first, untimed: after a few idle
    seconds this machine runs the sink at a third of its speed for the
    first seconds of load (measured: 739, 922, 1,286, then 2,164 and 2,586
    msgs/s in successive 2 s windows at 100% of a core), and the campaign
    it is compared with starts warm, right after it."""
    def push(chunk):
        conn = smtplib.SMTP("127.0.0.1", port)
        for i, message in enumerate(chunk):
            conn.sendmail("bounce@sandesh.test", [f"c{i}@example.com"], message)
        conn.quit()

    def push_all(batch):
        threads = [threading.Thread(target=push, args=(batch[i::connections],))
                   for i in range(connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    push_all(messages[:max(2000, len(messages) // 5)])
    sink_cpu = cpu_seconds(sink_pid) if sink_pid else 0.0
    started = time.perf_counter()
    push_all(messages)
    elapsed = time.perf_counter() - started
    if not sink_pid:
        return len(messages) / elapsed, None
    return len(messages) / elapsed, (cpu_seconds(sink_pid) - sink_cpu) * 1000 / len(messages)


def prebuilt_messages(n: int, key_dir: Path, keys: str, algorithm: str = "rsa") -> list[bytes]:
    """Messages like the sender's (same composer), built before the clock
    starts. The DKIM key made here is the one the senders sign with."""
    from services.sender import dkim
    from services.sender.compose import Composer, ComposeSettings
    from services.sender.domain import Campaign, Job
    from shared.tracking_tokens import Keyring
    dkim.ensure_key(key_dir, "sandesh.test", "sandesh", algorithm)
    campaign = Campaign.from_launched(uuid.uuid4().hex, campaign_data(uuid.uuid4().hex))
    composer = Composer(campaign, ComposeSettings(Keyring.from_env(keys), "http://127.0.0.1:8081",
                                                  "sandesh.test"),
                        dkim.Signer(dkim.load_keys(key_dir)))
    return [composer.compose(Job(uuid.uuid4().hex, campaign.campaign_id, uuid.uuid4().hex,
                                 campaign.account_id, None, f"c{i}@example.com", f"Reader {i}",
                                 {}, 0, None, False, None)).message for i in range(n)]


def campaign_data(campaign_id: str) -> dict:
    return {"campaign_id": campaign_id, "template": TEMPLATE,
            "sender": {"from_name": "Sandesh Bench", "from_email": "news@sandesh.test",
                       "sending_domain": "sandesh.test"},
            "audience": {"list_ids": []}, "limits": {"per_domain_concurrency": 64},
            "tracking": True, "postal_address": "1 Bench Road", "kind": "marketing"}


class SenderRun:
    def __init__(self, stack: dict, root: Path, port: int, processes: int, connections: int):
        self.stack, self.root = stack, root
        tag = uuid.uuid4().hex[:10]
        self.prefix, self.db = f"bench.{tag}.", f"bench_sender_{tag}"
        names = [topics.SEND_JOBS, topics.SEND_RETRY, topics.SEND_DLQ, topics.DELIVERY_EVENTS,
                 topics.CAMPAIGNS_EVENTS, topics.CONTACTS_EVENTS, topics.PRIVACY_REQUESTS,
                 topics.PRIVACY_ACKS]
        specs = {self.prefix + n: TopicSpec(topics.TOPICS[n].partitions, 3_600_000)
                 for n in names}
        self.topics = list(specs)
        ensure_topics(stack["SANDESH_KAFKA_BOOTSTRAP"], specs)
        env = {**os.environ, **stack, "SANDESH_SMTP_PORT": str(port), "SANDESH_SMTP_RELAYS": "",
               "SANDESH_SMTP_CONNECTIONS": str(connections), "SANDESH_SENDER_TOPIC_PREFIX": self.prefix,
               "SANDESH_SENDER_GROUP": f"bench-{tag}", "SANDESH_SENDER_DB": self.db,
               "SANDESH_DKIM_KEY_DIR": str(root / "dkim"), "SANDESH_SENDER_PORT": "",
               "SANDESH_LOG_LEVEL": os.environ.get("BENCH_SENDER_LOG_LEVEL", "WARNING")}
        self.procs = [subprocess.Popen([sys.executable, "-m", "services.sender.worker"], cwd=REPO,
                                       env=env, stdout=open(root / f"sender-{tag}-{i}.log", "w"),
                                       stderr=subprocess.STDOUT) for i in range(processes)]
        # The jobs go out as the fan-out sends them, on librdkafka (the contacts
        # worker's producer): 50 us of CPU per job here, against 158 with
        # kafka-python, whose 3 s of CPU for 20,000 jobs ran inside the timed
        # window and were taken from the senders being measured.
        self.producer = EventProducer(RdKafkaSink(stack["SANDESH_KAFKA_BOOTSTRAP"],
                                                  f"bench-{tag}"))
        self.account = uuid.uuid4().hex

    def publish_campaign(self) -> str:
        campaign_id = uuid.uuid4().hex
        self.producer.publish(self.prefix + topics.CAMPAIGNS_EVENTS, new_event(
            "campaign.launched", source="bench", subject=campaign_id, account_id=self.account,
            data=campaign_data(campaign_id)), key=campaign_id)
        self.producer.flush()
        return campaign_id

    def publish_jobs(self, campaign_id: str, n: int, tag: str) -> None:
        for i in range(n):
            job_id = uuid.uuid4().hex
            self.producer.publish(self.prefix + topics.SEND_JOBS, new_event(
                "send.job", source="bench", subject=job_id, account_id=self.account,
                data={"job_id": job_id, "campaign_id": campaign_id, "contact_id": uuid.uuid4().hex,
                      "attempt": 0, "list_id": None,
                      "recipient": {"email": f"{tag}{i}@example.com", "name": f"Reader {i}",
                                    "fields": {}}}), key=job_id)
        self.producer.flush()

    def peak_rss_mb(self) -> list[float]:
        return peak_rss_mb([proc.pid for proc in self.procs])

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.producer.sink.close()
        mongo.client(self.stack["SANDESH_MONGO_URI"]).drop_database(self.db)
        delete_topics(self.stack["SANDESH_KAFKA_BOOTSTRAP"], self.topics)


def wait_until(new_dir: Path, target: int, timeout: float, run: SenderRun) -> float:
    """The wall-clock time the target-th message arrived."""
    def senders_alive():
        if any(p.poll() is not None for p in run.procs):
            raise SystemExit("a sender exited; see its log in " + str(run.root))
    return wait_for_files(new_dir, target, time.monotonic() + timeout, senders_alive)[1]


def sender_threads(run: SenderRun) -> dict[int, tuple[str, float]]:
    """Every sender's threads (thread ids are unique across processes)."""
    merged = {}
    for proc in run.procs:
        merged.update(thread_seconds(proc.pid))
    return merged


def sender_throughput(stack, root, sink_pid, port, new_dir, processes, n, connections):
    """msgs/s, peak RSS (MB) per sender, CPU ms per message of the senders
    together and of the sink, the senders' CPU ms per message by thread, and
    the report of every process's CPU (Kafka, FerretDB, this benchmark) and
    how busy the machine was, over the timed window."""
    run = SenderRun(stack, root, port, processes, connections)
    try:
        campaign = run.publish_campaign()
        before = count_files(new_dir)
        run.publish_jobs(campaign, 20 * processes, f"warm{processes}-")  # every sender joined and warm
        wait_until(new_dir, before + 20 * processes, 120, run)
        time.sleep(2)
        before = count_files(new_dir)
        roles = {**{p.pid: "the senders" for p in run.procs}, sink_pid: "sink",
                 os.getpid(): "this benchmark (publishing the jobs)"}
        machine_before = snapshot(roles)
        threads_before = sender_threads(run)
        started = time.time()
        run.publish_jobs(campaign, n, f"r{processes}-")
        rate = n / (wait_until(new_dir, before + n, 1800, run) - started)
        machine_after = snapshot(roles)
        threads = thread_split(threads_before, sender_threads(run), n)
        return (rate, run.peak_rss_mb(), per_message(machine_before, machine_after, run.procs, n),
                per_message(machine_before, machine_after, [sink_pid], n), threads,
                report(machine_before, machine_after, n))
    finally:
        run.stop()


def per_message(before: Snapshot, after: Snapshot, processes, n: int) -> float:
    """CPU ms per message of these processes (Popen objects or pids) together."""
    pids = [getattr(p, "pid", p) for p in processes]
    return sum(after.processes[pid][1] - before.processes[pid][1] for pid in pids) * 1000 / n


def by_thread(split: dict[str, float]) -> str:
    """compose: rendering and DKIM; smtp: the connections; main: the batch
    (claims, screening, records); librdkafka: the send.jobs consumer and the
    delivery events' producer; other: pymongo's and the state loops' threads."""
    return ", ".join(f"{group} {ms:.2f}" for group, ms in split.items() if ms >= 0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=8,
                        help="SMTP connections per sender (and for the ceiling script)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of (1 sender, 2 senders), each bracketed by its own "
                             "ceilings; the medians are printed at the end")
    parser.add_argument("--dkim", choices=("rsa", "ed25519"), default="rsa",
                        help="the sending domain's key: RSA-2048 (the default: what receivers "
                             "verify today) or Ed25519 (RFC 8463)")
    args = parser.parse_args()
    stack = load_stack_env()
    root = Path(tempfile.mkdtemp(prefix="sandesh-bench-send-"))
    sink, port, new_dir = start_sink(root)
    try:
        print(f"building {args.recipients} messages for the ceiling run "
              f"(DKIM {'RSA-2048' if args.dkim == 'rsa' else 'Ed25519'})...", flush=True)
        messages = prebuilt_messages(args.recipients, root / "dkim", stack["SANDESH_TRACKING_KEYS"],
                                     args.dkim)
        size = sum(map(len, messages)) / len(messages)
        # The ceiling is measured right before and right after each sender
        # run, and the ratio taken against their mean: this machine's speed
        # drifts by a factor of two within minutes (the sink's own CPU per
        # message does), which a single ceiling run cannot see.
        def bracket(connections: int, senders: int):
            empty(new_dir)  # the timed run lists the directory: keep it short
            wait_for_quiet()
            before = ceiling(port, messages, connections, sink.pid)
            result = sender_throughput(stack, root, sink.pid, port, new_dir, senders,
                                       args.recipients, args.connections)
            after = ceiling(port, messages, connections, sink.pid)
            print(f"ceiling (plain smtplib, {connections} connections, {size:.0f} B/msg): "
                  f"{before[0]:,.0f} msgs/s before, {after[0]:,.0f} after  "
                  f"sink CPU {before[1]:.2f} / {after[1]:.2f} ms/msg", flush=True)
            return (before[0] + after[0]) / 2, result

        ones, twos = [], []
        for round_ in range(1, args.repeat + 1):
            if args.repeat > 1:
                print(f"--- round {round_} of {args.repeat}", flush=True)
            roof, (one, rss1, cpu1, sink1, threads1, everyone1) = bracket(args.connections, 1)
            print(f"1 sender  ({args.connections} connections): {one:,.0f} msgs/s  "
                  f"ratio to ceiling {one / roof:.2f}  peak RSS {max(rss1):.0f} MB  "
                  f"CPU per message: sender {cpu1:.2f} ms, sink {sink1:.2f} ms", flush=True)
            print(f"  the sender's CPU ms per message by thread: {by_thread(threads1)}", flush=True)
            print(f"  {everyone1}", flush=True)
            roof2, (two, rss2, cpu2, sink2, threads2, everyone2) = bracket(2 * args.connections, 2)
            print(f"2 senders ({args.connections} connections each): {two:,.0f} msgs/s  "
                  f"ratio to ceiling ({2 * args.connections} connections) {two / roof2:.2f}  "
                  f"peak RSS {max(rss2):.0f} MB  "
                  f"CPU per message: senders {cpu2:.2f} ms, sink {sink2:.2f} ms", flush=True)
            print(f"  the senders' CPU ms per message by thread: {by_thread(threads2)}", flush=True)
            print(f"  {everyone2}", flush=True)
            print(f"1 -> 2 sender scaling: {two / one:.2f}x", flush=True)
            ones.append((one / roof, one, max(rss1)))
            twos.append((two / roof2, two, max(rss2)))
        if args.repeat > 1:
            print(f"=== {args.repeat} rounds, medians (each ratio against its own ceilings):")
            for label, runs in (("1 sender ", ones), ("2 senders", twos)):
                print(f"{label}: ratio {median(r for r, _, _ in runs):.2f} "
                      f"({', '.join(f'{r:.2f}' for r, _, _ in runs)}), "
                      f"{median(rate for _, rate, _ in runs):,.0f} msgs/s, "
                      f"peak RSS at most {max(rss for _, _, rss in runs):.0f} MB")
            print(f"1 -> 2 sender scaling: {median(t[1] / o[1] for o, t in zip(ones, twos)):.2f}x")
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(20)
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
