"""One BoxLite home per host process, and how other processes judge and reach those homes.

BoxLite lets one runtime use a home folder at a time (an exclusive ``flock`` on ``<home>/.lock``,
held while the ``Boxlite`` object lives). So each AgentLite host opens its own home::

    <agentlite home>/boxlite/<host id>/                  BoxLite's files and its .lock
    <agentlite home>/boxlite/<host id>/agentlite-state.json   who the host is, its boxes (refreshed)
    <agentlite home>/boxlite/<host id>/agentlite-requests/    removal requests from other processes

BoxLite's lock is the host's lease: the kernel drops it however the process dies. Another process
never opens a locked home; it reads the state file instead, and asks for removals with a request
file. A home whose lock is free belongs to a dead host and may be opened, emptied and deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boxlite
from pydantic import BaseModel, ConfigDict, ValidationError

from agentlite.box.ownership import (
    STALE_AFTER,
    Verdict,
    flock_held,
    machine_boot_id,
    process_boot_id,
    safe_record_name,
)
from agentlite.core.atomic import create_atomic, write_atomic
from agentlite.core.clock import now_iso
from agentlite.core.errors import RuntimeUnavailable

log = logging.getLogger("agentlite.box.boxlite")

HOMES_DIR = "boxlite"
LOCK_FILE = ".lock"  # BoxLite's own lock file in its home
STATE_FILE = "agentlite-state.json"
REQUESTS_DIR = "agentlite-requests"
# A host creates its home an instant before BoxLite locks it and it writes its state file.
STARTING_GRACE = 10.0
_BUSY_TEXT = "Another BoxliteRuntime is already using directory"


class StateBox(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    state: str


class HostState(BaseModel):
    """What a host publishes about itself and its BoxLite home (``agentlite-state.json``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    host_id: str
    pid: int
    boot_id: str
    machine_boot_id: str
    started_at: str
    updated_at: str
    boxes: list[StateBox] = []

    def age(self, now: float) -> float | None:
        try:
            return now - _parse_iso(self.updated_at)
        except ValueError:
            return None


def _parse_iso(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def homes_root(root: Path) -> Path:
    """The folder holding every host's BoxLite home under the agentlite home ``root``."""
    return Path(root).resolve() / HOMES_DIR


def new_host_id() -> str:
    """Unique per process and start: ``<pid>-<start ms>-<random>``."""
    pid = os.getpid()
    boot = process_boot_id(pid) or f"{pid}:0"
    return f"{boot.replace(':', '-')}-{secrets.token_hex(3)}"


def host_homes(root: Path) -> list[Path]:
    base = homes_root(root)
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))


def lock_held(home: Path) -> bool:
    """Whether some process holds BoxLite's lock on ``home`` (probed without blocking)."""
    try:
        return flock_held(Path(home) / LOCK_FILE)
    except FileNotFoundError:
        return False


def read_state(home: Path) -> HostState | None:
    try:
        return HostState.model_validate_json((Path(home) / STATE_FILE).read_bytes())
    except (FileNotFoundError, NotADirectoryError, ValidationError):
        return None


def write_state(home: Path, state: HostState) -> None:
    write_atomic(Path(home) / STATE_FILE, state.model_dump_json(indent=2).encode(), fsync=False)


@dataclass(frozen=True)
class HomeJudgement:
    """A verdict on the host of one BoxLite home, with its published state and a reason."""

    home: Path
    verdict: Verdict
    reason: str
    state: HostState | None

    @property
    def pid(self) -> int | None:
        return None if self.state is None else self.state.pid


