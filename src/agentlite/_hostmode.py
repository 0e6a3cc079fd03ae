"""JSONL host mode: requests in on stdin, events and exactly one final per request out on stdout.

Request: ``{"id", "agent", "group", "prompt", "backend"?: {"type", "model"?, "base_url"?}}``.
Output lines: ``{"type": "event", "id", "event"}`` while a request runs, then exactly one
``{"type": "final", "id", "status", "result" | "error", "session_id"}`` after its backend finished.
Different groups run in parallel (at most ``max_concurrent`` boxes); a group's requests run in
order and resume the group's session. A line that is not a valid request gets a final with status
``error`` naming the problem. At end of input the running requests finish, then the host exits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from agentlite._lifecycle import check_agent_id
from agentlite._protocol import BackendConfig, Event, RunnerInput
from agentlite._run import run_agent
from agentlite.runtime.base import BoxRuntime

log = logging.getLogger("agentlite.host")
DEFAULT_MAX_CONCURRENT = 5


class HostRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | int
    agent: str = "host"
    group: str
    prompt: str
    backend: BackendConfig | None = None

    @field_validator("agent")
    @classmethod
    def _agent(cls, value: str) -> str:
        return check_agent_id(value)

    @field_validator("group", "prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


def _problem(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}" for e in exc.errors())


class JsonlHost:
    """Serves requests from a line stream; ``write`` receives each output line's JSON object."""

    def __init__(self, runtime: BoxRuntime, home: Path, default_backend: BackendConfig, *,
                 write: Callable[[dict[str, Any]], None], max_concurrent: int = DEFAULT_MAX_CONCURRENT,
                 timeout: float = 1800.0) -> None:  # fmt: skip
        self.runtime = runtime
        self.home = home
        self.default_backend = default_backend
        self.write = write
        self.timeout = timeout
        self._slots = asyncio.Semaphore(max_concurrent)
        self._queues: dict[tuple[str, str], asyncio.Queue[HostRequest | None]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._sessions: dict[tuple[str, str, str], str] = {}

    def submit_line(self, line: str) -> None:
        """Take one input line: queue a valid request, answer an invalid one at once."""
        if not line.strip():
            return
        try:
            data = json.loads(line)
        except ValueError as exc:
            self._final(None, "error", error=f"invalid JSON: {exc}")
            return
        request_id = data.get("id") if isinstance(data, dict) else None
        try:
            request = HostRequest.model_validate(data)
        except ValidationError as exc:
            self._final(request_id, "error", error=f"invalid request: {_problem(exc)}")
            return
        key = (request.agent, request.group)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            self._workers.append(asyncio.create_task(self._serve_group(queue)))
        queue.put_nowait(request)

    async def finish(self) -> None:
        """End of input: let every queued request finish."""
        for queue in self._queues.values():
            queue.put_nowait(None)
        await asyncio.gather(*self._workers)

    async def _serve_group(self, queue: asyncio.Queue[HostRequest | None]) -> None:
        while (request := await queue.get()) is not None:
            try:
                await self._run(request)
            except Exception as exc:  # one request's failure must never stop the host
                log.exception("request failed id=%s", request.id)
                self._final(request.id, "error", error=f"{type(exc).__name__}: {exc}")

    async def _run(self, request: HostRequest) -> None:
        backend = request.backend or self.default_backend
        if request.backend is not None and backend.base_url is None:
            backend = backend.model_copy(update={"base_url": self.default_backend.base_url})
        session_key = (request.agent, request.group, backend.type)
        run_input = RunnerInput(prompt=request.prompt, group_folder=request.group, chat_id=request.group,
                                is_main=False, session_id=self._sessions.get(session_key), backend=backend)  # fmt: skip

        def on_event(event: Event) -> None:
            self.write({"type": "event", "id": request.id, "event": event.model_dump(exclude_none=True)})

        workspace = self.home / "workspaces" / request.agent / _safe(request.group)
        async with self._slots:
            outcome = await run_agent(self.runtime, self.home, run_input, workspace=workspace, on_event=on_event,
                                      agent_id=request.agent, group=request.group, timeout=self.timeout,
                                      idle_timeout=30, single_turn=True)  # fmt: skip
        if outcome.session_id:
            self._sessions[session_key] = outcome.session_id
        if outcome.status == "success":
            self._final(request.id, "success", result=outcome.result, session_id=outcome.session_id)
        else:
            self._final(request.id, "error", error=outcome.error, session_id=outcome.session_id)

    def _final(self, request_id: Any, status: str, **fields: Any) -> None:
        self.write({"type": "final", "id": request_id, "status": status, "session_id": None, **fields})


def _safe(group: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in group)


async def serve_stdin(host: JsonlHost) -> None:
    """Feed ``host`` from this process's stdin until end of input, then finish."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        host.submit_line(line.decode(errors="replace"))
    await host.finish()
