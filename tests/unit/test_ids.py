import os
import random
import uuid

from shared.ids import unique_hex


def test_ids_are_shaped_like_uuid4_hex():
    for _ in range(2000):
        value = unique_hex()
        parsed = uuid.UUID(hex=value)
        assert parsed.hex == value
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_ids_do_not_repeat():
    assert len({unique_hex() for _ in range(100_000)}) == 100_000


def test_seeding_the_global_random_does_not_replay_ids():
    random.seed(7)
    first = [unique_hex() for _ in range(5)]
    random.seed(7)
    assert [unique_hex() for _ in range(5)] != first


def test_a_forked_child_does_not_repeat_its_parents_ids():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, through the pipe
        os.close(read)
        os.write(write, "".join(unique_hex() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    parents = "".join(unique_hex() for _ in range(10))
    with os.fdopen(read) as pipe:
        childs = pipe.read()
    os.waitpid(pid, 0)
    assert len(childs) == 320
    assert {childs[i:i + 32] for i in range(0, 320, 32)}.isdisjoint(
        parents[i:i + 32] for i in range(0, 320, 32))


def test_a_lease_owner_names_the_host_and_pid_and_differs_after_a_restart():
    import importlib
    import os
    import socket

    from shared import ids
    first = ids.worker_owner("-fanout-0")
    assert first.startswith(f"{socket.gethostname()}-{os.getpid()}-")
    assert first.endswith("-fanout-0")
    # A container restarted in its pod keeps its hostname, and often its pid:
    # the process's start token still tells the two apart.
    restarted = importlib.reload(ids).worker_owner("-fanout-0")
    assert restarted != first