def judge_home(home: Path, now: float | None = None) -> HomeJudgement:
    """Decide whether the host of ``home`` is alive, from BoxLite's lock and its state file."""
    now = time.time() if now is None else now
    state = read_state(home)
    held = lock_held(home)
    if state is None:
        try:
            young = now - Path(home).stat().st_mtime < STARTING_GRACE
        except FileNotFoundError:
            young = False
        if held or young:
            return HomeJudgement(home, Verdict.LIVE, "host starting (no state file yet)", None)
        return HomeJudgement(home, Verdict.DEAD, "no host state and BoxLite home unlocked", None)
    if state.machine_boot_id != machine_boot_id():
        return HomeJudgement(home, Verdict.DEAD, "host state is from an earlier machine boot", state)
    if not held:
        return HomeJudgement(
            home, Verdict.DEAD, f"host pid {state.pid} gone (its BoxLite home is unlocked)", state
        )
    if process_boot_id(state.pid) != state.boot_id:
        # Locked, but not by its host: another process is cleaning it up right now.
        return HomeJudgement(home, Verdict.LIVE, f"host pid {state.pid} gone, home being cleaned up", state)
    age = state.age(now)
    if age is not None and age > STALE_AFTER:
        return HomeJudgement(
            home, Verdict.STALE, f"host pid {state.pid} holds its BoxLite home, state {age:.0f} s old", state
        )
    return HomeJudgement(home, Verdict.LIVE, f"host pid {state.pid} alive (BoxLite home locked)", state)


class HomeBusy(RuntimeUnavailable):
    """A BoxLite home stayed locked by another process for longer than we may wait."""


def open_home(home: Path, *, wait: float = 5.0) -> boxlite.Boxlite:
    """Open BoxLite on ``home``, waiting at most ``wait`` seconds while another process holds it.

    Raises :class:`HomeBusy` naming the holder (the pid in the home's state file) and the fix.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            return boxlite.Boxlite(boxlite.Options(home_dir=str(home)))
        except boxlite.BoxliteError as exc:
            if _BUSY_TEXT not in str(exc) or time.monotonic() >= deadline:
                if _BUSY_TEXT not in str(exc):
                    raise
                raise _busy(home, wait) from exc
        time.sleep(0.05)


def _busy(home: Path, wait: float) -> HomeBusy:
    state = read_state(home)
    if state is None:
        holder = "another process (no host state in it)"
    elif process_boot_id(state.pid) == state.boot_id:
        holder = f"host pid {state.pid} (started {state.started_at})"
    else:
        holder = f"a process cleaning up after host pid {state.pid}"
    return HomeBusy(
        "boxlite",
        f"BoxLite home {home} is held by {holder}; waited {wait:g} s",
        "stop that process or let it finish, then retry; `agentlite boxes` lists its boxes without "
        "opening its home, and `agentlite cleanup --include-live` asks a live host to remove them",
    )


def delete_home(home: Path, *, wait: float = 0.0) -> bool:
    """Delete a home nobody holds (under our own lock on it, so nobody opens it meanwhile),
    waiting at most ``wait`` seconds for a holder to let go."""
    try:
        fd = os.open(Path(home) / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        return False
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return False
        time.sleep(0.02)
    try:
        shutil.rmtree(home, ignore_errors=True)
    finally:
        os.close(fd)
    return not Path(home).exists()


# -- removal requests ---------------------------------------------------------------------------


def request_path(home: Path, box_name: str) -> Path:
    return Path(home) / REQUESTS_DIR / f"{safe_record_name(box_name)}.remove"


def request_removal(home: Path, box_name: str) -> None:
    """Ask the host of ``home`` to remove ``box_name`` (the host polls its requests folder)."""
    path = request_path(home, box_name)
    path.parent.mkdir(exist_ok=True)
    with contextlib.suppress(FileExistsError):
        create_atomic(path, box_name.encode(), fsync=False)


def read_requests(home: Path) -> Iterator[tuple[Path, str]]:
    folder = Path(home) / REQUESTS_DIR
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.remove")):
        try:
            yield path, path.read_text().strip()
        except FileNotFoundError:
            continue


def new_state(host_id: str, boxes: list[StateBox], started_at: str) -> HostState:
    pid = os.getpid()
    return HostState(
        host_id=host_id,
        pid=pid,
        boot_id=process_boot_id(pid) or f"{pid}:0",
        machine_boot_id=machine_boot_id(),
        started_at=started_at,
        updated_at=now_iso(),
        boxes=boxes,
    )
