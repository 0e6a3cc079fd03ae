"""Atomic file publication: readers see the old content or the new, never a partial file."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path


def _temp_sibling(path: Path) -> Path:
    # A hidden sibling in the same folder, so the final rename never crosses a file system.
    return path.with_name(f".{path.name}.{os.getpid()}.{int(time.time() * 1000)}.{secrets.token_hex(4)}.tmp")


def _write_temp(path: Path, data: bytes, *, fsync: bool, mode: int) -> Path:
    tmp = _temp_sibling(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def write_atomic(path: Path, data: bytes, *, fsync: bool = True, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` by writing a temp sibling and renaming it over the target."""
    tmp = _write_temp(path, data, fsync=fsync, mode=mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_atomic(path: Path, data: bytes, *, fsync: bool = True, mode: int = 0o644) -> None:
    """Publish ``data`` at ``path`` only if nothing is there yet (raises FileExistsError).

    A hard link publishes the complete temp file under the final name in one step and, unlike
    rename, refuses to replace an existing file.
    """
    tmp = _write_temp(path, data, fsync=fsync, mode=mode)
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
