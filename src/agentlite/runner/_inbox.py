"""The runner's IPC input folder: follow-up messages and the ``_close`` request from the host.

Follow-ups are ``*.json`` files ``{"type": "message", "text": ...}``, taken in name order and
deleted once read. While idle the runner waits on inotify, so a follow-up starts its turn within a
millisecond or so of landing; where the folder's filesystem does not report the host's writes
(a VM share), the 500 ms poll behind it still finds them.
"""

from __future__ import annotations

import asyncio
import json
import os
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
        self._changed: asyncio.Event | None = None

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
        if self._changed is not None:
            return
        self._changed = asyncio.Event()
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
        asyncio.get_running_loop().add_reader(fd, self._on_event)

    def _on_event(self) -> None:
        assert self._fd is not None and self._changed is not None
        try:
            while os.read(self._fd, 65536):
                pass
        except BlockingIOError:
            pass
        self._changed.set()

    async def wait(self) -> None:
        """Until a file lands in the folder, or the next poll is due."""
        assert self._changed is not None, "watch() first"
        try:
            await asyncio.wait_for(self._changed.wait(), POLL_INTERVAL)
        except TimeoutError:
            pass
        self._changed.clear()

    def close(self) -> None:
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
