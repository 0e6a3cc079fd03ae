"""Options shared by the platform commands (agents, tasks, chat, serve)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import typer

from agentlite.core.config import ENV_WORKDIR, default_workdir
from agentlite.core.errors import ConfigError
from agentlite.core.names import check_agent_name

WorkdirOption = Annotated[
    Path | None,
    typer.Option("--workdir", envvar=ENV_WORKDIR,
                 help="Platform folder (env AGENTLITE_WORKDIR; default ~/.local/share/agentlite/platform)."),
]  # fmt: skip


def workdir_path(workdir: Path | None) -> Path:
    return (workdir or default_workdir()).expanduser().absolute()


@contextlib.asynccontextmanager
async def opened(workdir: Path | None, runtime: str | None = None) -> AsyncIterator[Any]:
    import agentlite

    async with await agentlite.create(workdir=workdir_path(workdir), runtime=runtime) as platform:
        yield platform


def need_agent(platform: Any, name: str) -> Any:
    check_agent_name(name)
    agent = platform.get_agent(name)
    if agent is None:
        known = ", ".join(sorted(platform.agents)) or "none"
        raise ConfigError(f"unknown agent `{name}` (agents: {known})")
    return agent
