"""The ``claude`` CLI (Claude Code) in stream-json mode, one process kept across turns.

Each turn writes one user message to the CLI's stdin and reads its stream until the turn's
``result`` message: that is the single result of the turn (an ``is_error`` result is an error).
The process lives on for the next turn, so a run keeps one Claude session; if it dies it is
restarted with ``--resume <session id>``.
"""

from __future__ import annotations

import asyncio
import json
import os

from agentlite._wire import result_event, sdk_message_event, state_event, usage_event
from agentlite.backends.base import BackendContext, TurnFailed, json_lines, tail


class ClaudeCodeBackend:
    def __init__(self, context: BackendContext) -> None:
        self.ctx = context
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr = bytearray()
        self._stderr_task: asyncio.Task[None] | None = None

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

    async def _start(self, session_id: str | None) -> asyncio.subprocess.Process:
        self._stderr.clear()
        proc = await asyncio.create_subprocess_exec(
            *self._argv(session_id),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.ctx.workspace,
            env={**os.environ, **self.ctx.claude_env()},
            limit=64 * 1024 * 1024,
        )
        self._stderr_task = asyncio.create_task(self._drain_stderr(proc))
        return proc

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(65536):
            self._stderr += chunk
            del self._stderr[:-65536]

    async def run_turn(self, prompt: str, session_id: str | None) -> str | None:
        emit = self.ctx.emit
        emit(state_event("active", reason="query_started", session_id=session_id))
        if self._proc is None or self._proc.returncode is not None:
            self._proc = await self._start(session_id)
        proc = self._proc
        assert proc.stdin and proc.stdout
        message = {"type": "user", "message": {"role": "user", "content": prompt}}
        proc.stdin.write((json.dumps(message) + "\n").encode())
        await proc.stdin.drain()
        async for event in json_lines(proc.stdout, "Claude"):
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
        code = await proc.wait()
        if self._stderr_task is not None:
            await self._stderr_task
        raise TurnFailed(
            f"Claude Code exited with code {code}: {tail(self._stderr.decode(errors='replace'), 300)}"
        )

    async def aclose(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        assert proc.stdin is not None
        proc.stdin.close()  # end of input: the CLI finishes and exits
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._stderr_task is not None:
            await self._stderr_task
