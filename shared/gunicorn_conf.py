"""gunicorn settings shared by the web services (`-c python:shared.gunicorn_conf`)."""
import os

from gunicorn.glogging import Logger
from prometheus_client import multiprocess

from shared.http import gunicorn_errors

gunicorn_errors.install()  # JSON, not gunicorn's HTML, for the requests it refuses itself


class _Logger(Logger):
    """gunicorn's error log without the client's address, request lines and
    query strings. Its handler is its own, so the app's email masking never
    sees these lines, and on tracking's public endpoints the client is a
    recipient: "Invalid request from ip=<their address>: Invalid HTTP
    request line: '<the URI>'" becomes "Invalid request: Invalid HTTP
    request line"."""

    def warning(self, msg, *args, **kwargs):
        if isinstance(msg, str) and msg.startswith("Invalid request from ip="):
            error = msg.partition(": ")[2]
            msg = "Invalid request: " + error.partition(":")[0].partition("'")[0].strip()
        super().warning(msg, *args, **kwargs)

    def exception(self, msg, *args, **kwargs):
        if isinstance(msg, str) and msg.startswith("Error handling request") and args:
            args = tuple(a.split("?", 1)[0] if isinstance(a, str) else a for a in args)
        super().exception(msg, *args, **kwargs)


workers = int(os.environ.get("SANDESH_WEB_WORKERS", "1"))
threads = int(os.environ.get("SANDESH_WEB_THREADS", "4"))
worker_class = "gthread" if threads > 1 else "sync"
timeout = 60
graceful_timeout = 30
keepalive = 5
accesslog = None  # request logs come from the app, without personal data
loglevel = "warning"
logger_class = _Logger


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)


def on_starting(server):
    # Samples of a previous run would be summed into this one's.
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.remove(os.path.join(directory, name))
