"""The ``claude`` CLI (Claude Code) in stream-json mode, one process kept across turns.

Each turn writes one user message to the CLI's stdin and reads its stream until the turn's
``result`` message: that is the single result of the turn (an ``is_error`` result is an error).
The process lives on for the next turn, so a run keeps one Claude session; if it dies it is
restarted with ``--resume <session id>``.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from agentlite.guest.backends.base import BackendContext, StderrTail, TurnFailed, json_lines, start_cli, tail
from agentlite.run.wire import Event, result_event, sdk_message_event, state_event, usage_event

#: Seconds the CLI gets to finish after its stdin is closed, before it is killed.
CLOSE_TIMEOUT = 10.0


def _count(usage: dict[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def claude_call_usage(event: dict[str, Any], seen: set[str]) -> Event | None:
    """One model call's usage from its first ``assistant`` message (claude sends one per content
    block, all with the call's message id and usage); ``None`` for a repeat or an error message."""
    message = event.get("message")
    if not isinstance(message, dict) or event.get("error"):
        return None
    call_id, usage = message.get("id"), message.get("usage")
    if not isinstance(call_id, str) or call_id in seen or not isinstance(usage, dict):
        return None
    seen.add(call_id)
    model = message.get("model") if isinstance(message.get("model"), str) else None
    return usage_event(_count(usage, "input_tokens"), _count(usage, "output_tokens"),
                       _count(usage, "cache_read_input_tokens"), model,
                       cache_write_tokens=_count(usage, "cache_creation_input_tokens"), scope="call")  # fmt: skip


def claude_turn_usage(result: dict[str, Any], configured_model: str | None) -> Event:
    """The turn's total from its ``result``: tokens, the cost claude computed, and the model that
    used the most tokens (the turn's model when several ran)."""
    usage = result.get("usage") if isinstance(result.get("usage"), dict) else {}
    cost = result.get("total_cost_usd")
    per_model = result.get("modelUsage") if isinstance(result.get("modelUsage"), dict) else {}

    def weight(item: tuple[str, Any]) -> tuple[int, str]:
        counts = item[1] if isinstance(item[1], dict) else {}
        return (_count(counts, "inputTokens") + _count(counts, "outputTokens"), item[0])

    model = max(per_model.items(), key=weight)[0].split("[", 1)[0] if per_model else configured_model
    return usage_event(_count(usage, "input_tokens"), _count(usage, "output_tokens"),
                       _count(usage, "cache_read_input_tokens"), model,
                       cache_write_tokens=_count(usage, "cache_creation_input_tokens"),
                       cost_usd=float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else None)  # fmt: skip


class ClaudeCodeBackend:
    def __init__(self, context: BackendContext) -> None:
        self.ctx = context
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: StderrTail | None = None

    def _argv(self, session_id: str | None) -> list[str]:
        argv = ["claude", "-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose",
                "--dangerously-skip-permissions"]  # fmt: skip
        if self.ctx.config.model:
            argv += ["--model", self.ctx.config.model]
        if session_id:
            argv += ["--resume", session_id]
        if self.ctx.input.mcp_servers:
            servers = {name: s.as_dict() for name, s in self.ctx.input.mcp_servers.items()}
            argv += ["--mcp-config", json.dumps({"mcpServers": servers})]
        return argv

    def _start(self, session_id: str | None) -> subprocess.Popen[bytes]:
        proc = start_cli(self._argv(session_id), self.ctx, self.ctx.claude_env())
        assert proc.stderr is not None
        self._stderr = StderrTail(proc.stderr)
        return proc

    def run_turn(self, prompt: str, session_id: str | None) -> str | None:
        emit = self.ctx.emit
        emit(state_event("active", reason="query_started", session_id=session_id))
        if self._proc is None or self._proc.poll() is not None:
            self._proc = self._start(session_id)
        proc = self._proc
        assert proc.stdin and proc.stdout
        message = {"type": "user", "message": {"role": "user", "content": prompt}}
        try:
            proc.stdin.write((json.dumps(message) + "\n").encode())
            proc.stdin.flush()
        except BrokenPipeError:
            pass  # it died: reading its stdout ends at once, and the exit code says why
        calls_seen: set[str] = set()
        for event in json_lines(proc.stdout, "Claude"):
            kind = str(event.get("type", ""))
            subtype = event.get("subtype") if kind == "system" else None
            emit(sdk_message_event(kind, subtype, event))
            if isinstance(event.get("session_id"), str):
                session_id = event["session_id"]
            if kind == "assistant":
                call = claude_call_usage(event, calls_seen)
                if call is not None:
                    emit(call)  # the host can stop the box on it before the turn ends
            if kind != "result":
                continue
            emit(claude_turn_usage(event, self.ctx.config.model))
            if event.get("is_error"):
                raise TurnFailed(f"Claude Code failed: {event.get('result') or event.get('subtype')}")
            text = event.get("result")
            emit(result_event(text if isinstance(text, str) else None, session_id))
            return session_id
        code = proc.wait()
        stderr = self._stderr.text() if self._stderr is not None else ""
        raise TurnFailed(f"Claude Code exited with code {code}: {tail(stderr, 300)}")

    def close(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        assert proc.stdin is not None
        try:
            proc.stdin.close()  # end of input: the CLI finishes and exits
        except BrokenPipeError:
            pass
        try:
            proc.wait(CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self._stderr is not None:
            self._stderr.text()
