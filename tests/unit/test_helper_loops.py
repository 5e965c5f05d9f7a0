"""shared.worker.HelperLoops: a worker's side loops, and the readiness check
that fails when one of them died."""
import threading

import pytest

from shared.worker import HelperLoops


class SideLoop:
    """What HelperLoops uses of a ConsumerLoop: run, stop, stopping, group."""

    def __init__(self, group: str, fail: threading.Event | None = None):
        self.group = group
        self.stopping = False
        self.fail = fail or threading.Event()
        self.stopped = threading.Event()

    def run(self):
        while not self.stopping:
            if self.fail.wait(0.01):
                raise RuntimeError("an error the loop does not catch")
        self.stopped.set()

    def stop(self):
        self.stopping = True


def test_a_helper_that_died_fails_the_readiness_check_by_name(caplog):
    helpers, fail = HelperLoops(), threading.Event()
    helpers.start(SideLoop("sender-campaigns"))
    helpers.start(SideLoop("sender-contacts", fail))
    helpers.check()                      # both running
    fail.set()
    helpers.join(timeout=0.5)            # the failing one ends; the other keeps running
    with pytest.raises(RuntimeError, match="sender-contacts") as raised:
        helpers.check()
    assert "sender-campaigns" not in str(raised.value)
    logged = [r for r in caplog.records if r.levelname == "ERROR"]
    assert logged and logged[0].group == "sender-contacts"
    helpers.stop()
    helpers.join()


def test_helpers_told_to_stop_end_and_are_not_reported():
    helpers, loops = HelperLoops(), [SideLoop("a"), SideLoop("b")]
    for loop in loops:
        helpers.start(loop)
    helpers.stop()
    helpers.join()
    assert all(loop.stopped.is_set() for loop in loops)
    helpers.check()
