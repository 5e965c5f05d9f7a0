"""shared.heartbeat and /healthz: a stuck main loop fails the liveness
check (so Kubernetes restarts the process), and a turning one passes."""
import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from shared import worker_http
from shared.heartbeat import Heartbeat, Stalled
from shared.kafka.memory import InMemoryBroker
from shared.kafka.producer import EventProducer


def test_a_heartbeat_fails_once_the_loop_is_quiet_for_longer_than_it_may_be():
    now = [100.0]
    heartbeat = Heartbeat("the send loop", 300, clock=lambda: now[0])
    now[0] += 300
    heartbeat.check()                   # quiet as long as allowed: alive
    now[0] += 1
    with pytest.raises(Stalled, match="the send loop has not turned for 301 s"):
        heartbeat.check()
    heartbeat.beat()
    heartbeat.check()


def test_the_send_loop_beats_once_a_turn_even_with_nothing_to_do():
    from services.sender.loop import SendLoop
    from tests.unit.sender.test_loop import FakeEngine
    now = [100.0]
    heartbeat = Heartbeat("the send loop", 5, clock=lambda: now[0])
    broker = InMemoryBroker(partitions=1)
    loop = SendLoop(broker.source(["send.jobs"], "g"), FakeEngine(),
                    EventProducer(broker.sink()), service="sender", group="g",
                    dead_letters=broker.sink(), heartbeat=heartbeat, poll_timeout_ms=0)
    now[0] += 6
    with pytest.raises(Stalled):
        heartbeat.check()
    loop.run_once()
    heartbeat.check()


def _get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_healthz_answers_503_naming_the_stalled_loop_and_200_once_it_turns_again():
    now = [100.0]
    heartbeat = Heartbeat("the send loop", 5, clock=lambda: now[0])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = worker_http.serve("127.0.0.1", port, "sender", "test", readiness={},
                               liveness={"send_loop": heartbeat.check})
    try:
        assert _get(port, "/healthz") == (200, {"status": "ok", "service": "sender",
                                                "stack_id": "test",
                                                "checks": {"send_loop": "ok"}})
        now[0] += 6
        status, body = _get(port, "/healthz")
        assert status == 503 and body["status"] == "stalled"
        assert body["checks"]["send_loop"].startswith("Stalled: the send loop has not turned")
        assert _get(port, "/readyz")[0] == 200  # readiness is another question
        heartbeat.beat()
        assert _get(port, "/healthz")[0] == 200
    finally:
        server.shutdown()


def test_a_turn_slowed_by_several_flushes_is_not_taken_for_a_stuck_loop():
    """Kafka away, one turn may wait out the two-minute message timeout in
    putting parked jobs back, in asking contacts again, and in the batch's
    flush: 360 s in all, past the 300 s allowed, though every part ends."""
    from services.sender.engine import DONE
    from services.sender.loop import SendLoop
    from tests.unit.sender.test_loop import FakeEngine, job_event

    now = [100.0]
    heartbeat = Heartbeat("the send loop", 300, clock=lambda: now[0])
    checked = []

    def slow_flush():  # each flush waits out the message timeout, then the loop is looked at
        now[0] += 120
        try:
            heartbeat.check()
            checked.append("ok")
        except Stalled:
            checked.append("stalled")

    class SlowEngine(FakeEngine):
        class settings:
            unpark_every_seconds = 0.5

        def unpark(self, flush):
            flush()
            return 0

        def ask_contacts_again(self, flush):
            flush()
            return 0

        def handle(self, sequences):
            return {j.job_id: DONE for seq in sequences for j in seq}

    broker = InMemoryBroker(partitions=1)
    producer = EventProducer(broker.sink())
    producer.flush = slow_flush
    loop = SendLoop(broker.source(["send.jobs"], "g"), SlowEngine(), producer, service="sender",
                    group="g", dead_letters=broker.sink(), heartbeat=heartbeat,
                    clock=lambda: now[0])
    broker.append("send.jobs", b"j1", job_event(1))
    loop.run_once()
    assert checked == ["ok", "ok", "ok"]


