"""Reading a run's journal: the frames the in-box runner appended to ``<ipc>/journal/<run>.jsonl``.

The runner writes every framed event there before stdout (:mod:`agentlite.guest.runner._loop`), so a host
that restarts can replay a run from the offset the ledger recorded and follow it to its final. The
file lives in a box-writable folder: it is opened without following symlinks, and what it holds is
parsed like stdout (a malformed frame is skipped, never trusted).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import Protocol, TypeVar

from agentlite.core.safefs import UnsafePath
from agentlite.run.protocol import ErrorEvent, Event, FrameParser, ResultEvent

#: The journal's folder inside a run's IPC folder.
JOURNAL_DIR = "journal"
#: The run's IPC folder as the box sees it (mounted at /workspace/ipc).
GUEST_IPC_DIR = PurePosixPath("/workspace/ipc")
#: The journal's folder as the box sees it.
GUEST_JOURNAL_DIR = str(GUEST_IPC_DIR / JOURNAL_DIR)

_Folder = TypeVar("_Folder", bound=PurePath)


def journal_in(ipc_dir: _Folder, name: str) -> _Folder:
    """The journal file ``name`` in the IPC folder ``ipc_dir`` (a host path, or the box's view):
    the one rule for where journals live."""
    return ipc_dir / JOURNAL_DIR / name


def journal_path(ipc_dir: Path, run_id: str) -> Path:
    """Where the run ``run_id`` journals, in its group's IPC folder ``ipc_dir``."""
    return journal_in(ipc_dir, journal_name(run_id))


def journal_name(run_id: str) -> str:
    """The journal's file name in the run's IPC folder (``journal/<name>``)."""
    return f"{run_id}.jsonl"


class JournalledRun(Protocol):
    """What locating a run's journal needs of its ledger record."""

    @property
    def run_id(self) -> str: ...
    @property
    def group_folder(self) -> str: ...
    @property
    def journal(self) -> str | None: ...


def journal_of(ipc_root: Path, run: JournalledRun) -> Path:
    """The journal holding ``run``'s events (``ipc_root``: the agent's IPC folder of all groups)."""
    return journal_in(ipc_root / run.group_folder, run.journal or journal_name(run.run_id))


def guest_journal_path(run_id: str) -> str:
    """Where the runner in the box journals the run ``run_id`` (its own view of the IPC folder)."""
    return str(journal_in(GUEST_IPC_DIR, journal_name(run_id)))


@dataclass(frozen=True)
class JournalEntry:
    event: Event
    #: The byte offset just past this event's frame (where a replay after it starts).
    end: int


def read_journal(path: Path, offset: int = 0) -> list[JournalEntry]:
    """Every complete frame from ``offset`` on (a frame still being written is left for later)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(path, "the journal is a symlink; refusing to follow it") from exc
        raise
    with os.fdopen(fd, "rb") as journal:  # closes fd
        journal.seek(offset)
        data = journal.read()  # one buffer, not a bytes object grown chunk by chunk
    parser = FrameParser()
    entries: list[JournalEntry] = []
    position = offset
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # the runner is mid-write
        position += len(line)
        for event in parser.feed(line.decode(errors="replace")):
            entries.append(JournalEntry(event, position))
    return entries


def runner_alive(path: Path) -> bool:
    """Whether the runner writing this journal still lives: it holds an exclusive lock on the file
    for its whole life, and the kernel drops that lock however the runner ends."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops our shared lock if we got it
    return False


def is_final(event: Event) -> bool:
    return isinstance(event, ResultEvent | ErrorEvent)


async def follow_journal(path: Path, offset: int, *, alive: Callable[[], bool], poll: float = 0.1,
                         deadline: float | None = None) -> list[JournalEntry]:  # fmt: skip
    """Read from ``offset`` until a final (result or error) appears, ``alive()`` turns False (one
    last read then), or ``deadline`` (monotonic) passes. Returns every entry read."""
    entries: list[JournalEntry] = []
    while True:
        fresh = read_journal(path, offset)
        entries += fresh
        if fresh:
            offset = fresh[-1].end
        if any(is_final(e.event) for e in fresh):
            return entries
        if not alive():
            entries += read_journal(path, offset)
            return entries
        if deadline is not None and time.monotonic() > deadline:
            return entries
        await asyncio.sleep(poll)  # the journal is a plain file: polled, at most `poll` behind
