"""The platform side of the box's filesystem IPC requests: what the IPC watcher asks the agent to
do once it has authorized a request (send a message, manage tasks, register a group).

The bridge depends on the small :class:`BridgedAgent` interface, not on the agent class, so the
watcher, the bridge and the agent import in one direction only.
"""

from __future__ import annotations

from typing import Any, Protocol

from agentlite.platform.store import RegisteredGroup, Task


class BridgedAgent(Protocol):
    """What of an agent the box may reach through IPC."""

    async def send_message(self, jid: str, text: str, *, sender: str | None = None) -> None: ...

    async def schedule_task(self, *, jid: str, prompt: str, schedule_type: str, schedule_value: str,
                            context_mode: str = "isolated", task_id: str | None = None) -> Task: ...  # fmt: skip

    async def pause_task(self, task_id: str) -> Task | None: ...

    async def resume_task(self, task_id: str) -> Task | None: ...

    async def cancel_task(self, task_id: str) -> bool: ...

    async def update_task(self, task_id: str, **changes: Any) -> Task | None: ...

    def register_group(
        self, jid: str, *, name: str, folder: str, trigger: str | None = None
    ) -> RegisteredGroup: ...


class IpcBridge:
    """What the box asks for over filesystem IPC, done by the agent (authorization is the watcher's)."""

    def __init__(self, agent: BridgedAgent) -> None:
        self.agent = agent

    async def send_message(self, chat_id: str, text: str, sender: str | None = None) -> None:
        await self.agent.send_message(chat_id, text, sender=sender)

    async def schedule_task(self, **fields: Any) -> None:
        # The box's tool already told the agent this id: it must be the task's, or a later pause or
        # cancel of it is refused as an unknown task.
        await self.agent.schedule_task(jid=fields["chat_id"], prompt=fields["prompt"],
                                       schedule_type=fields["schedule_type"], schedule_value=fields["schedule_value"],
                                       context_mode=fields.get("context_mode") or "isolated",
                                       task_id=fields["task_id"])  # fmt: skip

    async def pause_task(self, task_id: str) -> None:
        await self.agent.pause_task(task_id)

    async def resume_task(self, task_id: str) -> None:
        await self.agent.resume_task(task_id)

    async def cancel_task(self, task_id: str) -> None:
        await self.agent.cancel_task(task_id)

    async def update_task(self, task_id: str, **changes: Any) -> None:
        await self.agent.update_task(task_id, **changes)

    async def register_group(self, jid: str, name: str, folder: str, trigger: str | None = None) -> None:
        self.agent.register_group(jid, name=name, folder=folder, trigger=trigger)

    async def refresh_groups(self) -> None:
        return None
