"""Retry schedule, SMTP answer classes and rate limits (with a fake clock)."""
import pytest

from services.sender.domain import (PERMANENT, TRANSIENT, ACCEPTED, Limits, RetryPolicy, classify,
                                    hex_id, message_id)
from services.sender.throttle import MemoryCounter, RateLimiter


def test_backoff_doubles_with_jitter_within_bounds_and_is_capped():
    policy = RetryPolicy(max_attempts=5, base_seconds=30, max_seconds=600)
    assert [policy.delay(a, rng=lambda: 0.0) for a in range(6)] == [15, 30, 60, 120, 240, 300]
    assert [policy.delay(a, rng=lambda: 1.0) for a in range(6)] == [30, 60, 120, 240, 480, 600]
    import random
    rng = random.Random(1)
    delays = {policy.delay(2, rng=rng.random) for _ in range(50)}
    assert len(delays) > 40 and all(60 <= d <= 120 for d in delays)  # jitter spreads retries


def test_attempts_are_exhausted_after_the_configured_number():
    policy = RetryPolicy(max_attempts=5)
    assert [policy.exhausted(a) for a in range(5)] == [False, False, False, False, True]


@pytest.mark.parametrize("code,kind", [(250, ACCEPTED), (421, TRANSIENT), (451, TRANSIENT),
                                       (None, TRANSIENT), (550, PERMANENT), (554, PERMANENT)])
def test_smtp_answers(code, kind):
    assert classify(code) == kind


def test_message_id_is_stable_per_job_and_ids_fit_tracking_tokens():
    assert message_id("j1", "sandesh.test") == message_id("j1", "sandesh.test") == "<j1@sandesh.test>"
    assert hex_id("ab" * 16) == "ab" * 16
    assert len(hex_id("test-1")) == 32 and hex_id("test-1") == hex_id("test-1")


class FakeClock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_per_second_limit_grants_up_to_the_limit_then_says_when_to_come_back():
    clock = FakeClock(1_000_000.25)
    limiter = RateLimiter(MemoryCounter(), clock)
    limits = Limits(per_second=10)
    first = limiter.grant("c1", 7, limits)
    second = limiter.grant("c1", 7, limits)
    assert (first.granted, second.granted) == (7, 3)
    assert second.retry_at == 1_000_001.0 and not second.hourly
    assert limiter.grant("c2", 10, limits).granted == 10  # per campaign
    clock.now = 1_000_001.0
    assert limiter.grant("c1", 7, limits).granted == 7  # a new window


def test_until_the_middle_of_a_window_a_sender_takes_only_its_share():
    clock = FakeClock(1_000_000.25)
    limiter = RateLimiter(MemoryCounter(), clock)
    limits = Limits(per_second=10)
    assert limiter.per_window("c1", limits) == (10, 1_000_001.0)  # alone: the whole window
    limiter.share = 0.5                                           # one of two senders
    assert limiter.per_window("c1", limits) == (5, 1_000_000.5)
    assert limiter.grant("c1", 5, limits).granted == 5
    assert limiter.per_window("c1", limits) == (0, 1_000_000.5)
    clock.now = 1_000_000.5
    assert limiter.per_window("c1", limits) == (5, 1_000_001.0)  # from the middle: the rest
    limiter.grant("c1", 7, limits)                               # 5 granted, 2 short
    assert limiter.per_window("c1", limits) == (0, 1_000_001.0)  # nothing until the next
    assert limiter.per_window("c2", limits) == (10, 1_000_001.0)
    clock.now = 1_000_001.0
    assert limiter.per_window("c1", limits) == (5, 1_000_001.5)
    assert limiter.per_window("c1", Limits()) is None


def test_a_window_found_spent_is_not_asked_about_again_until_it_ends():
    class CountingCounter(MemoryCounter):
        asked = 0

        def left(self, key, limit):
            self.asked += 1
            return super().left(key, limit)

    clock = FakeClock(1_000_000.6)  # past the middle: a sender asks what the others left
    counter = CountingCounter()
    limiter = RateLimiter(counter, clock)
    limiter.share = 0.5
    limits = Limits(per_second=10)
    assert limiter.grant("c1", 12, limits).granted == 10        # short: the window is spent
    assert limiter.per_window("c1", limits) == (0, 1_000_001.0)
    clock.now = 1_000_000.9
    assert limiter.per_window("c1", limits) == (0, 1_000_001.0)
    assert counter.asked == 0                                   # known spent: no round trip
    clock.now = 1_000_001.6
    assert limiter.per_window("c1", limits) == (10, 1_000_002.0)  # a new window: asked again
    assert counter.asked == 1


