"""`make demo` against the running stack: it finishes on its own and prints
final counts that match what was sent."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(900)


def test_the_demo_sends_its_campaign_and_prints_the_final_counts(stack_env):
    env = {**os.environ, **stack_env}
    done = subprocess.run([sys.executable, "-m", "services.campaigns.demo", "--contacts", "50",
                           "--timeout", "600"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=800)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "==> Campaign sent" in out, out[-2000:]
    counts = dict(re.findall(r"^\s{4}(audience_size|sent|failed|skipped|deferred|bounced)\s+(\d+)$",
                             out, re.M))
    assert counts == {"audience_size": "50", "sent": "50", "failed": "0", "skipped": "0",
                      "deferred": "0", "bounced": "0"}, out[-2000:]
    received = re.search(r"received by the SMTP sink: (\d+) messages in (\S+)", out)
    assert received and received.group(1) == "50", out[-2000:]
    assert Path(received.group(2)).is_dir()

