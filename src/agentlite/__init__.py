"""AgentLite: run AI coding agents in isolated boxes on your own machine.

    import agentlite

    async with await agentlite.create(workdir="./data") as platform:
        agent = await platform.get_or_create_agent("main", assistant_name="Andy", backend={"type": "codex"})
        await agent.start()

Names are imported on first use, so the in-box runner (``python -m agentlite.guest.runner``) does not pay
for the host side it never uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Agent": "agentlite.platform.agent",
    "AgentEvent": "agentlite.platform.events",
    "AgentLite": "agentlite.platform.app",
    "AgentliteError": "agentlite.core.errors",
    "BackendConfig": "agentlite.run.protocol",
    "BoxError": "agentlite.core.errors",
    "BoxExecFailed": "agentlite.core.errors",
    "BoxExists": "agentlite.core.errors",
    "BoxInfo": "agentlite.box.base",
    "BoxNotFound": "agentlite.core.errors",
    "BoxProcess": "agentlite.box.base",
    "BoxRemoveFailed": "agentlite.core.errors",
    "BoxRuntime": "agentlite.box.base",
    "BoxSpec": "agentlite.box.base",
    "BoxStartFailed": "agentlite.core.errors",
    "BoxState": "agentlite.box.base",
    "CleanupDecision": "agentlite.box.lifecycle",
    "CommandResult": "agentlite.box.lifecycle",
    "ConfigError": "agentlite.core.errors",
    "Deadline": "agentlite.box.lifecycle",
    "Message": "agentlite.platform.store",
    "RegisteredGroup": "agentlite.platform.store",
    "RunError": "agentlite.core.errors",
    "RunOutcome": "agentlite.run.box_run",
    "RunTimeout": "agentlite.core.errors",
    "RuntimeChoice": "agentlite.box",
    "RuntimeUnavailable": "agentlite.core.errors",
    "Task": "agentlite.platform.store",
    "Verdict": "agentlite.box.ownership",
    "Volume": "agentlite.box.base",
    "box_name": "agentlite.box.lifecycle",
    "choose_runtime": "agentlite.box",
    "cleanup_orphans": "agentlite.box.lifecycle",
    "create": "agentlite.platform.app",
    "open_runtime": "agentlite.box",
    "run_agent": "agentlite.run.box_run",
    "run_in_box": "agentlite.box.lifecycle",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agentlite' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from agentlite.box import (
        RuntimeChoice as RuntimeChoice,
        choose_runtime as choose_runtime,
        open_runtime as open_runtime,
    )
    from agentlite.box.base import (
        BoxInfo as BoxInfo,
        BoxProcess as BoxProcess,
        BoxRuntime as BoxRuntime,
        BoxSpec as BoxSpec,
        BoxState as BoxState,
        Volume as Volume,
    )
    from agentlite.box.lifecycle import (
        CleanupDecision as CleanupDecision,
        CommandResult as CommandResult,
        Deadline as Deadline,
        box_name as box_name,
        cleanup_orphans as cleanup_orphans,
        run_in_box as run_in_box,
    )
    from agentlite.box.ownership import Verdict as Verdict
    from agentlite.core.errors import (
        AgentliteError as AgentliteError,
        BoxError as BoxError,
        BoxExecFailed as BoxExecFailed,
        BoxExists as BoxExists,
        BoxNotFound as BoxNotFound,
        BoxRemoveFailed as BoxRemoveFailed,
        BoxStartFailed as BoxStartFailed,
        ConfigError as ConfigError,
        RunError as RunError,
        RunTimeout as RunTimeout,
        RuntimeUnavailable as RuntimeUnavailable,
    )
    from agentlite.platform.agent import Agent as Agent
    from agentlite.platform.app import AgentLite as AgentLite, create as create
    from agentlite.platform.events import AgentEvent as AgentEvent
    from agentlite.platform.store import Message as Message, RegisteredGroup as RegisteredGroup, Task as Task
    from agentlite.run.box_run import RunOutcome as RunOutcome, run_agent as run_agent
    from agentlite.run.protocol import BackendConfig as BackendConfig
