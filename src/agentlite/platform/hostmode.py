"""JSONL host mode: requests in on stdin, events and exactly one final per request out on stdout.

Request: ``{"id", "agent", "group", "prompt", "backend"?: {"type", "model"?, "base_url"?}}``.
Output lines: ``{"type": "event", "id", "event"}`` while a request runs, then exactly one
``final`` per request: the :class:`~agentlite.run.turn.TurnResult` of its turn (status, result or
error, session id, usage, timings).

The host is a thin front of the platform (:class:`~agentlite.AgentLite` on the host's home): each
request agent is a platform agent, each request group one of its groups (folder = the group name,
under the store's folder rule), and each request one :meth:`Agent.ask` turn. So the host has what
the platform has: sessions in the agent's store (a restarted host resumes each group's session),
the startup sweep of boxes a killed host left, the group queue (a group's requests in order, at
most ``max_concurrent`` boxes), the agent's MCP tools and actions.

A line that is not a valid request gets a final with status ``error`` naming the problem, and so
do a line over :data:`MAX_LINE_BYTES` (one final, with id null; the host reads on after it) and a
request whose id is still queued or running. At end of input the running requests finish, then
the host exits. On :meth:`JsonlHost.stop` (SIGINT/SIGTERM) running boxes are stopped and removed
and every accepted request without a final gets one with error ``host stopped``. Stdin may be a
pipe, a socket, a terminal or a regular file (``agentlite host --jsonl < requests.jsonl``).

Why a front of its own rather than a channel driver: a channel feeds the message loop, which
batches a group's pending messages into one prompt and answers into a chat; a request needs one
turn and one final of its own, which :meth:`Agent.ask` gives directly through the same queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from agentlite.box.lifecycle import cleanup_orphans
from agentlite.core.errors import describe_validation_error
from agentlite.core.names import check_agent_id, check_group_folder
from agentlite.core.supervisor import Supervisor
from agentlite.platform.adoption import adoptable_run
from agentlite.platform.agent import Agent
from agentlite.platform.app import AgentLite
from agentlite.run.protocol import BackendConfig, Event
from agentlite.run.turn import TurnResult

log = logging.getLogger("agentlite.host")
DEFAULT_MAX_CONCURRENT = 5
#: The longest request line read; a longer one is answered with one error final and skipped.
MAX_LINE_BYTES = 4 * 1024 * 1024
_CHUNK = 64 * 1024
#: The error of every request a stop cut short.
HOST_STOPPED = "host stopped"
#: Group JIDs of host requests: their own namespace, never a chat's.
_JID_PREFIX = "host:"


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
    return describe_validation_error(exc, "request")


class JsonlHost:
    """Serves requests from a line stream on ``platform``; ``write`` receives each output line."""

    def __init__(self, platform: AgentLite, default_backend: BackendConfig, *,
                 write: Callable[[dict[str, Any]], None]) -> None:  # fmt: skip
        self.platform = platform
        self.default_backend = default_backend
        self.write = write
        self._queues: dict[tuple[str, str], asyncio.Queue[HostRequest | None]] = {}
        #: Owns one worker per (agent, group): known, never collected mid-flight, none left after.
        self.workers = Supervisor("host-groups")
        self._agent_lock = asyncio.Lock()
        self._stopping = False
        #: Ids of the requests queued or running: a second request with one of them is refused.
        self._open_ids: set[tuple[str, str | int]] = set()

    async def start(self) -> None:
        """Start taking requests (before the first :meth:`submit_line`)."""
        await self.workers.start()

    async def sweep(self) -> int:
        """The startup sweep: remove the boxes an earlier host left when it died; how many."""
        decisions = await cleanup_orphans(
            self.platform.runtime, self.platform.box_home, adoptable=adoptable_run
        )
        removed = [d.name for d in decisions if d.action == "remove" and not d.error]
        if removed:
            log.info("removed boxes an earlier host left: %s", removed)
        if decisions.failed:
            log.warning("startup sweep: %d failed: %s", decisions.failed, decisions.failures())
        return len(removed)

    def submit_line(self, line: str) -> None:
        """Take one input line: queue a valid request, answer an invalid one at once."""
        if not line.strip():
            return
        try:
            data = json.loads(line)
        except ValueError as exc:
            self._final(TurnResult.failed(f"invalid JSON: {exc}"))
            return
        request_id = data.get("id") if isinstance(data, dict) else None
        try:
            request = HostRequest.model_validate(data)
        except ValidationError as exc:
            self._final(
                TurnResult.failed(f"invalid request: {_problem(exc)}", request_id=_json_id(request_id))
            )
            return
        if self._stopping:
            self._final(TurnResult.failed(HOST_STOPPED, request_id=request.id))
            return
        id_key = _id_key(request.id)
        if id_key in self._open_ids:
            self._final(TurnResult.failed(f"duplicate id: request {request.id!r} is still running",
                                          request_id=request.id))  # fmt: skip
            return
        self._open_ids.add(id_key)
        key = (request.agent, request.group)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            self.workers.spawn(self._serve_group(queue), name=f"group-{key[0]}/{key[1]}")
        queue.put_nowait(request)

    def submit_overlong(self, line_number: int, size: int, limit: int = MAX_LINE_BYTES) -> None:
        """A line longer than ``limit`` was skipped: its one error final (its id is unknown)."""
        self._final(TurnResult.failed(f"line {line_number} is too long ({size} bytes or more; the limit is "
                                      f"{limit} bytes)"))  # fmt: skip

    async def finish(self) -> None:
        """End of input: let every queued request finish."""
        for queue in self._queues.values():
            queue.put_nowait(None)
        await self._workers_done()
        await self.workers.aclose()

    async def stop(self) -> None:
        """Stop now: running boxes are stopped and removed, and every accepted request that has
        no final yet gets one with error :data:`HOST_STOPPED`."""
        self._stopping = True
        await self.platform.close(reason=HOST_STOPPED, grace=0)
        for queue in self._queues.values():
            queue.put_nowait(None)
        await self._workers_done()
        await self.workers.aclose()

    async def _workers_done(self) -> None:
        # wait, not gather: a stop that cancels this wait must leave the workers to write finals
        # (the supervisor is closed, which would cancel them, only once they have all ended).
        if running := self.workers.tasks():
            await asyncio.wait(running)

    async def _serve_group(self, queue: asyncio.Queue[HostRequest | None]) -> None:
        while (request := await queue.get()) is not None:
            try:
                if self._stopping:
                    result = TurnResult.failed(HOST_STOPPED, request_id=request.id)
                else:
                    result = await self._run(request)
            except Exception as exc:  # one request's failure must never stop the host
                log.exception("request failed id=%s", request.id)
                result = TurnResult.failed(HOST_STOPPED if self._stopping else f"{type(exc).__name__}: {exc}",
                                           request_id=request.id)  # fmt: skip
            self._open_ids.discard(_id_key(request.id))
            self._final(result)

    async def _agent(self, name: str, group: str) -> tuple[Agent, str]:
        """The request's platform agent (created and started on first use) and its group's JID."""
        async with self._agent_lock:
            agent = self.platform.get_agent(name)
            if agent is None:
                agent = await self.platform.create_agent(name, backend=self.default_backend)
            if not agent.started:
                await agent.start()
            jid = _JID_PREFIX + group
            if jid not in agent.registered_groups():
                agent.register_group(jid, name=group, folder=group, requires_trigger=False)
            return agent, jid

    async def _run(self, request: HostRequest) -> TurnResult:
        backend = request.backend or self.default_backend
        if request.backend is not None and backend.base_url is None:
            backend = backend.model_copy(update={"base_url": self.default_backend.base_url})
        agent, jid = await self._agent(request.agent, request.group)

        def on_event(event: Event) -> None:
            self.write({"type": "event", "id": request.id, "event": event.model_dump(exclude_none=True)})

        return await agent.ask(jid, request.prompt, backend=backend, on_event=on_event, request_id=request.id)

    def _final(self, result: TurnResult) -> None:
        self.write(result.line())


def _json_id(value: Any) -> str | int | None:
    # The id of a line that failed validation is echoed only if it can be an id at all.
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


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
    """Feed ``host`` from this process's stdin until end of input, then finish (cancel it to stop
    reading; then call :meth:`JsonlHost.stop`)."""
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
