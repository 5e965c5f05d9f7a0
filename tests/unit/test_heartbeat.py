"""shared.heartbeat and /healthz: a stuck main loop fails the liveness
check (so Kubernetes restarts the process), and a turning one passes."""
import json
import socket
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
