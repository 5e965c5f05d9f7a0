"""bench/send/run.py: how the send benchmark waits for the sink's files."""
import os
import threading
import time

from bench.send import run


def test_the_next_listing_waits_for_most_of_what_is_missing():
    # 100 files a second so far, 1,000 missing: nine tenths of them in 9 s
    assert run._time_to_most_of_the_rest((10.0, 0), (11.0, 100), 1100) == 9.0
    assert run._time_to_most_of_the_rest(None, (11.0, 100), 1100) == 0.0  # one listing: no rate yet
    assert run._time_to_most_of_the_rest((10.0, 100), (11.0, 100), 1100) == 0.0  # nothing came


def test_the_wait_ends_when_every_file_is_there_and_dates_the_last_by_the_mtime(tmp_path, monkeypatch):
    listings = []
    real_count = run.count_files
    monkeypatch.setattr(run, "count_files", lambda d: listings.append(1) or real_count(d))

    def arrive():
        for i in range(300):
            (tmp_path / f"m{i}").write_bytes(b"x")
            time.sleep(0.005)

    writer = threading.Thread(target=arrive)
    started = time.time()
    writer.start()
    first, last = run.wait_for_files(tmp_path, 300, time.monotonic() + 30, interval=0.1)
    writer.join()
    assert run.count_files(tmp_path) == 300
    # a file's time comes from the kernel's coarser clock: up to a tick
    # before time.time() read just ahead of it
    assert started - 0.01 <= first <= last <= time.time()
    assert last == os.stat(tmp_path).st_mtime_ns / 1e9
    # every 0.1 s at most; without the rate estimate that was 19 listings, with it 6
    assert len(listings) < 12


def test_a_slow_start_does_not_delay_the_end(tmp_path, monkeypatch):
    # A campaign's first message comes seconds after the send call: the rate
    # that paces the listings must not count that wait, or the last listing,
    # and the CPU snapshot the benchmark takes after it, come far too late.
    # On a clock of the test's own: a loaded machine's scheduling made the
    # wall-clock version of this test fail now and then.
    import types
    clock = {"now": 0.0}
    first_at, every, total = 1.0, 0.005, 300          # 200 files a second after 1 s

    def arrived() -> int:
        return max(0, min(total, int((clock["now"] - first_at) / every) + 1))

    def mtime_ns() -> int:
        count = arrived()
        return int((first_at + (count - 1) * every) * 1e9) if count else 0

    fake_time = types.SimpleNamespace(monotonic=lambda: clock["now"], time=lambda: clock["now"],
                                      sleep=lambda dt: clock.__setitem__("now", clock["now"] + dt))
    fake_os = types.SimpleNamespace(stat=lambda path: types.SimpleNamespace(
        st_mtime_ns=mtime_ns()))
    monkeypatch.setattr(run, "time", fake_time)
    monkeypatch.setattr(run, "os", fake_os)
    monkeypatch.setattr(run, "count_files", lambda directory: arrived())
    _, last = run.wait_for_files(tmp_path, total, 60.0, interval=0.1, since_mtime_ns=0)
    assert last == first_at + (total - 1) * every
    assert clock["now"] - last < 0.2   # listed again soon after the last file, not seconds


def test_empty_leaves_an_empty_directory(tmp_path):
    for i in range(5):
        (tmp_path / f"m{i}").write_bytes(b"x")
    run.empty(tmp_path)
    assert run.count_files(tmp_path) == 0
