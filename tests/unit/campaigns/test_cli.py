"""The CLI's progress watch (what `make demo` shows) ends at its timeout."""
from __future__ import annotations

import io

from services.campaigns.cli import watch


class StillSending:
    """An Api whose campaign never finishes."""

    def __init__(self):
        self.calls = 0

    def call(self, method, path, body=None):
        self.calls += 1
        return {"id": "c1", "status": "sending",
                "progress": {"audience_size": 10, "accounted": 3, "sent": 3, "failed": 0,
                             "skipped": 0, "deferred": 0, "bounced": 0}}


def test_watch_gives_back_the_unfinished_campaign_at_its_timeout():
    api, out = StillSending(), io.StringIO()
    campaign = watch(api, "c1", interval=0.01, out=out, timeout=0.2)
    assert campaign["status"] == "sending" and api.calls >= 2
    assert "3/10" in out.getvalue()
