"""`make status`: every program of the local stack and its state."""
from __future__ import annotations

import subprocess

from devstack import procs, supervisor


def main() -> None:
    if procs.supervisord_pid() is None:
        print("The local stack is not running here (start it with `make run`).")
        return
    # supervisorctl exits 3 when some program is not RUNNING: that is information, not an error.
    subprocess.run(supervisor.supervisorctl("status"), check=False)


if __name__ == "__main__":
    main()
