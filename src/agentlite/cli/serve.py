"""``agentlite serve --config agentlite.toml``: run the configured agents as a service."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from agentlite.cli.dashboard import AllowRemoteOption, HostOption, PortOption
from agentlite.core.logs import configure_logging


def serve_command(
    config: Annotated[Path, typer.Option("--config", help="The service's TOML file.")] = Path(
        "agentlite.toml"
    ),
    dashboard: Annotated[
        bool, typer.Option("--dashboard", help="Also serve the web dashboard (see `agentlite dashboard`).")
    ] = False,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8765,
    allow_remote: AllowRemoteOption = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address", help="Place boxes on the Ray cluster with this head (HOST:PORT, or auto)."
        ),
    ] = None,
) -> None:
    """Start every configured agent with its channels and groups; stop cleanly on SIGTERM or SIGINT."""
    from agentlite.platform.service import load_config, serve

    settings = load_config(config)  # the whole file is checked before anything starts
    if ray_address is not None:
        settings.placement, settings.ray_address = "ray", ray_address
        settings.placement_config()  # checked now, with a clear error
    beside = None
    if dashboard:
        from agentlite.dashboard.server import check_bind, resolve_token, serve_dashboard

        check_bind(host, port, allow_remote=allow_remote)
        token = resolve_token()

        async def beside(platform: Any, stop: asyncio.Event) -> None:
            await serve_dashboard(
                platform, host=host, port=port, allow_remote=allow_remote, token=token, stop=stop
            )

    configure_logging(None if _level_given() else "info")
    asyncio.run(serve(settings, beside=beside))


def _level_given() -> bool:
    import os

    return bool(os.environ.get("AGENTLITE_LOG_LEVEL"))
