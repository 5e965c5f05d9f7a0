import time

import pytest

from shared.http.startup import StartupWork


def test_failed_start_up_work_is_retried_and_readiness_follows_it():
    attempts = []

    def work():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("database not up yet")

    startup = StartupWork(work, max_delay=0.01)
    assert startup.wait(10)
    startup.check()  # no longer raises
    assert len(attempts) == 3


def test_readiness_names_the_last_problem_while_the_work_is_not_done():
    database_up = False

    def work():
        if not database_up:
            raise ConnectionError("still down")

    startup = StartupWork(work, max_delay=0.01)
    assert not startup.wait(0.2)
    with pytest.raises(RuntimeError, match="still down"):
        startup.check()
    database_up = True  # ends the retries
    assert startup.wait(10)


def test_stop_ends_the_retries():
    attempts = []

    def work():
        attempts.append(1)
        raise ConnectionError("never up")

    startup = StartupWork(work, max_delay=0.01)
    while len(attempts) < 2:
        time.sleep(0.01)
    startup.stop()
    made = len(attempts)
    time.sleep(0.1)  # ten retry delays
    assert len(attempts) == made
    assert not startup.wait(0)
    with pytest.raises(RuntimeError, match="never up"):
        startup.check()
