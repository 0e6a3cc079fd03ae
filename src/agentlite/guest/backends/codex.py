"""The ``codex`` CLI: ``codex exec --json``, one process per turn, resumed by thread id.

Codex prints many ``agent_message`` items in a turn (plans, progress). The latest one is held back
and sent as the single result only after the process exited 0; a non-zero exit is an error and no
result at all.
"""

from __future__ import annotations

from typing import Any

from agentlite.guest.backends.base import BackendContext, StderrTail, TurnFailed, json_lines, start_cli, tail
from agentlite.run.wire import Event, result_event, sdk_message_event, state_event, usage_event


def codex_args(model: str | None, session_id: str | None) -> list[str]:
    """Arguments after ``codex``: a new thread, or ``exec resume <thread id>``; prompt on stdin."""
    common = ["--json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox"]
    model_args = ["--model", model.strip()] if model and model.strip() else []
    if session_id:
        return ["exec", "resume", *model_args, *common, session_id, "-"]
    return ["exec", *model_args, *common, "-"]


def _count(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def codex_usage(usage: dict[str, Any], model: str | None) -> Event:
    """``turn.completed.usage``: the turn's sum over its model calls; OpenAI counts cached input
    inside ``input_tokens``, so the fresh input is the difference."""
    cached = _count(usage, "cached_input_tokens")
    return usage_event(max(0, _count(usage, "input_tokens") - cached), _count(usage, "output_tokens"), cached,
                       model, cache_write_tokens=_count(usage, "cache_write_input_tokens"))  # fmt: skip


class CodexBackend:
    def __init__(self, context: BackendContext) -> None:
        self.ctx = context
        self.ctx.write_codex_config()

    def run_turn(self, prompt: str, session_id: str | None) -> str | None:
        emit = self.ctx.emit
        emit(state_event("active", reason="query_started", session_id=session_id))
        proc = start_cli(
            ["codex", *codex_args(self.ctx.config.model, session_id)], self.ctx, self.ctx.codex_env()
        )
        assert proc.stdin and proc.stdout and proc.stderr
        stderr = StderrTail(proc.stderr)
        try:
            proc.stdin.write(prompt.encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass  # codex is already gone: its exit code and stderr say why
        latest_text: str | None = None
        failure: str | None = None
        for event in json_lines(proc.stdout, "Codex"):
            kind = str(event.get("type", ""))
            item = event.get("item") if isinstance(event.get("item"), dict) else {}
            if kind == "thread.started" and isinstance(event.get("thread_id"), str):
                session_id = event["thread_id"]
            subtype = str(item.get("type")) if kind in ("item.started", "item.completed") and item else None
            emit(sdk_message_event(kind, subtype, event))
            if (
                kind == "item.completed"
                and item.get("type") == "agent_message"
                and isinstance(item.get("text"), str)
            ):
                latest_text = item["text"]
            elif kind == "turn.completed" and isinstance(event.get("usage"), dict):
                emit(codex_usage(event["usage"], self.ctx.config.model))
            elif kind == "turn.failed":
                failure = str((event.get("error") or {}).get("message", "turn failed"))
            elif kind == "error" and isinstance(event.get("message"), str):
                failure = event["message"]
        code = proc.wait()
        err = stderr.text()
        proc.stdout.close()
        proc.stderr.close()
        if code != 0:
            cause = failure or tail(err, 300) or "no output"
            raise TurnFailed(f"Codex exited with code {code}: {cause}")
        if latest_text is not None:
            emit(result_event(latest_text, session_id))
        return session_id

    def close(self) -> None:
        return None
