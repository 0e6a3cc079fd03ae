"""Backend wire parsing on the platform side: what an agent reports about a raw backend event.

The runner passes each backend's own events through untouched (``sdk_message``); the agent turns
the ones a person cares about into its events: every one as ``run.sdk_message``, tool calls (a
Claude ``tool_use`` block, a codex ``command_execution`` item) as ``run.tool``, Claude status
lines as ``run.status``. Pure functions: no agent, no hub.
"""

from __future__ import annotations

import json
from typing import Any

from agentlite.run.protocol import SdkMessageEvent

#: How much of a tool's input a ``run.tool`` event carries.
TOOL_INPUT_LIMIT = 500

AgentEventSpec = tuple[str, dict[str, Any]]


def agent_events(event: SdkMessageEvent, jid: str) -> list[AgentEventSpec]:
    """The ``(name, data)`` of each agent event ``event`` gives in the group ``jid``, in order."""
    found: list[AgentEventSpec] = [
        ("run.sdk_message", {"jid": jid, "sdk_type": event.sdk_type, "sdk_subtype": event.sdk_subtype,
                             "message": event.message}),
    ]  # fmt: skip
    message = event.message if isinstance(event.message, dict) else {}
    if event.sdk_type == "assistant":
        for block in (message.get("message") or {}).get("content") or []:
            if (
                isinstance(block, dict)
                and block.get("type") == "tool_use"
                and block.get("name")
                and block.get("id")
            ):
                found.append(("run.tool", {"jid": jid, "tool_name": block["name"], "tool_use_id": block["id"],
                                           "input": json.dumps(block.get("input"))[:TOOL_INPUT_LIMIT]}))  # fmt: skip
    elif event.sdk_type == "item.started" and event.sdk_subtype == "command_execution":
        item = message.get("item") or {}
        found.append(("run.tool", {"jid": jid, "tool_name": "shell", "tool_use_id": str(item.get("id")),
                                   "input": str(item.get("command"))[:TOOL_INPUT_LIMIT]}))  # fmt: skip
    elif event.sdk_type == "system" and event.sdk_subtype == "status" and message.get("status"):
        found.append(("run.status", {"jid": jid, "status": message["status"]}))
    return found