def test_a_call_watch_fails_only_while_one_call_has_hung_too_long():
    from shared.heartbeat import CallWatch
    now = [100.0]
    watch = CallWatch("the privacy loop", 300, clock=lambda: now[0])
    now[0] += 10_000
    watch.check()                        # between calls, however long: alive
    with watch.watching("Kafka poll"):
        now[0] += 200
        watch.check()
        with watch.watching("Kafka commit"):   # a revoke's commit, inside the poll
            now[0] += 100
            watch.check()
            now[0] += 1                        # the poll has been out for 301 s
            with pytest.raises(Stalled, match=r"the privacy loop: its Kafka poll \(Kafka "
                                              r"commit\) has not returned for 301 s"):
                watch.check()
        with pytest.raises(Stalled, match="its Kafka poll has not returned for 301 s"):
            watch.check()
    watch.check()


def _loop_over(source_commit, handler, stall_seconds):
    from shared.kafka.consumer import ConsumerLoop
    from shared.events import new_event
    broker = InMemoryBroker(partitions=1)
    producer = EventProducer(broker.sink())
    producer.publish("t", new_event("platform.probe", source="/tests", subject="s",
                                    account_id="a", data={"n": 1}))
    producer.flush()
    source = broker.source(["t"], "g")
    if source_commit:
        source.commit = source_commit
    return ConsumerLoop(source, {"platform.probe": handler}, service="test", group="g",
                        dead_letters=broker.sink(), commit_interval=0, poll_timeout_ms=0,
                        stall_seconds=stall_seconds)


def test_a_consumer_loop_whose_commit_hangs_fails_its_liveness_check_until_it_returns():
    import threading
    release, entered = threading.Event(), threading.Event()

    def hanging_commit(offsets):
        entered.set()
        release.wait(30)

    loop = _loop_over(hanging_commit, lambda event: None, stall_seconds=0.2)
    turn = threading.Thread(target=loop.run_once)
    turn.start()
    try:
        assert entered.wait(10)
        time.sleep(0.3)
        with pytest.raises(Stalled, match="the g loop: its Kafka commit has not returned"):
            loop.watch.check()
    finally:
        release.set()
        turn.join(10)
    loop.watch.check()


def test_a_handler_that_takes_long_is_not_taken_for_a_stuck_loop():
    """An account's erasure may take minutes: restarted midway, it would
    start again, and again."""
    checked = []

    def slow_handler(event):
        time.sleep(0.3)
        loop.watch.check()
        checked.append("ok")

    loop = _loop_over(None, slow_handler, stall_seconds=0.1)
    assert loop.run_once() == 1 and checked == ["ok"]
    loop.watch.check()


def test_a_helper_loops_hung_call_fails_the_liveness_check_naming_it():
    from shared.heartbeat import CallWatch
    from shared.worker import HelperLoops
    now = [0.0]

    class Loop:
        group, stopping = "sender-campaigns", False
        watch = CallWatch("the sender-campaigns loop", 300, clock=lambda: now[0])

        def run(self):
            with self.watch.watching("commit"):
                while not self.stopping:
                    time.sleep(0.01)

    helpers, loop = HelperLoops(), Loop()
    helpers.start(loop)
    try:
        time.sleep(0.05)
        helpers.check_calls()
        now[0] += 301
        with pytest.raises(Stalled, match="the sender-campaigns loop: its commit"):
            helpers.check_calls()
    finally:
        loop.stopping = True
        helpers.join(5)
    helpers.check_calls()


def test_a_worker_answers_its_liveness_probe_while_its_loop_is_still_being_built(monkeypatch):
    """Building the loop may wait a minute for MongoDB (its indexes): with
    /healthz served only after, the probe was refused and the pod
    restarted in the very case that wait is for."""
    import signal

    from shared import worker
    from shared.config import Config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("SANDESH_HEALTH_PORT", str(port))
    monkeypatch.setattr(worker, "configure_logging", lambda *args: None)
    answers = []

    def build_loop():
        for _ in range(50):
            try:
                answers.append(_get(port, "/healthz"))
                break
            except OSError:
                time.sleep(0.1)
        loop = _loop_over(None, lambda event: None, stall_seconds=300)
        loop.stop()
        return loop

    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        worker.run_worker("tracking", Config(log_level="INFO", stack_id="test"), build_loop,
                          readiness={})
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    assert answers == [(200, {"status": "ok", "service": "tracking", "stack_id": "test",
                              "checks": {"consumer_loop": "ok"}})]
