"""Serving the dashboard: the bind rules, the login line printed at start, and uvicorn in the
caller's event loop (beside ``agentlite serve``'s agents, or alone for ``agentlite dashboard``).

Loopback only unless ``allow_remote``; never without a token (one is generated unless the operator
gives one in ``$AGENTLITE_DASHBOARD_TOKEN``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agentlite.box.base import BoxRuntime
from agentlite.core.errors import ConfigError
from agentlite.dashboard.app import Dashboard, create_app
from agentlite.dashboard.auth import TOKEN_ENV, check_token, new_token
from agentlite.dashboard.source import DashboardSource
from agentlite.platform.app import AgentLite

log = logging.getLogger("agentlite.dashboard")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def check_bind(host: str, port: int, *, allow_remote: bool) -> None:
    """Refuse what would expose the dashboard by mistake (the CLI exits 2)."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: must be 0..65535 (0 picks a free port)")
    if not host:
        raise ConfigError("--host: give an address such as 127.0.0.1")
    if not is_loopback(host) and not allow_remote:
        raise ConfigError(
            f"--host {host} is not a loopback address: other machines could reach the dashboard; "
            "pass --allow-remote as well to mean it (the login token is still required)"
        )


def resolve_token(given: str | None = None) -> str:
    token = given if given is not None else os.environ.get(TOKEN_ENV)
    return new_token() if not token else check_token(token)


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family, reuse_port=False)
    except OSError as exc:
        raise ConfigError(f"the dashboard cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def login_url(sock: socket.socket, token: str) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"


class _Server:
    """uvicorn without its own signal handling: the command that runs it owns SIGINT/SIGTERM."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=3,
                                access_log=False)  # fmt: skip
        self.server = Quiet(config)

    async def serve(self, sock: socket.socket, stop: asyncio.Event) -> None:
        task = asyncio.create_task(self.server.serve(sockets=[sock]))
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.server.should_exit = True
            stopper.cancel()
            await task


async def serve_dashboard(platform: AgentLite, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                          allow_remote: bool = False, token: str | None = None, stop: asyncio.Event,
                          announce: Callable[[str], None] | None = None,
                          refresh: float | None = None, box_home: Path | None = None,
                          box_runtime: BoxRuntime | None = None) -> None:  # fmt: skip
    """Serve the dashboard of ``platform`` until ``stop`` is set; ``announce`` gets the login line.
    ``box_home`` (with its ``box_runtime``): list that home's boxes instead of the platform's."""
    check_bind(host, port, allow_remote=allow_remote)
    secret = resolve_token(token)
    sock = listen(host, port)
    source = DashboardSource(platform, box_home=box_home, box_runtime=box_runtime)
    dashboard = Dashboard(source, secret, refresh=refresh)
    dashboard.stopping = stop  # open streams end as soon as the server is asked to stop
    url = login_url(sock, secret)
    (announce or _print)(f"dashboard: {url}")
    log.info("dashboard listening on %s:%s", *sock.getsockname()[:2])
    try:
        await _Server(create_app(dashboard)).serve(sock, stop)
    finally:
        sock.close()


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
