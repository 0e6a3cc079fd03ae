"""``agentlite dashboard [--workdir] [--host 127.0.0.1] [--port]``: the operators' web dashboard of a
platform folder, beside ``agentlite serve`` (or without it); ``serve --dashboard`` runs it inside."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer

from agentlite.cli._common import RuntimeOption
from agentlite.cli._platform_opts import WorkdirOption, workdir_path

HostOption = Annotated[
    str, typer.Option("--host", help="Address to listen on (loopback unless --allow-remote).")
]
PortOption = Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port).")]
AllowRemoteOption = Annotated[
    bool,
    typer.Option("--allow-remote", help="Allow a non-loopback --host (the login token is still required)."),
]


def dashboard_command(
    workdir: WorkdirOption = None,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8765,
    allow_remote: AllowRemoteOption = False,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home", help="List this box home's boxes (default: the platform's <workdir>/.boxlite)."
        ),
    ] = None,
    runtime: RuntimeOption = None,
) -> None:
    """Serve the web dashboard (boxes, agents, runs, tasks, usage); prints its login address."""
    from agentlite.dashboard.server import check_bind, resolve_token

    check_bind(host, port, allow_remote=allow_remote)  # before anything is opened
    token = resolve_token()
    asyncio.run(_serve(workdir, host, port, allow_remote, runtime, token, home))


async def _serve(workdir: Path | None, host: str, port: int, allow_remote: bool, runtime: str | None,
                 token: str, home: Path | None) -> None:  # fmt: skip
    import agentlite
    from agentlite.dashboard.server import serve_dashboard

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    box_home, box_runtime = None, None
    if home is not None:
        from agentlite.box import open_runtime
        from agentlite.core.config import resolve_home

        box_home = resolve_home(home)
        box_runtime, _ = open_runtime(box_home, runtime, boot=False)  # lists and removes only
    try:
        async with await agentlite.create(workdir=workdir_path(workdir), runtime=runtime) as platform:
            await serve_dashboard(platform, host=host, port=port, allow_remote=allow_remote, token=token,
                                  stop=stop, box_home=box_home, box_runtime=box_runtime)  # fmt: skip
    finally:
        if box_runtime is not None:
            await box_runtime.aclose()
