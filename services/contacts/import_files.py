"""Where an import's files live (a folder an account, under
SANDESH_IMPORT_DIR) and how they are opened: uploads and rejected rows hold
addresses and names, so only this service's user may read them (the
rejected rows were once made world-readable)."""
from __future__ import annotations

import codecs
import os

REJECTED_SUFFIX = ".rejected.csv"


def upload_path(import_dir: str, account_id: str, import_id: str) -> str:
    return os.path.join(import_dir, account_id, f"{import_id}.csv")


def rejected_path(import_dir: str, account_id: str, import_id: str) -> str:
    return os.path.join(import_dir, account_id, f"{import_id}{REJECTED_SUFFIX}")


def open_private(path: str, mode: str, **kwargs):
    """open(), but a file it creates is readable by this user only (0600)."""
    return open(path, mode, opener=lambda name, flags: os.open(name, flags, 0o600), **kwargs)


_UTF16_BOMS = {codecs.BOM_UTF16_LE: "utf-16-le", codecs.BOM_UTF16_BE: "utf-16-be"}
_TRANSCODE_BYTES = 1024 * 1024


def as_utf8(path: str) -> None:
    """An upload in UTF-16 (Excel's "Unicode Text" and some exports, always
    with a byte order mark) rewritten as UTF-8 in place, a chunk at a time.
    The reader works on byte offsets and lines ending in one b"\\n", which
    UTF-16 has neither of: such a file failed whole, saying no column looked
    like an address."""
    with open(path, "rb") as source:
        encoding = _UTF16_BOMS.get(source.read(2))
    if encoding is None:
        return
    decode = codecs.getincrementaldecoder(encoding)(errors="replace").decode
    temporary = path + ".utf8"
    try:
        with open(path, "rb") as source, open_private(temporary, "wb") as target:
            source.seek(2)
            while chunk := source.read(_TRANSCODE_BYTES):
                target.write(decode(chunk).encode("utf-8"))
            target.write(decode(b"", final=True).encode("utf-8"))
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
