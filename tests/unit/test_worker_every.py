"""shared.worker.every: the background rounds of a worker (retention purges,
the tracking repairs)."""
import threading

from shared.worker import every


def test_a_round_that_fails_is_tried_again_and_the_rounds_go_on():
    rounds, done = [], threading.Event()

    def job():
        rounds.append(1)
        if len(rounds) == 1:
            raise ConnectionError("the database is away")
        if len(rounds) == 3:
            done.set()

    thread = every("test-rounds", lambda: 0.01, job, first_wait=0.01)
    assert done.wait(10) and thread.daemon and thread.name == "test-rounds"
