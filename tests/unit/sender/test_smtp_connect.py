"""The sender's TCP connect looks at the shutdown cut while it waits: a cut
that came between a look and a blocking connect was missed, and the connect
then waited the whole SMTP timeout (shutting a socket down before its
connect starts does nothing)."""
import socket
import threading
import time

import pytest

from services.sender.smtp import _Connection


class _Messenger:
    _cut = False


@pytest.fixture
def unanswered():
    """A listener whose accept queue is full: further connects wait in SYN_SENT."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    for _ in range(2):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(server.getsockname())
        except BlockingIOError:
            pass
        fillers.append(filler)
    time.sleep(0.2)
    yield server.getsockname()
    for filler in fillers:
        filler.close()
    server.close()


def test_a_cut_during_a_connect_ends_it_without_touching_the_socket(unanswered):
    messenger = _Messenger()
    connection = _Connection(messenger, timeout=60)
    outcome = {}

    def connect():
        try:
            connection.connect(*unanswered)
        except OSError as exc:
            outcome["error"] = str(exc)

    thread = threading.Thread(target=connect)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive()  # still waiting for the handshake
    messenger._cut = True     # only the flag: no shutdown of the socket
    thread.join(10)
    assert not thread.is_alive() and outcome == {"error": "shutting down"}


def test_a_connect_to_a_listening_relay_still_connects():
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0].sendall(b"220 hi\r\n")),
                     daemon=True).start()
    connection = _Connection(_Messenger(), timeout=5)
    code, _ = connection.connect(*server.getsockname())
    assert code == 220 and connection.sock.gettimeout() == 5
    connection.close()
    server.close()


def test_a_refused_connect_is_an_error_at_once():
    port = socket.create_server(("127.0.0.1", 0))
    address = port.getsockname()
    port.close()  # nothing listens there now
    with pytest.raises(ConnectionRefusedError):
        _Connection(_Messenger(), timeout=5).connect(*address)
