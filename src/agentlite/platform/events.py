"""Agent events: ``agent.on(name, callback)`` and ``async for event in agent.events()``.

Names follow the reference (``message.in``, ``run.state``, ``task.run.succeeded``, ...); each event
carries ``agent_id`` and ``timestamp``. A failing callback is logged and never breaks the agent.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

from agentlite.platform.store import now_iso

log = logging.getLogger("agentlite.events")

EventName = Literal[
    "started", "stopped", "message.in", "message.out", "run.state", "run.sdk_message", "run.tool",
    "run.tool_progress", "run.subagent", "run.status", "chat.metadata", "channel.connected",
    "channel.disconnected", "group.registered", "backend.changed", "task.created", "task.updated",
    "task.deleted", "task.paused", "task.resumed", "task.terminated", "task.run.queued", "task.run.started",
    "task.run.succeeded", "task.run.failed", "task.run.skipped", "path.refused", "usage", "budget.warning",
    "budget.exceeded", "budget.resumed", "run.retry", "run.error",
    # Where a group's box runs (a Ray placement): its first node, and a move to another one.
    "placement.placed", "placement.moved",
]  # fmt: skip
EVENT_NAMES: frozenset[str] = frozenset(get_args(EventName))


class AgentEvent(BaseModel):
    """One event: its name, the agent, when, and the event's own fields in ``data``."""

    model_config = ConfigDict(frozen=True)
    name: EventName
    agent_id: str
    timestamp: str
    data: dict[str, Any]


Callback = Callable[[AgentEvent], Any]


class EventHub:
    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self._callbacks: dict[str, list[Callback]] = {}
        self._queues: list[asyncio.Queue[AgentEvent | None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Where async callbacks run while the agent is started: its supervisor's ``spawn``.
        self.spawn: Callable[..., asyncio.Task[Any]] | None = None

    def on(self, name: str, callback: Callback) -> Callable[[], None]:
        """Call ``callback`` for every event ``name`` (``"*"`` for all). Returns an unsubscribe function."""
        if name != "*" and name not in EVENT_NAMES:
            from agentlite.core.errors import ConfigError

            raise ConfigError(f"unknown event `{name}`")
        self._callbacks.setdefault(name, []).append(callback)
        return lambda: self.off(name, callback)

    def off(self, name: str, callback: Callback) -> None:
        if callback in self._callbacks.get(name, []):
            self._callbacks[name].remove(callback)

    def emit(self, name: str, /, **data: Any) -> AgentEvent:
        event = AgentEvent(name=name, agent_id=self.agent_id, timestamp=now_iso(), data=data)  # type: ignore[arg-type]
        for callback in [*self._callbacks.get(name, []), *self._callbacks.get("*", [])]:
            try:
                outcome = callback(event)
                if inspect.isawaitable(outcome):
                    spawn = self.spawn
                    if spawn is not None and inspect.iscoroutine(outcome):
                        task = spawn(outcome, name=f"event-{name}")
                    else:
                        task = asyncio.ensure_future(outcome)
                    self._tasks.add(task)
                    task.add_done_callback(self._finished)
            except Exception:
                log.exception("event callback failed event=%s", name)
        for queue in self._queues:
            queue.put_nowait(event)
        return event

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("event callback failed: %s", task.exception())

    async def events(self) -> AsyncIterator[AgentEvent]:
        """Every event from now on, until the agent stops."""
        queue: asyncio.Queue[AgentEvent | None] = asyncio.Queue()
        self._queues.append(queue)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._queues.remove(queue)

    def close(self) -> None:
        """End every ``events()`` iterator."""
        for queue in self._queues:
            queue.put_nowait(None)
