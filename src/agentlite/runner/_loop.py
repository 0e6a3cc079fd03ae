"""The in-box runner: one input on stdin, framed events on stdout, turns until ``_close``.

1. Read the whole input JSON from stdin; a bad one gives an ``error`` event and exit 1.
2. Run the first turn with the prompt (plus any follow-ups already waiting in the IPC input folder).
3. After each turn: a ``_close`` file ends the run; waiting follow-ups start the next turn at once;
   otherwise emit ``state idle`` and poll the input folder every 500 ms.
4. A failed turn emits one ``error`` event and the runner exits 1; a normal end exits 0.

Follow-ups are ``*.json`` files ``{"type": "message", "text": ...}`` in the input folder, taken in
name order and deleted once read.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from pydantic import BaseModel, ValidationError

from agentlite._protocol import ErrorEvent, RunnerInput, StateEvent, encode_frame
from agentlite.backends.base import BackendContext, TurnFailed, make_backend

POLL_INTERVAL = 0.5
SCHEDULED_PREFIX = (
    "[SCHEDULED TASK - The following message was sent automatically and is not coming directly "
    "from the user or group.]\n\n"
)
CLOSE_SENTINEL = "_close"


def emit(event: BaseModel) -> None:
    sys.stdout.write(encode_frame(event))
    sys.stdout.flush()


def diag(message: str) -> None:
    print(f"[agent-runner] {message}", file=sys.stderr, flush=True)


def drain_inputs(folder: Path) -> list[str]:
    """Texts of the waiting follow-up files, oldest name first; each file is deleted once read."""
    texts = []
    try:
        names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".json"))
    except FileNotFoundError:
        return []
    for name in names:
        path = folder / name
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


def take_close(folder: Path) -> bool:
    path = folder / CLOSE_SENTINEL
    if path.exists():
        path.unlink(missing_ok=True)
        return True
    return False


async def main() -> int:
    raw = sys.stdin.read()
    try:
        run_input = RunnerInput.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in exc.errors())
        emit(ErrorEvent(error=f"Failed to parse input: {problems}"))
        return 1
    inputs = Path(os.environ.get("AGENTLITE_IPC_INPUT", "/workspace/ipc/input"))
    workspace = Path(os.environ.get("AGENTLITE_WORKSPACE") or os.getcwd())
    home = Path(os.environ.get("HOME", "/home/agent"))
    # A one-turn run (``agentlite run``) ends right after its turn instead of waiting for ``_close``.
    single_turn = os.environ.get("AGENTLITE_SINGLE_TURN") == "1"
    inputs.mkdir(parents=True, exist_ok=True)
    (inputs / CLOSE_SENTINEL).unlink(missing_ok=True)

    prompt = run_input.prompt
    if run_input.is_scheduled_task:
        prompt = SCHEDULED_PREFIX + prompt
    prompt = "\n".join([prompt, *drain_inputs(inputs)])
    session_id = run_input.session_id
    try:
        backend = make_backend(BackendContext(run_input, emit, workspace, home))
    except (ValueError, OSError) as exc:
        emit(ErrorEvent(error=str(exc), new_session_id=session_id))
        return 1
    try:
        while True:
            session_id = await backend.run_turn(prompt, session_id)
            if single_turn or take_close(inputs):
                return 0
            follow_ups = drain_inputs(inputs)
            if not follow_ups:
                emit(StateEvent(state="idle", reason="awaiting_input", new_session_id=session_id))
                while not follow_ups:
                    await asyncio.sleep(POLL_INTERVAL)
                    if take_close(inputs):
                        return 0
                    follow_ups = drain_inputs(inputs)
            prompt = "\n".join(follow_ups)
    except TurnFailed as exc:
        emit(ErrorEvent(error=str(exc), new_session_id=session_id))
        return 1
    except Exception as exc:
        diag(f"runner failed: {type(exc).__name__}: {exc}")
        emit(ErrorEvent(error=f"{type(exc).__name__}: {exc}", new_session_id=session_id))
        return 1
    finally:
        await backend.aclose()
