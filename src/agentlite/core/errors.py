"""Every error AgentLite raises on purpose.

    AgentliteError
    ├── ConfigError              bad user input: a volume spec, a timeout, a home folder
    ├── RuntimeUnavailable       the chosen box runtime cannot work on this machine
    ├── BoxError                 something about one box
    │   ├── BoxExists
    │   ├── BoxNotFound
    │   ├── BoxStartFailed
    │   ├── BoxExecFailed
    │   └── BoxRemoveFailed
    └── RunError                 a command or agent run inside a box did not finish normally
        └── RunTimeout

Errors carry their context as attributes (``box``, ``exit_code``, ...) so callers need not parse text.
"""

from __future__ import annotations


class AgentliteError(Exception):
    """Root of every error AgentLite raises on purpose."""


class ConfigError(AgentliteError, ValueError):
    """A user-supplied value is invalid; the message names the value and the rule."""


class RuntimeUnavailable(AgentliteError):
    """A box runtime cannot work here; ``missing`` says what and ``fix`` how to get it."""

    def __init__(self, runtime: str, missing: str, fix: str) -> None:
        super().__init__(f"runtime `{runtime}` cannot run here: {missing}. Fix: {fix}")
        self.runtime = runtime
        self.missing = missing
        self.fix = fix


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
