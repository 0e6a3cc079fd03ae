"""Where AgentLite keeps its state, and the names of the environment variables that steer it."""

from __future__ import annotations

import os
from pathlib import Path

from agentlite.core.errors import ConfigError

ENV_HOME = "AGENTLITE_HOME"
ENV_LOG_LEVEL = "AGENTLITE_LOG_LEVEL"
ENV_DEBUG = "AGENTLITE_DEBUG"
ENV_WORKDIR = "AGENTLITE_WORKDIR"


def default_home() -> Path:
    """``$AGENTLITE_HOME``, else ``$XDG_DATA_HOME/agentlite``, else ``~/.local/share/agentlite``."""
    if env := os.environ.get(ENV_HOME):
        return Path(env)
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "agentlite"


def resolve_home(home: Path | str | None = None) -> Path:
    """The home folder to use, created if needed. Raises :class:`ConfigError` when it cannot be."""
    path = Path(home) if home else default_home()
    path = path.expanduser().absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"home `{path}` cannot be created: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"home `{path}` is not writable")
    return path


def default_workdir() -> Path:
    """The platform's work folder: ``$AGENTLITE_WORKDIR``, else ``<default home>/platform``."""
    if env := os.environ.get(ENV_WORKDIR):
        return Path(env)
    return default_home() / "platform"
