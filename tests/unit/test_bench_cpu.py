"""bench/send/cpu.py: the per-process CPU the send benchmark prints."""
from bench.send.cpu import Snapshot, report, role, thread_group, thread_split


def test_each_stack_process_is_named_by_its_role():
    assert role("/r/.venv/bin/python -m services.sender.worker") == "sender worker"
    assert role("/r/.venv/bin/python /r/.venv/bin/gunicorn -c python:shared.gunicorn_conf "
                "--bind 127.0.0.1:8081 services.tracking.app:create_app()") == "tracking web"
    assert role("/r/.venv/bin/python -m devstack.smtp_sink") == "sink"
    assert role("/usr/bin/java -Xmx512m -cp /r/.cache/kafka/lib/* kafka.Kafka x") == "kafka"
    assert role("/r/.cache/ferretdb/bin/ferretdb --handler=sqlite") == "ferretdb"
    assert role("/bin/bash something") == "other"


def test_the_report_gives_each_role_its_cpu_per_message_and_the_machine_its_share():
    before = Snapshot(at=100.0, processes={1: ("sender worker", 10.0), 2: ("sink", 5.0),
                                           3: ("kafka", 1.0), 4: ("sender worker", 3.0)},
                      machine_busy=50.0, cores=2)
    # 10 s later, 1,000 messages: the two senders used 0.7 + 0.5 s, the sink
    # 0.8 s, Kafka nothing worth printing, FerretDB (started since) 0.5 s.
    after = Snapshot(at=110.0, processes={1: ("sender worker", 10.7), 2: ("sink", 5.8),
                                          3: ("kafka", 1.002), 4: ("sender worker", 3.5),
                                          5: ("ferretdb", 0.5)},
                     machine_busy=65.0, cores=2)
    line = report(before, after, messages=1000)
    assert line.startswith("CPU ms per message: sender worker 1.20, sink 0.80, ferretdb 0.50;")
    assert "kafka" not in line
    assert "stack total 2.50 ms" in line
    assert "150% busy of 200% (the stack 25%)" in line


def test_a_senders_threads_are_grouped_by_their_os_names():
    assert thread_group(pid=40, tid=40, comm="python") == "main"
    assert thread_group(pid=40, tid=41, comm="smtp-0") == "smtp"
    assert thread_group(pid=40, tid=47, comm="smtp-12") == "smtp"
    assert thread_group(pid=40, tid=48, comm="compose") == "compose"
    assert thread_group(pid=40, tid=49, comm="python3.11") == "other"  # the clients' own threads
    assert thread_group(pid=40, tid=50, comm="rdk:broker1") == "librdkafka"
    assert thread_group(pid=40, tid=51, comm="rdk:main") == "librdkafka"


def test_the_split_by_thread_adds_up_each_group_per_message_largest_first():
    before = {41: ("smtp", 1.0), 42: ("smtp", 2.0), 43: ("compose", 5.0), 40: ("main", 1.0),
              44: ("other", 0.5)}
    # 1,000 messages later; thread 45 started meanwhile, thread 44 ended.
    after = {41: ("smtp", 1.2), 42: ("smtp", 2.1), 43: ("compose", 5.8), 40: ("main", 1.2),
             45: ("other", 0.05)}
    split = thread_split(before, after, messages=1000)
    assert list(split) == ["compose", "smtp", "main", "other"]
    assert [round(v, 3) for v in split.values()] == [0.8, 0.3, 0.2, 0.05]


def test_a_snapshot_names_the_processes_it_is_told_about():
    import os
    import subprocess
    import sys
    from bench.send.cpu import snapshot
    # run from the repo's virtualenv, the child is found as a stack process
    # ("other"); the benchmark's own senders are found as "sender worker",
    # like the stack's, until they are named
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert snapshot().processes[child.pid][0] == "other"
        assert os.getpid() not in snapshot().processes  # the caller, unless named
        taken = snapshot({child.pid: "bench sender", os.getpid(): "this benchmark"})
        assert taken.processes[child.pid][0] == "bench sender"
        assert taken.processes[os.getpid()][0] == "this benchmark"
        assert taken.processes[os.getpid()][1] > 0
    finally:
        child.kill()
        child.wait()


def test_the_sampler_ends_a_run_at_the_first_snapshot_after_its_last_message(monkeypatch):
    from bench.send import cpu
    clock = {"now": 100.0}
    monkeypatch.setattr(cpu.time, "time", lambda: clock["now"])
    taken = []

    def fake_snapshot(roles=None, among=None):
        taken.append(among)
        return Snapshot(at=clock["now"], processes={}, machine_busy=0.0, cores=2)
    monkeypatch.setattr(cpu, "snapshot", fake_snapshot)
    first = Snapshot(at=100.0, processes={7: ("sink", 1.0)}, machine_busy=0.0, cores=2)
    sampler = cpu.Sampler(first, every=0.25)
    for step in range(40):  # a wait loop's checks, 50 ms apart, for 2 s
        clock["now"] = 100.0 + 0.05 * step
        sampler.sample()
    assert [round(s.at, 2) for s in sampler.samples] == [100.0, 100.25, 100.5, 100.75, 101.0,
                                                        101.25, 101.5, 101.75]
    assert all(among is first for among in taken)  # no new look through /proc
    clock["now"] = 106.0  # the wait noticed the end seconds after it
    assert sampler.at(101.3).at == 101.5
    assert sampler.at(105.0).at == 106.0  # none in between: one taken now
