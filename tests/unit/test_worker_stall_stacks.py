"""A worker whose liveness check fails prints every thread's stack, once a
minute at most, before Kubernetes restarts it (shared.worker_http.serve)."""
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROGRAM = """
import sys, threading, time
from shared import worker_http
from shared.heartbeat import Heartbeat

def loop_stuck_here():
    time.sleep(60)

heartbeat = Heartbeat("the send loop", 0.1)
worker_http.serve("127.0.0.1", int(sys.argv[1]), "sender", "test", readiness={},
                  liveness={"send_loop": heartbeat.check})
threading.Thread(target=loop_stuck_here, daemon=True).start()
time.sleep(0.3)   # past the heartbeat's 0.1 s
print("ready", flush=True)
sys.stdin.readline()   # until the test has asked
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as failed:
        return failed.code, json.load(failed)


def test_a_failing_liveness_check_prints_the_stacks_once_then_not_at_every_probe():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM, str(port)], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == "ready"
        answers = [healthz(port) for _ in range(3)]
        _, err = proc.communicate("done\n", timeout=20)
    finally:
        proc.kill()
    assert [status for status, _ in answers] == [503, 503, 503]
    assert answers[0][1]["checks"]["send_loop"].startswith("Stalled: the send loop has not turned")
    assert err.count("loop_stuck_here") == 1, err
