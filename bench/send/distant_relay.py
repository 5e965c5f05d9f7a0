"""A relay some milliseconds away: what PIPELINING (RFC 2920) buys.

Over loopback an SMTP round trip costs next to nothing, but a real relay is
a few milliseconds away at least, and a connection then spends most of each
transaction waiting: four round trips (MAIL, RCPT, DATA, the message)
without PIPELINING, two with it. This sends N pre-built messages through the
sender's SmtpMessenger, over the same connections and a proxy that delays
every packet by half the round-trip time each way, into two sinks: one that
offers PIPELINING and one that does not. It prints msgs/s for each and the
ratio.

    .venv/bin/python -m bench.send.distant_relay [--messages 2000] [--rtt-ms 10] [--connections 8]
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.send.run import prebuilt_messages, start_sink, wait_for_files  # noqa: E402
from services.sender import smtp  # noqa: E402
from services.sender.compose import Outgoing  # noqa: E402
from services.sender.domain import ACCEPTED, Job  # noqa: E402

KEYS = "k1:" + "A" * 43 + "="


class DelayProxy:
    """127.0.0.1:<port> -> target, every chunk delivered `delay` seconds
    after it was read, in order, in both directions."""

    def __init__(self, target_port: int, delay: float):
        self.target_port, self.delay = target_port, delay
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()
        server.close()
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    async def _connection(self, client_reader, client_writer) -> None:
        relay_reader, relay_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        try:
            await asyncio.gather(self._pipe(client_reader, relay_writer),
                                 self._pipe(relay_reader, client_writer))
        except (asyncio.CancelledError, ConnectionError):
            pass  # the proxy is stopping, or a side hung up

    async def _pipe(self, reader, writer) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver():
            while (item := await queue.get()) is not None:
                due, chunk = item
                await asyncio.sleep(max(0.0, due - self.loop.time()))
                writer.write(chunk)
            writer.close()

        delivering = asyncio.ensure_future(deliver())
        while chunk := await reader.read(65536):
            queue.put_nowait((self.loop.time() + self.delay, chunk))
        queue.put_nowait(None)
        await delivering

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def send_all(port: int, messages: list[bytes], connections: int) -> float:
    """msgs/s through the messenger, from submit to the last outcome."""
    tasks = []
    for i, message in enumerate(messages):
        job = Job(uuid.uuid4().hex, "c", uuid.uuid4().hex, "a", None, f"r{i}@example.com", None,
                  {}, 0, None, False, None)
        out = Outgoing(job, message, "bounce@sandesh.test", f"<{job.job_id}@sandesh.test>",
                       False)
        tasks.append(smtp.SendTask(job, lambda out=out: out, connections))
    messenger = smtp.SmtpMessenger([smtp.Relay("127.0.0.1", port)], connections,
                                   max_unrecorded=len(tasks))
    try:
        started = time.perf_counter()
        messenger.submit(tasks, time.monotonic() + 600)
        done = []
        while len(done) < len(tasks):
            done += messenger.collect(len(tasks), timeout=5)
        elapsed = time.perf_counter() - started
    finally:
        messenger.close()
    refused = [t for t in done if t.outcome != ACCEPTED]
    if refused:
        raise SystemExit(f"{len(refused)} not accepted, e.g. {refused[0].outcome} "
                         f"{refused[0].code} {refused[0].reply}")
    return len(tasks) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rtt-ms", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sandesh-bench-relay-"))
    messages = prebuilt_messages(args.messages, root / "dkim", KEYS)
    rates = {}
    try:
        # twice each, interleaved: this machine's speed drifts
        for run, pipelining in enumerate((False, True, False, True)):
            sink_dir = root / f"sink-{run}"
            sink_dir.mkdir()
            sink, port, new_dir = start_sink(sink_dir, pipelining)
            proxy = DelayProxy(port, args.rtt_ms / 2000)
            try:
                rate = send_all(proxy.port, messages, args.connections)
                wait_for_files(new_dir, len(messages), time.monotonic() + 60)
                rates.setdefault(pipelining, []).append(rate)
            finally:
                proxy.stop()
                sink.send_signal(signal.SIGTERM)
                sink.wait(20)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    plain, piped = (max(rates[False]), max(rates[True]))
    print(f"relay {args.rtt_ms:g} ms away, {args.connections} connections, "
          f"{args.messages} messages of {sum(map(len, messages)) // len(messages)} B")
    print(f"without PIPELINING: {plain:7,.0f} msgs/s  (runs: "
          f"{', '.join(f'{r:,.0f}' for r in rates[False])})")
    print(f"with PIPELINING:    {piped:7,.0f} msgs/s  (runs: "
          f"{', '.join(f'{r:,.0f}' for r in rates[True])})")
    print(f"ratio: {piped / plain:.2f}x")


if __name__ == "__main__":
    main()
