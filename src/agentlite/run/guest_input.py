"""The run input as a box must see it, given the box's guest layout.

The host starts MCP servers with its own Python and hands out loopback URLs; inside an image box or
a VM neither exists at that path or address, so both are rewritten to the layout's. The per-run
token is unchanged.
"""

from __future__ import annotations

import os
import sys

from agentlite.box.guest_layout import GuestLayout
from agentlite.core.box_env import ENV_ACTIONS_URL
from agentlite.run.protocol import RunnerInput

#: MCP server environment variables that carry a host URL the guest must reach.
URL_ENV = (ENV_ACTIONS_URL,)


def guest_runner_input(layout: GuestLayout, run_input: RunnerInput) -> RunnerInput:
    """``run_input`` with the guest's Python for MCP servers the host started with its own Python,
    and host URLs as the guest reaches them."""
    host_pythons = {sys.executable, os.path.realpath(sys.executable)}
    servers = {}
    for name, server in run_input.mcp_servers.items():
        command = layout.python if server.command in host_pythons else server.command
        env = {k: layout.guest_url(v) if k in URL_ENV else v for k, v in server.env.items()}
        servers[name] = server.model_copy(update={"command": command, "env": env})
    backend = run_input.backend
    if backend.base_url is not None:
        backend = backend.model_copy(update={"base_url": layout.guest_url(backend.base_url)})
    auth = run_input.actions_auth
    if auth is not None:
        auth = auth.model_copy(update={"url": layout.guest_url(auth.url)})
    return run_input.model_copy(update={"mcp_servers": servers, "backend": backend, "actions_auth": auth})
