"""The in-box runner: one input on stdin, framed events on stdout, turns until ``_close``.

1. Read the whole input JSON from stdin; a bad one gives an ``error`` event and exit 1.
2. Run the first turn with the prompt (plus any follow-ups already waiting in the IPC input folder).
3. After each turn: a ``_close`` file ends the run; waiting follow-ups start the next turn at once;
   otherwise emit ``state idle`` and wait for the input folder (:mod:`agentlite.guest.runner._inbox`).
4. A failed turn emits one ``error`` event and the runner exits 1; a normal end exits 0.

It imports only what a turn needs: the stdlib wire format (:mod:`agentlite.run.wire`), its input
reader, and the one backend the input names (no pydantic, no host modules, and no asyncio: it does
one thing at a time, so plain blocking calls do). Every turn of a box runs in this one process, so a
follow-up costs no runner start.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from agentlite.core.box_env import ENV_IPC_INPUT, ENV_JOURNAL, ENV_SINGLE_TURN, ENV_WORKSPACE
from agentlite.guest.backends.base import BackendContext, TurnFailed
from agentlite.guest.backends.registry import make_backend
from agentlite.guest.runner._inbox import CLOSE_SENTINEL, Inbox, diag
from agentlite.guest.runner._input import InputError, parse_input
from agentlite.run.wire import (
    Event,
    error_event,
    frame,
    state_event,
)

SCHEDULED_PREFIX = (
    "[SCHEDULED TASK - The following message was sent automatically and is not coming directly "
    "from the user or group.]\n\n"
)


class _Output:
    """Where events go: the run's journal (when the host named one), then stdout.

    The journal is the path that survives the host: each frame is appended and handed to the kernel
    before stdout sees it, so a host that restarts reads on from where its predecessor stopped.
    Stdout is only the fast path: once the host's end of the pipe is gone, stdout and stderr are
    pointed at /dev/null and the turn goes on, writing the journal alone.
    """

    def __init__(self) -> None:
        self.journal: int | None = None
        self.stdout_gone = False

    def open_journal(self, path: str) -> None:
        # Append only, never through a symlink the agent may have planted in its IPC folder.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.journal = os.open(path, flags, 0o644)
        # Held for the runner's whole life: a restarted host asks the kernel whether the runner is
        # alive (the lock goes with the process, however it ends). Children do not inherit it.
        fcntl.flock(self.journal, fcntl.LOCK_EX)

    def write(self, data: bytes) -> None:
        if self.journal is not None:
            _write_all(self.journal, data)
        if self.stdout_gone:
            return
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except OSError:  # BrokenPipeError: the host died; the journal carries the run on
            self.stdout_gone = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.close(devnull)
            if self.journal is None:
                raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


OUTPUT = _Output()


def emit(event: Event) -> None:
    # UTF-8 bytes whatever the box's locale says (a C locale must not turn an emoji into a crash).
    OUTPUT.write(frame(event).encode())


def main() -> int:
    try:
        run_input = parse_input(sys.stdin.buffer.read())
    except InputError as exc:
        emit(error_event(f"Failed to parse input: {exc}"))
        return 1
    if journal := os.environ.get(ENV_JOURNAL):
        OUTPUT.open_journal(journal)
    inbox = Inbox(Path(os.environ.get(ENV_IPC_INPUT, "/workspace/ipc/input")))
    workspace = Path(os.environ.get(ENV_WORKSPACE) or os.getcwd())
    home = Path(os.environ.get("HOME", "/home/agent"))
    # A one-turn run (``agentlite run``) ends right after its turn instead of waiting for ``_close``.
    single_turn = os.environ.get(ENV_SINGLE_TURN) == "1"
    inbox.folder.mkdir(parents=True, exist_ok=True)
    (inbox.folder / CLOSE_SENTINEL).unlink(missing_ok=True)

    prompt = run_input.prompt
    if run_input.is_scheduled_task:
        prompt = SCHEDULED_PREFIX + prompt
    prompt = "\n".join([prompt, *inbox.drain()])
    session_id = run_input.session_id
    try:
        backend = make_backend(BackendContext(run_input, emit, workspace, home))
    except (ValueError, OSError) as exc:
        emit(error_event(str(exc), session_id))
        return 1
    try:
        while True:
            session_id = backend.run_turn(prompt, session_id)
            if single_turn or inbox.take_close():
                return 0
            inbox.watch()
            follow_ups = inbox.drain()
            if not follow_ups:
                emit(state_event("idle", reason="awaiting_input", session_id=session_id))
                while not follow_ups:
                    inbox.wait()
                    if inbox.take_close():
                        return 0
                    follow_ups = inbox.drain()
            prompt = "\n".join(follow_ups)
    except TurnFailed as exc:
        emit(error_event(str(exc), session_id))
        return 1
    except Exception as exc:
        diag(f"runner failed: {type(exc).__name__}: {exc}")
        emit(error_event(f"{type(exc).__name__}: {exc}", session_id))
        return 1
    finally:
        inbox.close()
        backend.close()
