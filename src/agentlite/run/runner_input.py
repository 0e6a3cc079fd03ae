"""The host's side of a live runner's input folder: follow-up messages and the ``_close`` sentinel.

Kept apart from the run itself so code that only talks to a running box (the queue, re-adoption)
needs no run machinery.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from agentlite.core.safefs import BoxDir


def input_folder(ipc_dir: Path) -> BoxDir:
    # The box may have swapped `input/` for a symlink to any host folder: open it without
    # following (UnsafePath then), never by path.
    return BoxDir.open(ipc_dir.parent, ipc_dir.name, "input", create=True)


def write_follow_up(ipc_dir: Path, text: str) -> Path:
    """Hand a follow-up message to a live runner (it watches the folder: at once, or within 500 ms
    where the filesystem does not report the write)."""
    name = f"{int(time.time() * 1000)}-{os.urandom(3).hex()}.json"
    with input_folder(ipc_dir) as folder:
        folder.write_atomic(name, json.dumps({"type": "message", "text": text}).encode())
    return ipc_dir / "input" / name


def request_close(ipc_dir: Path) -> None:
    """Ask the runner to end after its current turn."""
    with input_folder(ipc_dir) as folder:
        folder.write_atomic("_close", b"")
