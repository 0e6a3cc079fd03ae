"""``agentlite acp``: be an Agent Client Protocol agent on stdio; every session runs in a box."""

from __future__ import annotations

import asyncio
import json as jsonlib
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from agentlite.box.base import BoxSpec
from agentlite.cli._common import HomeOption, RuntimeOption, err, home_path
from agentlite.cli._endpoint import DEMO_NOTICE, demo_model_if_needed, with_base_url
from agentlite.cli._network_opts import AllowNetOption, NetworkOption, NoNetworkOption, network_settings
from agentlite.cli.run import BaseUrlOption, ModelOption
from agentlite.core.errors import ConfigError, describe_validation_error
from agentlite.image.guest_root import open_configured_runtime
from agentlite.platform.mounts import MountAllowlist
from agentlite.run.protocol import DEFAULT_BACKEND_TYPE

if TYPE_CHECKING:
    from agentlite.platform.acp_server import AcpServerSettings

ENV_MOUNT_ALLOWLIST = "AGENTLITE_MOUNT_ALLOWLIST"


def _allowlist(path: Path | None) -> MountAllowlist | None:
    if path is None:
        return None
    try:
        data = jsonlib.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"mount allowlist `{path}` is not a readable JSON file: {exc}") from None
    try:
        return MountAllowlist.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"mount allowlist `{path}`: {describe_validation_error(exc, 'allowlist')}"
        ) from None


def acp_command(
    backend: Annotated[
        str, typer.Option("--backend", help="codex, claude_code, or acp:<command> (any ACP agent).")
    ] = DEFAULT_BACKEND_TYPE,
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    workspace: Annotated[
        Path | None,
        typer.Option("--workspace", help="Folder every session mounts (default: the client's cwd)."),
    ] = None,
    permissions: Annotated[
        str,
        typer.Option(
            "--permissions",
            help="ask: the client answers the agent's permission requests; allow: allowed in the box.",
        ),
    ] = "ask",
    mount_allowlist: Annotated[
        Path | None,
        typer.Option(
            "--mount-allowlist",
            envvar=ENV_MOUNT_ALLOWLIST,
            help="JSON allowlist of folders a session may mount (allowed_roots, blocked_patterns).",
        ),
    ] = None,
    network: NetworkOption = None,
    allow_net: AllowNetOption = None,
    no_network: NoNetworkOption = False,
    home: HomeOption = None,
    runtime: RuntimeOption = None,
) -> None:
    """Serve ACP on stdin/stdout: each session is a boxed agent with the client's folder mounted."""
    # The ACP library costs ~0.4 s to import: only this command pays for it, not every command.
    from agentlite.platform.acp_server import AcpServerSettings, check_session_folder
    from agentlite.run.acp_box import adapter_backend

    config = adapter_backend(backend, model, base_url)
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"base URL `{base_url}` must start with http:// or https://")
    if permissions not in ("ask", "allow"):
        raise ConfigError(f"--permissions must be ask or allow, not `{permissions}`")
    allowlist = _allowlist(mount_allowlist)
    folder = None
    if workspace is not None:
        folder = check_session_folder(str(workspace.absolute()), allowlist)
    spec = BoxSpec(**network_settings(network, allow_net, no_network))
    home_dir = home_path(home)
    box_runtime, _ = open_configured_runtime(home_dir, runtime)
    settings = AcpServerSettings(home=home_dir, backend=config, backend_label=backend, spec=spec,
                                 permissions=permissions, mount_allowlist=allowlist,  # type: ignore[arg-type]
                                 workspace=folder)  # fmt: skip
    asyncio.run(_serve(box_runtime, settings))


async def _serve(runtime: object, settings: AcpServerSettings) -> None:
    from agentlite.platform.acp_server import serve_stdio

    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, main.cancel)
    async with demo_model_if_needed(settings.backend) as demo_url:
        if demo_url is not None:
            err.print(f"[yellow]note:[/yellow] {DEMO_NOTICE}")
            settings.backend = with_base_url(settings.backend, demo_url)
        async with runtime:  # type: ignore[attr-defined]
            try:
                await serve_stdio(runtime, settings)  # type: ignore[arg-type]
            except asyncio.CancelledError:
                pass
