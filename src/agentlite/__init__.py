"""AgentLite: run AI coding agents in isolated boxes on your own machine.

    import agentlite

    async with await agentlite.create(workdir="./data") as platform:
        agent = await platform.get_or_create_agent("main", assistant_name="Andy", backend={"type": "codex"})
        await agent.start()

Names are imported on first use, so the in-box runner (``python -m agentlite.runner``) does not pay
for the host side it never uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Agent": "agentlite._agent",
    "AgentEvent": "agentlite._events",
    "AgentLite": "agentlite._platform",
    "AgentliteError": "agentlite._errors",
    "BackendConfig": "agentlite._protocol",
    "BoxError": "agentlite._errors",
    "BoxExecFailed": "agentlite._errors",
    "BoxExists": "agentlite._errors",
    "BoxInfo": "agentlite.runtime.base",
    "BoxNotFound": "agentlite._errors",
    "BoxProcess": "agentlite.runtime.base",
    "BoxRemoveFailed": "agentlite._errors",
    "BoxRuntime": "agentlite.runtime.base",
    "BoxSpec": "agentlite.runtime.base",
    "BoxStartFailed": "agentlite._errors",
    "BoxState": "agentlite.runtime.base",
    "CleanupDecision": "agentlite._lifecycle",
    "CommandResult": "agentlite._lifecycle",
    "ConfigError": "agentlite._errors",
    "Deadline": "agentlite._lifecycle",
    "Message": "agentlite._store",
    "RegisteredGroup": "agentlite._store",
    "RunError": "agentlite._errors",
    "RunOutcome": "agentlite._run",
    "RunTimeout": "agentlite._errors",
    "RuntimeChoice": "agentlite.runtime",
    "RuntimeUnavailable": "agentlite._errors",
    "Task": "agentlite._store",
    "Verdict": "agentlite._ownership",
    "Volume": "agentlite.runtime.base",
    "box_name": "agentlite._lifecycle",
    "choose_runtime": "agentlite.runtime",
    "cleanup_orphans": "agentlite._lifecycle",
    "create": "agentlite._platform",
    "open_runtime": "agentlite.runtime",
    "run_agent": "agentlite._run",
    "run_in_box": "agentlite._lifecycle",
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
    from agentlite._agent import Agent as Agent
    from agentlite._errors import (
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
    from agentlite._events import AgentEvent as AgentEvent
    from agentlite._lifecycle import (
        CleanupDecision as CleanupDecision,
        CommandResult as CommandResult,
        Deadline as Deadline,
        box_name as box_name,
        cleanup_orphans as cleanup_orphans,
        run_in_box as run_in_box,
    )
    from agentlite._ownership import Verdict as Verdict
    from agentlite._platform import AgentLite as AgentLite, create as create
    from agentlite._protocol import BackendConfig as BackendConfig
    from agentlite._run import RunOutcome as RunOutcome, run_agent as run_agent
    from agentlite._store import Message as Message, RegisteredGroup as RegisteredGroup, Task as Task
    from agentlite.runtime import (
        RuntimeChoice as RuntimeChoice,
        choose_runtime as choose_runtime,
        open_runtime as open_runtime,
    )
    from agentlite.runtime.base import (
        BoxInfo as BoxInfo,
        BoxProcess as BoxProcess,
        BoxRuntime as BoxRuntime,
        BoxSpec as BoxSpec,
        BoxState as BoxState,
        Volume as Volume,
    )
