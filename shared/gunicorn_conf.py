"""gunicorn settings shared by the web services (`-c python:shared.gunicorn_conf`)."""
import os

from prometheus_client import multiprocess

workers = int(os.environ.get("SANDESH_WEB_WORKERS", "1"))
threads = int(os.environ.get("SANDESH_WEB_THREADS", "4"))
worker_class = "gthread" if threads > 1 else "sync"
timeout = 60
graceful_timeout = 30
keepalive = 5
accesslog = None  # request logs come from the app, without personal data
loglevel = "warning"


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
