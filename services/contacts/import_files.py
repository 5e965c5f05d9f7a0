"""Where an import's files live (a folder an account, under
SANDESH_IMPORT_DIR) and how they are opened: uploads and rejected rows hold
addresses and names, so only this service's user may read them (the
rejected rows were once made world-readable)."""
from __future__ import annotations

import os

REJECTED_SUFFIX = ".rejected.csv"


def upload_path(import_dir: str, account_id: str, import_id: str) -> str:
    return os.path.join(import_dir, account_id, f"{import_id}.csv")


def rejected_path(import_dir: str, account_id: str, import_id: str) -> str:
    return os.path.join(import_dir, account_id, f"{import_id}{REJECTED_SUFFIX}")


def open_private(path: str, mode: str, **kwargs):
    """open(), but a file it creates is readable by this user only (0600)."""
    return open(path, mode, opener=lambda name, flags: os.open(name, flags, 0o600), **kwargs)
