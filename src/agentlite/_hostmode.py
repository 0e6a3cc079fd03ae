"""JSONL host mode: requests in on stdin, events and exactly one final per request out on stdout.

Request: ``{"id", "agent", "group", "prompt", "backend"?: {"type", "model"?, "base_url"?}}``.
Output lines: ``{"type": "event", "id", "event"}`` while a request runs, then exactly one
``{"type": "final", "id", "status", "result" | "error", "session_id"}`` after its backend finished.
Different groups run in parallel (at most ``max_concurrent`` boxes); a group's requests run in
order and resume the group's session. A line that is not a valid request gets a final with status
``error`` naming the problem, and so do a line over :data:`MAX_LINE_BYTES` (one final, with id
null; the host reads on after it) and a request whose id is still queued or running. At end of
input the running requests finish, then the host exits. Stdin may be a pipe, a socket, a terminal
or a regular file (``agentlite host --jsonl < requests.jsonl``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from agentlite._names import check_agent_id, check_group_folder
from agentlite._protocol import BackendConfig, Event, RunnerInput
from agentlite._run import run_agent
from agentlite.runtime.base import BoxRuntime

log = logging.getLogger("agentlite.host")
DEFAULT_MAX_CONCURRENT = 5
#: The longest request line read; a longer one is answered with one error final and skipped.
MAX_LINE_BYTES = 4 * 1024 * 1024
_CHUNK = 64 * 1024


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

    @field_validator("group")
    @classmethod
    def _group(cls, value: str) -> str:
        # The group names folders under the home (workspaces, IPC, agent homes): one rule for all.
        return check_group_folder(value)

    @field_validator("prompt")
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
        #: Ids of the requests queued or running: a second request with one of them is refused.
        self._open_ids: set[tuple[str, str | int]] = set()

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
        id_key = _id_key(request.id)
        if id_key in self._open_ids:
            self._final(request.id, "error", error=f"duplicate id: request {request.id!r} is still running")
            return
        self._open_ids.add(id_key)
        key = (request.agent, request.group)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            self._workers.append(asyncio.create_task(self._serve_group(queue)))
        queue.put_nowait(request)

    def submit_overlong(self, line_number: int, size: int, limit: int = MAX_LINE_BYTES) -> None:
        """A line longer than ``limit`` was skipped: its one error final (its id is unknown)."""
        self._final(None, "error", error=f"line {line_number} is too long ({size} bytes or more; the limit is "
                    f"{limit} bytes)")  # fmt: skip

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
            finally:
                self._open_ids.discard(_id_key(request.id))

    async def _run(self, request: HostRequest) -> None:
        backend = request.backend or self.default_backend
        if request.backend is not None and backend.base_url is None:
            backend = backend.model_copy(update={"base_url": self.default_backend.base_url})
        session_key = (request.agent, request.group, backend.type)
        run_input = RunnerInput(prompt=request.prompt, group_folder=request.group, chat_id=request.group,
                                is_main=False, session_id=self._sessions.get(session_key), backend=backend)  # fmt: skip

        def on_event(event: Event) -> None:
            self.write({"type": "event", "id": request.id, "event": event.model_dump(exclude_none=True)})

        workspace = self.home / "workspaces" / request.agent / request.group
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


def _id_key(request_id: str | int) -> tuple[str, str | int]:
    # 1 and "1" are different ids in JSON.
    return (type(request_id).__name__, request_id)


async def read_lines(read: Callable[[int], Awaitable[bytes]], limit: int = MAX_LINE_BYTES
                     ) -> AsyncIterator[bytes | int]:  # fmt: skip
    """Each line from ``read(n)`` (which returns b"" at end of input), without its newline.

    A line longer than ``limit`` bytes is not kept: its size so far (an int) is yielded once in its
    place, and reading goes on after its newline. Memory stays within ``limit`` plus one chunk.
    """
    buffer = bytearray()
    skipped = 0  # > 0 while discarding the rest of an over-long line
    while chunk := await read(_CHUNK):
        buffer += chunk
        while True:
            newline = buffer.find(b"\n")
            if newline < 0:
                if skipped or len(buffer) > limit:
                    skipped += len(buffer)
                    buffer.clear()
                break
            if skipped or newline > limit:
                yield skipped + newline
                skipped = 0
            else:
                yield bytes(buffer[:newline])
            del buffer[: newline + 1]
    if skipped:
        yield skipped
    elif buffer:
        yield bytes(buffer)


def _stdin_reader(loop: asyncio.AbstractEventLoop) -> Callable[[int], Awaitable[bytes]] | None:
    """A reader for a stdin that is a regular file (the pipe transport refuses those), else None."""
    fd = sys.stdin.fileno()
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return None

    async def read(size: int) -> bytes:
        return await loop.run_in_executor(None, os.read, fd, size)

    return read


async def serve_stdin(host: JsonlHost, *, limit: int = MAX_LINE_BYTES) -> None:
    """Feed ``host`` from this process's stdin until end of input, then finish."""
    loop = asyncio.get_running_loop()
    read = _stdin_reader(loop)
    if read is None:
        reader = asyncio.StreamReader(limit=limit + _CHUNK)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        read = reader.read
    number = 0
    async for line in read_lines(read, limit):
        number += 1
        if isinstance(line, int):
            host.submit_overlong(number, line, limit)
        else:
            host.submit_line(line.decode(errors="replace"))
    await host.finish()
