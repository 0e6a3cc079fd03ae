"""Every error AgentLite raises on purpose, as one tree.

    AgentliteError
    ├── ConfigError (ValueError)  bad user input: a volume spec, a timeout, a home folder, a request
    │   ├── InvalidName           a name or folder that must not become a path (core.names)
    │   ├── UnknownBackend        a backend type that no registry knows
    │   └── PayloadError          an action's payload does not match its schema (platform.actions)
    ├── RuntimeUnavailable        the chosen box runtime cannot work on this machine
    ├── ImageBuildFailed          a step of the guest image build failed
    ├── BoxError                  something about one box
    │   ├── BoxExists
    │   ├── BoxNotFound
    │   ├── BoxStartFailed
    │   ├── BoxExecFailed
    │   └── BoxRemoveFailed
    ├── UnsafePath (OSError)      a path a box could have planted (core.safefs)
    ├── Refused                   the network policy refuses a destination (box.network)
    ├── RunError                  a command or agent run inside a box did not finish normally
    │   ├── RunTimeout
    │   ├── TurnFailed            the agent failed its turn (in the box, guest.backends.base)
    │   ├── BoxLost               a box's Ray actor is gone with its node (placement.ray_placement)
    │   ├── SupersededRun         output of a run copy the host no longer holds (placement.ray_placement)
    │   └── RunStopped            the host stopped the run (run.usage_tally)
    │       └── BudgetExceeded    (platform.budgets)
    ├── StoreError                an agent's SQLite store cannot be opened, read or written
    ├── FencedOut                 a stale copy of a run wrote to the run ledger (platform.ledger)
    ├── IpcRejected               a box's IPC request is malformed or not allowed (platform.ipc)
    ├── InputError (ValueError)   the runner's input from the host is not valid (guest.runner)
    ├── ToolError                 an MCP tool refused its arguments (guest.mcp_server)
    └── SupervisorClosed          work handed to a supervisor that is shutting down (core.supervisor)

The classes named with a module live there, next to what raises them; the rest live here. Foreign
libraries' errors become these at one boundary per library (:func:`describe_validation_error` for
pydantic, ``platform.store.store_errors`` for sqlite3, ...). This module is stdlib only: the box
imports it.

Errors carry their context as attributes (``box``, ``exit_code``, ...) so callers need not parse text.
"""

from __future__ import annotations

from typing import Any, Protocol


class AgentliteError(Exception):
    """Root of every error AgentLite raises on purpose."""


class ConfigError(AgentliteError, ValueError):
    """A user-supplied value is invalid; the message names the value and the rule."""


class UnknownBackend(ConfigError):
    """No backend of this type exists; ``known`` lists the ones that do."""

    def __init__(self, kind: object, known: tuple[str, ...] | list[str]) -> None:
        super().__init__(f"unknown backend `{kind}`; choose one of {', '.join(known)}")
        self.kind = kind
        self.known = tuple(known)


class RuntimeUnavailable(AgentliteError):
    """A box runtime cannot work here; ``missing`` says what and ``fix`` how to get it."""

    def __init__(self, runtime: str, missing: str, fix: str) -> None:
        super().__init__(f"runtime `{runtime}` cannot run here: {missing}. Fix: {fix}")
        self.runtime = runtime
        self.missing = missing
        self.fix = fix


class ImageBuildFailed(AgentliteError):
    """A step of the guest image build failed; the message names the step and the tool's output."""


class BoxError(AgentliteError):
    """Something went wrong with one box, named by ``box``."""

    def __init__(self, box: str, message: str) -> None:
        super().__init__(message)
        self.box = box


class BoxExists(BoxError):
    """A box with this name already exists."""


class BoxNotFound(BoxError):
    """The named box does not exist (never created, or already removed)."""


class BoxStartFailed(BoxError):
    """The runtime could not create or start the box."""


class BoxExecFailed(BoxError):
    """A command could not be started inside the box."""


class BoxRemoveFailed(BoxError):
    """The runtime could not remove the box; its processes may still run."""


class RunError(AgentliteError):
    """A run inside a box did not finish normally."""


class RunTimeout(RunError):
    """A run produced no output for longer than its hard timeout and was killed."""

    def __init__(self, box: str, timeout: float) -> None:
        super().__init__(f"box `{box}` timed out after {timeout:g} s")
        self.box = box
        self.timeout = timeout


class StoreError(AgentliteError):
    """An agent's store could not be opened, read or written; ``path`` names its file."""

    def __init__(self, path: object, message: str) -> None:
        super().__init__(f"store `{path}`: {message}")
        self.path = path


# -- pydantic, at one boundary ------------------------------------------------------------------------


class _ValidationErrorLike(Protocol):
    """What :func:`describe_validation_error` reads of a pydantic ``ValidationError`` (no import, so
    the in-box runner can use it before pydantic loads)."""

    def errors(self) -> Any: ...


def describe_validation_error(
    exc: _ValidationErrorLike, root: str = "value", *, first_only: bool = False
) -> str:
    """Every problem of a pydantic validation error as ```field.path[0]`: message``, joined by ``; ``.

    ``root`` names the whole object when a problem is not about one field. This is the one wording
    for every place that turns a validation error into a user-facing message."""
    problems = []
    for error in exc.errors():
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.get("loc", ())).lstrip(".")
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        problems.append(f"`{where or root}`: {message}")
    if first_only:
        problems = problems[:1]
    return "; ".join(problems) or f"`{root}`: invalid"
