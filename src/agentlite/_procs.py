"""Process identity that survives PID reuse: a pid plus the process's start time."""

from __future__ import annotations

import os
import signal
import time

import psutil


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
        return psutil.Process(pid).create_time()


def is_same_process(pid: int, started: float, tolerance: float = 0.5) -> bool:
    """True when ``pid`` is alive and started at ``started`` (so it is not a reused pid)."""
    actual = start_time(pid)
    return actual is not None and abs(actual - started) <= tolerance


def kill_and_wait(pids: list[int], timeout: float = 5.0) -> list[int]:
    """SIGKILL every pid, reap our own children among them, and return those still alive after
    ``timeout`` seconds."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive:
        reap_children(alive)
        alive = [pid for pid in alive if start_time(pid) is not None]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return alive


def reap_children(pids: list[int]) -> None:
    """Collect the exit status of any of ``pids`` that are our exited children (no zombies left)."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
