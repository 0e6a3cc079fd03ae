"""The network options shared by ``exec`` and ``run``: ``--network MODE``, ``--allow-net ENTRY``
(repeatable; alone it means ``--network allowlist``) and ``--no-network`` (``--network none``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from agentlite.box.network import HOST_MODE_WARNING, NetworkMode, parse_allow_net, parse_network_mode
from agentlite.core.errors import ConfigError

NetworkOption = Annotated[
    str | None,
    typer.Option("--network", help="Box network: none, egress (default: outbound through a proxy that refuses "
                 "the host's loopback and private ranges), allowlist, or host (the host's own network)."),
]  # fmt: skip
AllowNetOption = Annotated[
    list[str] | None,
    typer.Option("--allow-net", help="Allowed destination (example.com, *.example.com, HOST:PORT), "
                 "repeatable; implies --network allowlist."),
]  # fmt: skip
NoNetworkOption = Annotated[bool, typer.Option("--no-network", help="Same as --network none.")]


def network_settings(network: str | None, allow_net: list[str] | None, no_network: bool) -> dict[str, Any]:
    """BoxSpec keyword arguments for the options given; ConfigError (exit 2) when they disagree."""
    allow = list(allow_net or [])
    parse_allow_net(allow)  # names a bad entry now
    mode = None if network is None else parse_network_mode(network)
    if no_network:
        if mode not in (None, NetworkMode.NONE):
            raise ConfigError(f"--no-network contradicts --network {mode}")
        mode = NetworkMode.NONE
    if allow:
        if mode not in (None, NetworkMode.ALLOWLIST):
            raise ConfigError(f"--allow-net needs --network allowlist, not `{mode}`")
        mode = NetworkMode.ALLOWLIST
    if mode is NetworkMode.HOST:
        from agentlite.cli._common import err

        err.print(f"[yellow]warning:[/yellow] {HOST_MODE_WARNING}")
    return {"network_mode": None if mode is None else str(mode), "allow_net": allow}
