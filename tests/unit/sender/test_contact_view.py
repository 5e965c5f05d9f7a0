"""ContactView's rule with a stand-in for the group's offsets: a blocked job
waits until the state loop has committed past what was on its topics when
the job was first met, or until the patience runs out."""
from __future__ import annotations

from services.sender.contact_view import ContactView

TP0, TP1 = ("contacts.events", 0), ("contacts.events", 1)


class Progress:
    def __init__(self, ends, applied):
        self.end_offsets, self.committed = dict(ends), dict(applied)
        self.asked_ends = self.asked_applied = 0
        self.failing = False

    def ends(self):
        self.asked_ends += 1
        if self.failing:
            raise ConnectionError("broker away")
        return dict(self.end_offsets)

    def applied(self):
        self.asked_applied += 1
        if self.failing:
            raise ConnectionError("broker away")
        return dict(self.committed)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_caught_up_loop_lets_the_block_stand_at_once():
    progress = Progress({TP0: 5, TP1: 3}, {TP0: 5, TP1: 3})
    assert ContactView(progress).behind(["j1", "j2"]) == set()
    assert progress.asked_ends == 1  # one mark for the batch


def test_a_job_waits_until_the_loop_committed_past_the_mark_taken_when_it_was_met():
    progress = Progress({TP0: 5, TP1: 3}, {TP0: 4, TP1: 3})
    view = ContactView(progress)
    assert view.behind(["j1"]) == {"j1"}
    progress.end_offsets[TP0] = 9  # published after the job was met: not waited for
    assert view.behind(["j1"]) == {"j1"}
    progress.committed[TP0] = 5
    assert view.behind(["j1"]) == set()


def test_a_partition_never_committed_is_behind_and_one_with_nothing_in_it_is_not_asked_for():
    progress = Progress({TP0: 2}, {})
    view = ContactView(progress)
    assert view.behind(["j1"]) == {"j1"}
    progress.committed[TP0] = 2
    assert view.behind(["j1"]) == set()


def test_a_job_met_later_takes_a_later_mark():
    progress = Progress({TP0: 5}, {TP0: 5})
    view = ContactView(progress)
    progress.end_offsets[TP0] = 8
    assert view.behind(["j1"]) == {"j1"}
    progress.committed[TP0] = 8
    assert view.behind(["j1"]) == set()


def test_past_the_patience_the_block_stands_even_with_the_broker_away():
    clock = Clock()
    progress = Progress({TP0: 5}, {TP0: 1})
    view = ContactView(progress, patience_seconds=30, clock=clock)
    assert view.behind(["j1"]) == {"j1"}
    progress.failing = True
    clock.now += 29
    assert view.behind(["j1"]) == {"j1"}
    clock.now += 1
    assert view.behind(["j1"]) == set()


def test_a_job_met_once_and_never_again_is_forgotten():
    clock = Clock()
    view = ContactView(Progress({TP0: 5}, {TP0: 1}), patience_seconds=30, clock=clock)
    view.behind(["gone"])
    clock.now += 121
    view.behind(["j1"])
    assert set(view._marks) == {"j1"}


def test_a_mark_that_could_not_be_read_is_read_again_and_the_wait_still_counts_from_the_first():
    clock = Clock()
    progress = Progress({TP0: 5}, {TP0: 5})
    progress.failing = True
    view = ContactView(progress, patience_seconds=30, clock=clock)
    assert view.behind(["j1"]) == {"j1"}
    progress.failing = False
    clock.now += 1
    assert view.behind(["j1"]) == set()  # the broker back: no need to wait out the patience
    progress.failing = True
    assert view.behind(["j2"]) == {"j2"}
    clock.now += 30
    assert view.behind(["j2"]) == set()


def test_topics_with_nothing_in_them_need_no_look_at_the_commits():
    progress = Progress({}, {})
    assert ContactView(progress).behind(["j1"]) == set()
    assert progress.asked_applied == 0


def test_while_the_broker_does_not_answer_it_is_asked_once_a_second_at_most():
    clock = Clock()
    progress = Progress({TP0: 5}, {TP0: 5})
    progress.failing = True
    view = ContactView(progress, patience_seconds=30, clock=clock)
    for _ in range(4):  # the send loop looks again every 0.25 s
        assert view.behind(["j1"]) == {"j1"}
        clock.now += 0.25
    assert (progress.asked_ends, progress.asked_applied) == (1, 0)  # no mark: commits not asked
    progress.failing = False
    assert view.behind(["j1"]) == set()


def test_a_job_forgotten_once_unblocked_starts_afresh_when_blocked_again():
    clock = Clock()
    progress = Progress({TP0: 5}, {TP0: 1})
    view = ContactView(progress, patience_seconds=30, clock=clock)
    assert view.behind(["j1"]) == {"j1"}
    view.forget(["j1"])
    clock.now += 29
    progress.end_offsets[TP0] = 7
    assert view.behind(["j1"]) == {"j1"}
    clock.now += 29  # 58 s after it was first met, 29 after this copy
    assert view.behind(["j1"]) == {"j1"}
