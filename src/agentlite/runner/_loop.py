"""The in-box runner: one input on stdin, framed events on stdout, turns until ``_close``.

1. Read the whole input JSON from stdin; a bad one gives an ``error`` event and exit 1.
2. Run the first turn with the prompt (plus any follow-ups already waiting in the IPC input folder).
3. After each turn: a ``_close`` file ends the run; waiting follow-ups start the next turn at once;
   otherwise emit ``state idle`` and wait for the input folder (:mod:`agentlite.runner._inbox`).
4. A failed turn emits one ``error`` event and the runner exits 1; a normal end exits 0.

It imports only what a turn needs: the stdlib wire format (:mod:`agentlite._wire`), its input
reader, and the one backend the input names (no pydantic, no host modules, and no asyncio: it does
one thing at a time, so plain blocking calls do). Every turn of a box runs in this one process, so a
follow-up costs no runner start.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from agentlite._wire import Event, error_event, frame, state_event
from agentlite.backends.base import BackendContext, TurnFailed
from agentlite.backends.registry import make_backend
from agentlite.runner._inbox import CLOSE_SENTINEL, Inbox, diag
from agentlite.runner._input import InputError, parse_input

SCHEDULED_PREFIX = (
    "[SCHEDULED TASK - The following message was sent automatically and is not coming directly "
    "from the user or group.]\n\n"
)


def emit(event: Event) -> None:
    # UTF-8 bytes whatever the box's locale says (a C locale must not turn an emoji into a crash).
    sys.stdout.buffer.write(frame(event).encode())
    sys.stdout.buffer.flush()


def main() -> int:
    try:
        run_input = parse_input(sys.stdin.buffer.read())
    except InputError as exc:
        emit(error_event(f"Failed to parse input: {exc}"))
        return 1
    inbox = Inbox(Path(os.environ.get("AGENTLITE_IPC_INPUT", "/workspace/ipc/input")))
    workspace = Path(os.environ.get("AGENTLITE_WORKSPACE") or os.getcwd())
    home = Path(os.environ.get("HOME", "/home/agent"))
    # A one-turn run (``agentlite run``) ends right after its turn instead of waiting for ``_close``.
    single_turn = os.environ.get("AGENTLITE_SINGLE_TURN") == "1"
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
