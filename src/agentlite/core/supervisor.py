"""One owner for a component's long-lived background work: an :class:`asyncio.TaskGroup`.

The platform's loops (message loop, scheduler, IPC watcher), the queue's runs and the event
fan-out's callbacks are spawned here rather than with bare ``create_task``, so each is known,
none is left running when its agent stops, and none is garbage-collected mid-flight. A failing
task is logged and its siblings go on (a bug in one loop must not stop the agent); cancellation is
never swallowed. :meth:`Supervisor.aclose` cancels what is still running and waits for it: the
tasks' own cleanup is bounded (a run's box teardown: TERM, a wait, KILL).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from agentlite.core.errors import AgentliteError

log = logging.getLogger("agentlite.supervisor")

T = TypeVar("T")


class SupervisorClosed(AgentliteError):
    """Work was handed to a supervisor that is closing or closed."""


class Supervisor:
    """Owns background tasks inside one task group; see the module docstring."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._group: asyncio.TaskGroup | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def running(self) -> bool:
        return self._group is not None and not self._closing.is_set()

    def tasks(self) -> list[asyncio.Task[Any]]:
        """The tasks still running (a copy)."""
        return [t for t in self._tasks if not t.done()]

    async def start(self) -> None:
        if self._keeper is not None:
            raise AgentliteError(f"supervisor `{self.name}` already started")
        ready = asyncio.Event()
        self._keeper = asyncio.create_task(self._keep(ready), name=f"{self.name}-supervisor")
        waiting = asyncio.ensure_future(ready.wait())
        await asyncio.wait({waiting, self._keeper}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            waiting.cancel()
            self._keeper.result()  # raises why the group could not start

    async def _keep(self, ready: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            ready.set()
            await self._closing.wait()
            for task in self._tasks:
                task.cancel()
        self._group = None

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T | None]:
        """Run ``coro`` under this supervisor; its failure is logged, not raised into the group.
        The task is named ``<supervisor>:<name>``, so what an owner left running can be told."""
        if not self.running or self._group is None:
            coro.close()
            raise SupervisorClosed(f"supervisor `{self.name}` is not running")
        label = name or getattr(coro, "__qualname__", "task")
        task = self._group.create_task(self._guarded(coro, label), name=f"{self.name}:{label}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # A task cancelled before its first step never starts ``coro``: close it (no warning).
        task.add_done_callback(lambda _: coro.close())
        return task

    async def _guarded(self, coro: Coroutine[Any, Any, T], name: str) -> T | None:
        try:
            return await coro
        except Exception:
            log.exception("%s: background task %s failed", self.name, name)
            return None

    async def aclose(self) -> None:
        """Cancel what is still running and wait until every task has ended."""
        self._closing.set()
        if self._keeper is not None:
            await self._keeper