def test_fractional_rate_uses_a_longer_window():
    clock = FakeClock(1_000_000.0)
    limiter = RateLimiter(MemoryCounter(), clock)
    limits = Limits(per_second=0.5)
    assert limiter.grant("c", 5, limits).granted == 1
    clock.now += 1
    assert limiter.grant("c", 5, limits).granted == 0
    clock.now += 1
    assert limiter.grant("c", 5, limits).granted == 1


def test_the_hourly_quota_is_a_rolling_hour_and_the_rest_waits_a_minute_at_a_time():
    """Counted by clock hour, 20 just before the top of the hour and 20 just
    after went out within a minute under per_hour: 20."""
    clock = FakeClock(3600 * 500 - 30)                 # half a minute before the hour
    limiter = RateLimiter(MemoryCounter(), clock)
    limits = Limits(per_hour=100)
    assert limiter.grant("c", 60, limits).granted == 60
    grant = limiter.grant("c", 60, limits)
    assert grant.granted == 40 and grant.hourly
    assert grant.retry_at == 3600 * 500                # the next minute: it may have room
    clock.now = 3600 * 500 + 10                        # past the top of the hour: still none
    assert limiter.grant("c", 60, limits).granted == 0
    clock.now = 3600 * 501 - 1                         # 3,571 s on: all of it still within
    assert limiter.grant("c", 60, limits).granted == 0
    clock.now = 3600 * 501                             # an hour after, and a minute at most
    assert limiter.grant("c", 60, limits).granted == 60


def test_the_rolling_hour_frees_what_each_minute_took_as_that_minute_leaves_it():
    clock = FakeClock(3600 * 500)
    limiter = RateLimiter(MemoryCounter(), clock)
    limits = Limits(per_hour=30)
    for minute in range(3):                            # 10 a minute for three minutes
        clock.now = 3600 * 500 + 60 * minute
        assert limiter.grant("c", 10, limits).granted == 10
    clock.now = 3600 * 501 - 1                         # the hour is full
    assert limiter.grant("c", 1, limits).granted == 0
    assert limiter.pace("c", limits) == 0              # and nothing parked goes back
    clock.now = 3600 * 501 + 1                         # 3,601 s after a minute's start:
    assert limiter.pace("c", limits) == 0              # it may have sent 3,541 s ago
    clock.now = 3600 * 501 + 60                        # the first minute left the hour
    assert limiter.pace("c", limits) == 10
    assert limiter.grant("c", 15, limits).granted == 10


def test_the_rolling_hour_sees_what_another_sender_takes_late_in_the_last_minute():
    """Read once a minute, what another sender (its clock a little behind,
    or its reservation on the wire) took in the last minute after that
    read was missed: 200 granted within 0.15 s under per_hour: 100."""
    minute, now = 3600 * 500, [3600 * 500 + 0.05]
    counter, limits = MemoryCounter(), Limits(per_hour=100)
    ahead = RateLimiter(counter, clock=lambda: now[0])
    behind = RateLimiter(counter, clock=lambda: now[0] - 0.3)  # still in the last minute
    assert ahead.grant("c", 1, limits).granted == 1     # reads the hour before: empty
    now[0] = minute + 0.10
    assert behind.grant("c", 100, limits).granted == 99   # its minute is the last one
    now[0] = minute + 0.20
    assert ahead.grant("c", 100, limits).granted == 0   # 99 more when the last went unread


def test_the_rolling_hour_sees_what_a_sender_ahead_took_in_a_minute_not_begun_here():
    """The other way round: a sender whose clock is behind read only up to
    its own minute, and granted again what one ahead had taken in the next."""
    now = [3600 * 500 + 0.05]
    counter, limits = MemoryCounter(), Limits(per_hour=100)
    ahead = RateLimiter(counter, clock=lambda: now[0])
    behind = RateLimiter(counter, clock=lambda: now[0] - 0.3)  # still in the last minute
    assert ahead.grant("c", 100, limits).granted == 100
    assert behind.grant("c", 50, limits).granted == 0   # 50 more when the next went unread


def test_no_limits_grant_everything():
    assert RateLimiter(MemoryCounter(), FakeClock()).grant("c", 500, Limits()).granted == 500


def test_the_enhanced_status_is_read_from_a_reply():
    from services.sender.domain import enhanced_status
    assert enhanced_status("550 5.1.1 <jane@example.com>: Recipient address rejected") == "5.1.1"
    assert enhanced_status("452-4.2.2 The email account that you tried to reach is over quota") \
        == "4.2.2"
    assert enhanced_status("250 OK queued as 12345") is None
    assert enhanced_status("") is None
