"""The runner's IPC input folder: follow-up messages and the ``_close`` request from the host.

Follow-ups are ``*.json`` files ``{"type": "message", "text": ...}``, taken in name order and
deleted once read. While idle the runner waits on inotify, so a follow-up starts its turn within a
millisecond or so of landing; where the folder's filesystem does not report the host's writes
(a VM share), the 500 ms poll behind it still finds them.
"""

from __future__ import annotations

import json
import os
import select
import sys
from pathlib import Path

CLOSE_SENTINEL = "_close"
POLL_INTERVAL = 0.5

# <sys/inotify.h>
_IN_CLOSE_WRITE = 0x8
_IN_MOVED_TO = 0x80
_IN_CREATE = 0x100
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000


def diag(message: str) -> None:
    print(f"[agent-runner] {message}", file=sys.stderr, flush=True)


class Inbox:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd: int | None = None
        self._watching = False

    def drain(self) -> list[str]:
        """Texts of the waiting follow-up files, oldest name first; each file is deleted once read."""
        texts = []
        try:
            names = sorted(p.name for p in os.scandir(self.folder) if p.name.endswith(".json"))
        except FileNotFoundError:
            return []
        for name in names:
            path = self.folder / name
            try:
                data = json.loads(path.read_text())
                if data.get("type") == "message" and isinstance(data.get("text"), str) and data["text"]:
                    texts.append(data["text"])
                else:
                    diag(f"ignored input file {name}: not a message")
            except (OSError, ValueError, AttributeError) as exc:
                diag(f"bad input file {name}: {exc}")
            path.unlink(missing_ok=True)
        return texts

    def take_close(self) -> bool:
        path = self.folder / CLOSE_SENTINEL
        if path.exists():
            path.unlink(missing_ok=True)
            return True
        return False

    def watch(self) -> None:
        """Start reporting new files (once; call before the drain that precedes a wait, so nothing
        that lands in between is missed)."""
        if self._watching:
            return
        self._watching = True
        try:
            import ctypes  # only once the runner first waits for a follow-up

            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if fd < 0:
                raise OSError(ctypes.get_errno(), "inotify_init1 failed")
            if (
                libc.inotify_add_watch(
                    fd, os.fsencode(self.folder), _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE
                )
                < 0
            ):
                os.close(fd)
                raise OSError(ctypes.get_errno(), "inotify_add_watch failed")
        except (OSError, AttributeError) as exc:  # no inotify here: the poll alone finds new files
            diag(f"input folder not watched ({exc}); polling every {POLL_INTERVAL:g} s")
            return
        self._fd = fd

    def wait(self) -> None:
        """Until a file lands in the folder, or the next poll is due."""
        assert self._watching, "watch() first"
        if self._fd is None:
            select.select([], [], [], POLL_INTERVAL)
            return
        ready, _, _ = select.select([self._fd], [], [], POLL_INTERVAL)
        if ready:
            try:
                while os.read(self._fd, 65536):
                    pass  # the events only say "something changed": drain() looks at the folder
            except BlockingIOError:
                pass

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
