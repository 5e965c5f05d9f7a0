"""A TCP server on a loopback port, one thread per connection: the base of
the scripted SMTP relays the sender's unit tests talk to."""
from __future__ import annotations

import socket
import threading


class LoopbackServer:
    """Accepts connections and hands each to `_session(conn)` in a thread of
    its own; `sessions` counts them."""

    def __init__(self):
        self.sessions = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.sessions += 1
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def stop(self):
        self.listener.close()
