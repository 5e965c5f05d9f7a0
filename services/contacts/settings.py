"""The contacts service's own settings (on top of shared.config.COMMON)."""
import os

from shared.config import POSITIVE_INT, Setting


def _default_import_dir() -> str:
    return os.path.join(os.environ.get("SANDESH_RUN_DIR") or "/tmp", "imports")


SETTINGS = [
    # Key of the address hashes kept by the suppression list (shared.pii.email_hash).
    # The default is for the local stack only; production sets a secret.
    Setting("SANDESH_PII_SALT", secret=True, default="sandesh-local-dev-pii-salt"),
    Setting("SANDESH_IMPORT_DIR", default=_default_import_dir()),
    Setting("SANDESH_MAX_UPLOAD_BYTES", POSITIVE_INT, default=200 * 1024 * 1024),
    Setting("SANDESH_IMPORT_BATCH_ROWS", POSITIVE_INT, default=1000),
    Setting("SANDESH_IMPORT_POLL_SECONDS", float, default=1.0),
    Setting("SANDESH_IMPORT_LEASE_SECONDS", POSITIVE_INT, default=60),
    # Campaign fan-outs a worker runs at once (services/contacts/fanout.py):
    # a small campaign need not wait behind a million-recipient one.
    Setting("SANDESH_FANOUT_THREADS", POSITIVE_INT, default=2),
    Setting("SANDESH_FANOUT_LEASE_SECONDS", POSITIVE_INT, default=30),
    # How often an idle fan-out thread looks for a dead worker's fan-out
    # (the main loop wakes it at once for new work).
    Setting("SANDESH_FANOUT_POLL_SECONDS", float, default=2.0),
]
