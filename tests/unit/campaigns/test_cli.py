"""The CLI's progress line and watch (what `make demo` shows)."""
from __future__ import annotations

import io

from services.campaigns.cli import progress_line, watch


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


def line(eta_seconds) -> str:
    return progress_line({"status": "sending", "progress": {
        "audience_size": 500, "accounted": 354, "percent": 70.8, "sent": 354, "failed": 0,
        "skipped": 0, "deferred": 0, "bounced": 0, "rate_per_second": 175.0,
        "eta_seconds": eta_seconds}})


def test_time_left_rounds_up_so_work_left_never_reads_as_zero():
    assert line(0.8).endswith("left 0m01s")
    assert line(61.2).endswith("left 1m02s")
    assert line(7260).endswith("left 2h01m")
    assert line(None).endswith("left --")


def test_a_campaign_the_platform_cancelled_says_why():
    campaign = {"status": "cancelled", "cancel_reason": "paused past the 168-hour limit",
                "progress": {"audience_size": 10, "accounted": 10, "sent": 4, "failed": 0,
                             "skipped": 6, "deferred": 0, "bounced": 0}}
    assert progress_line(campaign).endswith("  (paused past the 168-hour limit)")
    assert "(" not in progress_line({**campaign, "cancel_reason": None})


class ImportEnds:
    """An Api whose import ends in `status`."""

    def __init__(self, status: str):
        self.status = status
        self.base = "http://gateway"
        self.session = self

    def post(self, url, **kwargs):
        return type("Response", (), {"status_code": 202, "json": lambda _: {"id": "i1"}})()

    def call(self, method, path, body=None):
        if path == "/lists":
            return {"id": "l1"}
        return {"status": self.status, "counters": {"read": 3, "created": 0},
                "error": "no email column in the header; map one"}


def test_the_demo_stops_at_an_import_that_failed():
    """It went on to send to the empty list and ended 0."""
    from services.campaigns.demo import ImportFailed, import_list
    assert import_list(ImportEnds("done"), 3, "m", deadline=float("inf")) == "l1"
    for status in ("failed", "cancelled"):
        try:
            import_list(ImportEnds(status), 3, "m", deadline=float("inf"))
        except ImportFailed as exc:
            assert status in str(exc) and "no email column" in str(exc)
        else:
            raise AssertionError(f"an import {status} was taken for done")
