"""shared/thread_names.py: a thread's name as the operating system shows it."""
import threading
from pathlib import Path

import pytest

from shared.thread_names import name_this_thread

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(),
                                reason="thread names read from Linux /proc")


def os_name_of_a_thread_that_named_itself(name: str) -> str:
    seen = []

    def run():
        name_this_thread(name)
        seen.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return seen[0]


def test_a_thread_shows_the_name_it_gave_itself():
    assert os_name_of_a_thread_that_named_itself("compose") == "compose"


def test_a_long_name_keeps_the_first_15_bytes_as_linux_does():
    assert os_name_of_a_thread_that_named_itself("a-very-long-thread-name") == "a-very-long-thr"
