"""``agentlite serve --config agentlite.toml``: run the configured agents as a service."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from agentlite.cli._common import user_errors
from agentlite.core.logs import configure_logging


def serve_command(
    config: Annotated[Path, typer.Option("--config", help="The service's TOML file.")] = Path(
        "agentlite.toml"
    ),
) -> None:
    """Start every configured agent with its channels and groups; stop cleanly on SIGTERM or SIGINT."""
    from agentlite.platform.service import load_config, serve

    with user_errors():
        settings = load_config(config)  # the whole file is checked before anything starts
        configure_logging(None if _level_given() else "info")
        asyncio.run(serve(settings))


def _level_given() -> bool:
    import os

    return bool(os.environ.get("AGENTLITE_LOG_LEVEL"))
