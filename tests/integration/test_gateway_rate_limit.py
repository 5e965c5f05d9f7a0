"""The gateway's per-key limit against the real FerretDB, with several
processes' limiters (one RateLimiter each) taking tickets at once."""
import threading
import time
from datetime import datetime, timedelta, timezone

from services.gateway.rate_limit import RateLimiter


def _take_concurrently(limiters, key_id, window, limit, threads_per_limiter, tries_each):
    admitted, errors = [], []

    def work(limiter):
        try:
            for _ in range(tries_each):
                admitted.append(limiter.admit(key_id, window, limit))
        except Exception as exc:  # a DuplicateKeyError here would be a 500 to the caller
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(limiter,))
               for limiter in limiters for _ in range(threads_per_limiter)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return admitted, errors


def test_concurrent_requests_from_several_processes_get_exactly_the_limit(mongo_db):
    limiters = [RateLimiter(mongo_db) for _ in range(3)]  # three gateway processes
    admitted, errors = _take_concurrently(limiters, "key-a", 1000, 25,
                                          threads_per_limiter=4, tries_each=5)
    assert errors == []
    assert len(admitted) == 60
    assert admitted.count(True) == 25
    assert mongo_db["rate_tickets"].count_documents({}) == 25


def test_windows_and_keys_are_counted_apart(mongo_db):
    limiter = RateLimiter(mongo_db)
    assert [limiter.admit("key-a", 7, 2) for _ in range(3)] == [True, True, False]
    assert [limiter.admit("key-b", 7, 2) for _ in range(3)] == [True, True, False]
    assert [limiter.admit("key-a", 8, 2) for _ in range(3)] == [True, True, False]


def test_a_process_that_saw_nothing_yet_finds_the_first_free_ticket(mongo_db):
    busy, late = RateLimiter(mongo_db), RateLimiter(mongo_db)
    assert all(busy.admit("key-a", 5, 40) for _ in range(37))
    assert [late.admit("key-a", 5, 40) for _ in range(4)] == [True, True, True, False]


def test_purge_deletes_only_expired_tickets(mongo_db):
    limiter = RateLimiter(mongo_db)
    limiter.admit("key-a", 1, 5)
    mongo_db["rate_tickets"].insert_one(
        {"_id": "key-a:0:1", "expires_at": datetime.now(timezone.utc) - timedelta(seconds=1)})
    assert limiter.purge() == 1
    assert [d["_id"] for d in mongo_db["rate_tickets"].find()] == ["key-a:1:1"]


def test_expired_tickets_are_purged_by_a_thread_of_the_process_not_by_a_request(mongo_db):
    """The purge reads every ticket: the request that ran it waited for that."""
    mongo_db["rate_tickets"].insert_one(
        {"_id": "key-a:0:1", "expires_at": datetime.now(timezone.utc) - timedelta(seconds=1)})
    limiter = RateLimiter(mongo_db, purge_seconds=0.05)
    assert limiter.admit("key-a", 1, 5)          # the first request starts the thread
    deadline = time.monotonic() + 10
    while mongo_db["rate_tickets"].find_one({"_id": "key-a:0:1"}) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [d["_id"] for d in mongo_db["rate_tickets"].find()] == ["key-a:1:1"]
