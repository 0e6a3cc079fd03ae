"""Process identity that survives PID reuse (a pid plus its start time), bounded killing, and
finding processes by a marker in their environment."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from contextvars import ContextVar

import psutil

log = logging.getLogger("agentlite.procs")

#: In the environment of every host-side process of a sandbox box (its ``bwrap``, its network
#: helper): the box's state folder. Only our boxes carry it, so a box whose state was lost is found.
BOX_MARKER_ENV = "AGENTLITE_SANDBOX_BOX"


def start_time(pid: int) -> float | None:
    """The start time of ``pid`` in seconds since the epoch, or ``None`` when it is gone or a zombie."""
    if pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        # It exists; we just may not look at it. Its start time is still readable on Linux.
        try:
            return psutil.Process(pid).create_time()
        except psutil.Error:
            return None


def is_same_process(pid: int, started: float, tolerance: float = 0.5) -> bool:
    """True when ``pid`` is alive and started at ``started`` (so it is not a reused pid)."""
    actual = start_time(pid)
    return actual is not None and abs(actual - started) <= tolerance


def kill_and_wait(pids: list[int], timeout: float = 5.0, *, term_grace: float = 0.0) -> list[int]:
    """End every pid and return those still alive at the end; never waits longer than
    ``term_grace + 2 * timeout`` seconds.

    The escalation: SIGTERM and up to ``term_grace`` seconds to exit (skipped when 0: a box's init
    ignores SIGTERM from outside its pid namespace), then SIGKILL and up to ``timeout`` seconds, then
    SIGKILL once more and another ``timeout`` (a process in uninterruptible sleep dies only when it
    wakes), then give up with a logged error. Our own children among them are reaped on the way.
    """
    alive = list(pids)
    if term_grace > 0:
        _signal_all(alive, signal.SIGTERM)
        alive = _wait_gone(alive, term_grace)
    for _attempt in range(2):
        if not alive:
            return []
        _signal_all(alive, signal.SIGKILL)
        alive = _wait_gone(alive, timeout)
    if alive:
        log.error("processes %s survived SIGKILL for %.0f s; giving up on them", alive, 2 * timeout)
    return alive


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive:
        reap_children(alive)
        alive = [pid for pid in alive if start_time(pid) is not None]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.01)  # polling a condition with a deadline: there is no wait for a non-child
    return alive


def reap_children(pids: list[int]) -> None:
    """Collect the exit status of any of ``pids`` that are our exited children (no zombies left)."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


class _PassScans:
    """The scans of one pass, per (key, value prefix): each marked pid with its value and start time."""

    def __init__(self) -> None:
        self.scans: dict[tuple[str, str], dict[int, tuple[str, float]]] = {}
        #: False once the pass ended: a task it started that lives on scans for itself again.
        self.open = True


#: The pass in progress (:func:`one_scan_per_pass`). A context variable: a pass's own task and
#: the threads it hands work to share it; another task's pass, or a call outside any, never sees it.
_PASS: ContextVar[_PassScans | None] = ContextVar("agentlite_marked_scans", default=None)


@contextlib.contextmanager
def one_scan_per_pass() -> Iterator[None]:
    """Inside, :func:`processes_marked` with ``reuse=True`` scans /proc once per key and prefix;
    later calls answer from that scan (less the processes that ended since). For one cleanup pass,
    whose steps each looked for the same marked processes."""
    scans = _PassScans()
    token = _PASS.set(scans)
    try:
        yield
    finally:
        scans.open = False
        _PASS.reset(token)


def processes_marked(key: str, value_prefix: str, *, reuse: bool = False) -> dict[int, str]:
    """Live processes whose environment holds ``key=<value starting with value_prefix>``, as
    ``{pid: value}``. Processes we may not inspect (other users') are skipped.

    ``reuse``: inside :func:`one_scan_per_pass`, the pass's scan (a process started since is not
    in it: for a caller that needs it, leave ``reuse`` off)."""
    current = _PASS.get() if reuse else None
    scans = current.scans if current is not None and current.open else None
    if scans is not None and (key, value_prefix) in scans:
        return {
            pid: value
            for pid, (value, started) in scans[(key, value_prefix)].items()
            if is_same_process(pid, started)  # never a pid reused since the scan
        }
    found = _scan_marked(key, value_prefix)
    if scans is not None:
        scans[(key, value_prefix)] = found
    return {pid: value for pid, (value, _) in found.items()}


def _scan_marked(key: str, value_prefix: str) -> dict[int, tuple[str, float]]:
    needle = f"{key}=".encode()
    found: dict[int, tuple[str, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item.startswith(needle):
                value = item[len(needle) :].decode(errors="replace")
                if value.startswith(value_prefix) and (started := start_time(int(entry.name))) is not None:
                    found[int(entry.name)] = (value, started)
                break
    return found
