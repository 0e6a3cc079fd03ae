"""The ``claude`` CLI (Claude Code) in stream-json mode, one process kept across turns.

Each turn writes one user message to the CLI's stdin and reads its stream until the turn's
``result`` message: that is the single result of the turn (an ``is_error`` result is an error).
The process lives on for the next turn, so a run keeps one Claude session; if it dies it is
restarted with ``--resume <session id>``.
"""

from __future__ import annotations

import json
import subprocess

from agentlite._wire import result_event, sdk_message_event, state_event, usage_event
from agentlite.backends.base import BackendContext, StderrTail, TurnFailed, json_lines, start_cli, tail

#: Seconds the CLI gets to finish after its stdin is closed, before it is killed.
CLOSE_TIMEOUT = 10.0


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
        for event in json_lines(proc.stdout, "Claude"):
            kind = str(event.get("type", ""))
            subtype = event.get("subtype") if kind == "system" else None
            emit(sdk_message_event(kind, subtype, event))
            if isinstance(event.get("session_id"), str):
                session_id = event["session_id"]
            if kind != "result":
                continue
            usage = event.get("usage") or {}
            emit(usage_event(int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0)),
                             int(usage.get("cache_read_input_tokens", 0)), self.ctx.config.model))  # fmt: skip
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
