"""`kill -USR1` makes a worker print where each of its threads waits, and
the worker goes on (shared.worker.dump_stacks_on_sigusr1)."""
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROGRAM = """
import sys, threading, time
from shared.worker import dump_stacks_on_sigusr1
dump_stacks_on_sigusr1()

def helper_waits_here():
    time.sleep(60)

def main_waits_here():
    print("ready", flush=True)
    time.sleep(3)
    print("still running", flush=True)

threading.Thread(target=helper_waits_here, daemon=True).start()
main_waits_here()
"""


def test_sigusr1_prints_every_threads_stack_and_the_worker_goes_on():
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)  # the helper thread is in its sleep
        proc.send_signal(signal.SIGUSR1)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "still running" in out
    assert "main_waits_here" in err
    assert "helper_waits_here" in err
