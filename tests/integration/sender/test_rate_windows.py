"""The per-campaign rate limit is shared by every sender: two limiters (two
sender processes) over the same `rate_windows` collection on the real
FerretDB grant, together, no more than the limit of a window."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from services.sender.domain import Limits
from services.sender.store import MongoWindowCounter
from services.sender.throttle import RateLimiter

# Both "processes" see the same second, an hour ahead: the counter deletes
# windows that expired by the real clock (a fixed time began to fail once
# the real clock passed it).
NOW = int(time.time()) + 3600 + 0.25


def limiters(db, now=NOW):
    return [RateLimiter(MongoWindowCounter(db), clock=lambda: now) for _ in range(2)]


def test_two_limiters_share_the_per_second_window(mongo_db):
    first, second = limiters(mongo_db)
    limits = Limits(per_second=10)
    a = first.grant("c1", 6, limits)
    b = second.grant("c1", 6, limits)
    assert (a.granted, b.granted) == (6, 4)
    assert b.retry_at == int(NOW) + 1.0  # the rest waits for the next second
    assert second.grant("c1", 1, limits).granted == 0
    assert first.grant("c2", 10, limits).granted == 10  # another campaign, its own window
    later = limiters(mongo_db, NOW + 1)[0]
    assert later.grant("c1", 10, limits).granted == 10  # the next second starts afresh


def test_concurrent_reservations_never_exceed_the_limit(mongo_db):
    """Eight senders at once (FerretDB loses concurrent $inc: this once
    granted 89 of 50)."""
    def sender(_):
        counter = MongoWindowCounter(mongo_db)
        return sum(counter.reserve("c1:s1:w", 3, 50, NOW + 60) for _ in range(5))

    with ThreadPoolExecutor(8) as pool:
        granted = list(pool.map(sender, range(8)))  # 120 asked of 50
    assert sum(granted) == 50


def test_large_limits_are_taken_in_blocks_and_the_rest_of_a_block_is_spent_later(mongo_db):
    first, second = (MongoWindowCounter(mongo_db) for _ in range(2))
    limit = 6400  # blocks of 100
    assert first.reserve("c1:h:w", 30, limit, NOW + 60) == 30
    assert first.reserve("c1:h:w", 70, limit, NOW + 60) == 70  # the same block
    assert mongo_db["rate_windows"].count_documents({"window": "c1:h:w"}) == 1
    assert second.reserve("c1:h:w", 6400, limit, NOW + 60) == 6300  # all the other blocks
    assert first.reserve("c1:h:w", 1, limit, NOW + 60) == 0


def test_two_limiters_share_the_hourly_quota(mongo_db):
    first, second = limiters(mongo_db)
    limits = Limits(per_hour=5)
    assert first.grant("c1", 3, limits).granted == 3
    rest = second.grant("c1", 3, limits)
    assert rest.granted == 2 and rest.hourly
    assert rest.retry_at == (NOW // 60 + 1) * 60  # the next minute may have room


def test_the_hourly_quota_rolls_across_the_top_of_the_hour_for_every_sender(mongo_db):
    """Counted by clock hour, a campaign sent its quota just before the hour
    and again just after it."""
    top = (NOW // 3600 + 1) * 3600
    limits = Limits(per_hour=6400)  # a minute's blocks: a 60th of the hour, cut in 64
    before = limiters(mongo_db, top - 90)
    assert before[0].grant("c1", 4000, limits).granted == 4000
    assert before[1].grant("c1", 4000, limits).granted == 2400
    after = limiters(mongo_db, top + 30)   # other senders, the next hour
    assert after[0].grant("c1", 100, limits).granted == 0
    assert after[1].pace("c1", limits) == 0
    much_later = limiters(mongo_db, top - 90 + 3660)
    assert much_later[0].grant("c1", 6400, limits).granted == 6400


def test_a_slow_campaigns_blocks_barely_used_do_not_fill_its_hour(mongo_db):
    """Blocks cut from the whole hour (a 64th of it each), one a minute
    used for a single message filled the hour in 64 minutes of it."""
    limits = Limits(per_hour=6400)
    start = (NOW // 3600 + 2) * 3600
    for minute in range(30):
        [limiter, _] = limiters(mongo_db, start + 60 * minute)
        assert limiter.grant("c2", 1, limits).granted == 1
    [limiter, _] = limiters(mongo_db, start + 60 * 30)
    assert limiter.grant("c2", 6000, limits).granted >= 6000


def test_what_is_left_of_a_window_is_what_a_reserve_could_still_get(mongo_db):
    first, second = (MongoWindowCounter(mongo_db) for _ in range(2))
    assert first.left("c1:s1:w", 10) == 10
    assert first.reserve("c1:s1:w", 4, 10, NOW + 60) == 4
    assert second.left("c1:s1:w", 10) == 6
    assert second.reserve("c1:s1:w", 6, 10, NOW + 60) == 6
    assert first.left("c1:s1:w", 10) == 0
    big = 6400  # blocks of 100: what this sender holds of a block counts too
    assert first.reserve("c1:h:w", 30, big, NOW + 60) == 30
    assert first.left("c1:h:w", big) == big - 30
    assert second.left("c1:h:w", big) == big - 100
