"""Ids that must be unique but need not be secret: event ids, trace ids.

uuid.uuid4() takes its 16 bytes from os.urandom, and os.urandom lets go of
the GIL for its getrandom() call. In a busy process every such id then
queues to get the GIL back behind the other threads: in a loaded sender,
whose main thread makes one per delivery event, ~9% of that thread's
samples (py-spy) were this wait. These ids come from a generator of the
process's own instead, seeded from os.urandom at import and again in every
forked child (gunicorn forks its workers), which keeps the GIL throughout.

Not for anything a guess must not find (contact ids travel in links,
tokens are signed): a Mersenne Twister's output can be predicted from
enough of it. Those keep uuid4.
"""
from __future__ import annotations

import os
import random
import socket

_generator = random.Random()  # private: nobody's random.seed() can replay it
os.register_at_fork(after_in_child=_generator.seed)
_START_TOKEN = os.urandom(4).hex()   # a forked child differs by its pid

_VERSION_MASK = ~((0xF000 << 64) | (0xC000 << 48))
_VERSION_4 = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


def unique_hex() -> str:
    """32 lower-case hex digits, shaped like uuid.uuid4().hex (122 random bits)."""
    return f"{_generator.getrandbits(128) & _VERSION_MASK | _VERSION_4:032x}"


def worker_owner(suffix: str = "") -> str:
    """Who holds a lease: host and pid, to read in a log, and a token of this
    process's start, because a container restarted in the same pod keeps its
    hostname and often its pid, and a lease's checks ("still mine?") must
    never take a predecessor's lease, or a twin's, for this process's own."""
    return f"{socket.gethostname()}-{os.getpid()}-{_START_TOKEN}{suffix}"
