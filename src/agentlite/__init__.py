"""AgentLite: run AI coding agents in isolated boxes on your own machine.

The box layer: a :class:`BoxRuntime` (``sandbox`` or ``boxlite``) chosen by :func:`open_runtime`,
:func:`run_in_box` for one command with its whole lifecycle, and :func:`cleanup_orphans` to reap
boxes whose owner is gone.
"""

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
from agentlite._lifecycle import (
    CleanupDecision as CleanupDecision,
    CommandResult as CommandResult,
    Deadline as Deadline,
    box_name as box_name,
    cleanup_orphans as cleanup_orphans,
    run_in_box as run_in_box,
)
from agentlite._ownership import (
    Verdict as Verdict,
)
from agentlite.runtime import (
    BoxInfo as BoxInfo,
    BoxProcess as BoxProcess,
    BoxRuntime as BoxRuntime,
    BoxSpec as BoxSpec,
    BoxState as BoxState,
    RuntimeChoice as RuntimeChoice,
    Volume as Volume,
    choose_runtime as choose_runtime,
    open_runtime as open_runtime,
)

__all__ = [
    "AgentliteError",
    "BoxError",
    "BoxExecFailed",
    "BoxExists",
    "BoxInfo",
    "BoxNotFound",
    "BoxProcess",
    "BoxRemoveFailed",
    "BoxRuntime",
    "BoxSpec",
    "BoxStartFailed",
    "BoxState",
    "CleanupDecision",
    "CommandResult",
    "ConfigError",
    "Deadline",
    "RunError",
    "RunTimeout",
    "RuntimeChoice",
    "RuntimeUnavailable",
    "Verdict",
    "Volume",
    "box_name",
    "choose_runtime",
    "cleanup_orphans",
    "open_runtime",
    "run_in_box",
]
