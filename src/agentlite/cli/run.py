"""``agentlite run PROMPT``: one agent turn in a box, with a live view of its work.

A thin client of the platform (:mod:`agentlite.platform.oneshot`): the turn is the next one of a
group of a platform agent, so the same group resumes its session at the next command.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from agentlite.box.base import BoxRuntime
from agentlite.cli._common import (
    AgentOption,
    HomeOption,
    JsonOption,
    RuntimeOption,
    err,
    home_path,
    out,
)
from agentlite.cli._endpoint import DEMO_NOTICE, backend_config, demo_model_if_needed, with_base_url
from agentlite.cli._network_opts import AllowNetOption, NetworkOption, NoNetworkOption, network_settings
from agentlite.core.errors import ConfigError
from agentlite.core.names import check_agent_id, check_group_folder
from agentlite.image.guest_root import open_configured_runtime
from agentlite.platform.app import AgentLite, resolve_timezone
from agentlite.platform.oneshot import agent_lock, platform_dir, run_once
from agentlite.run.protocol import DEFAULT_BACKEND_TYPE, BackendConfig, Event, SdkMessageEvent, StateEvent
from agentlite.run.turn import TurnResult

#: A turn is one turn (its runner exits after it): the idle timeout only bounds a runner that waits.
RUN_IDLE_TIMEOUT = 30.0
#: First retry delay of a turn whose box could not run (doubling): a person waits for this one.
RUN_RETRY_BASE = 1.0

BackendOption = Annotated[str, typer.Option("--backend", help="codex, claude_code or acp.")]
ModelOption = Annotated[str | None, typer.Option("--model", help="Model name for the backend.")]
BaseUrlOption = Annotated[str | None, typer.Option("--base-url", help="Model endpoint (proxy, self-hosted).")]
AcpOption = Annotated[
    str | None, typer.Option("--acp-command", help="ACP agent command (default codex-acp).")
]


def describe(event: Event) -> str | None:
    """A short line for the live view, for the events a person wants to see."""
    if isinstance(event, StateEvent) and event.state == "active":
        return "thinking…"
    if not isinstance(event, SdkMessageEvent):
        return None
    message: Any = event.message
    if event.sdk_type == "item.started" and event.sdk_subtype == "command_execution":
        return f"running: {message['item'].get('command', '')}"
    if event.sdk_type == "assistant":
        for block in message.get("message", {}).get("content", []):
            if block.get("type") == "tool_use":
                tool_input = block.get("input") or {}
                return f"tool {block.get('name')}: {tool_input.get('command') or tool_input.get('description') or ''}"
    if event.sdk_type == "session_update" and event.sdk_subtype == "tool_call":
        return f"tool: {message.get('title', '')}"
    return None


GroupOption = Annotated[
    str, typer.Option("--group", help="Group whose session the turn resumes (default main).")
]


def run_command(
    prompt: Annotated[str, typer.Argument(help="What to ask the agent.")],
    backend: BackendOption = DEFAULT_BACKEND_TYPE,
    acp_command: AcpOption = None,
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    workspace: Annotated[
        Path | None, typer.Option("--workspace", help="Folder the agent works in (default: .)")
    ] = None,
    agent: AgentOption = None,
    group: GroupOption = "main",
    timeout: Annotated[float, typer.Option("--timeout", help="Hard timeout in seconds.")] = 1800.0,
    network: NetworkOption = None,
    allow_net: AllowNetOption = None,
    no_network: NoNetworkOption = False,
    home: HomeOption = None,
    runtime: RuntimeOption = None,
    json: JsonOption = False,
) -> None:
    """Run one agent turn on PROMPT in a box and print the final result.

    The turn is the group's next one: a second run in the same group (``--group``, default main)
    of the same agent (``--agent``, default cli) resumes its session.
    """
    agent_id = check_agent_id(agent or "cli")
    check_group_folder(group)
    config = backend_config(backend, model, base_url, acp_command)
    settings = network_settings(network, allow_net, no_network)
    if timeout <= 0:
        raise typer.BadParameter(f"timeout must be > 0 seconds, got {timeout:g}")
    folder = (workspace or Path.cwd()).resolve()
    if not folder.is_dir():
        raise ConfigError(f"workspace `{folder}` is not a folder")
    home_dir = home_path(home)
    box_runtime, _ = open_configured_runtime(home_dir, runtime)
    turn = OneTurn(agent_id, group, prompt, config, folder, _network_override(settings))
    code = asyncio.run(_run(box_runtime, home_dir, turn, timeout, json))
    raise typer.Exit(code)


@dataclass(frozen=True)
class OneTurn:
    """What the command asks for: which agent and group, the prompt, and the box's settings."""

    agent: str
    group: str
    prompt: str
    backend: BackendConfig
    workspace: Path
    network: dict[str, Any] | None


def _network_override(settings: dict[str, Any]) -> dict[str, Any] | None:
    """The turn's network when an option set one; else the agent's own."""
    if settings["network_mode"] is None:
        return None
    return {"mode": settings["network_mode"], "allow_net": settings["allow_net"]}


async def _run(runtime: BoxRuntime, home: Path, turn: OneTurn, timeout: float, as_json: bool) -> int:
    main = asyncio.current_task()
    assert main is not None
    stopped = asyncio.Event()
    running: list[AgentLite] = []  # the open platform: a signal then stops its turn

    def on_signal() -> None:
        stopped.set()
        if not running:  # starting up (or waiting for the agent's lock): nothing to settle yet
            main.cancel()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    live = err.status("starting box…") if (err.is_terminal and not as_json) else None

    def show(event: Event) -> None:
        if as_json:
            sys.stdout.write(
                jsonlib.dumps({"type": "event", "event": event.model_dump(exclude_none=True)}) + "\n"
            )
            sys.stdout.flush()
        elif live is not None and (line := describe(event)):
            live.update(line)

    def waiting() -> None:
        err.print(f"waiting for another `agentlite run` of agent `{turn.agent}` to finish…")

    folder = platform_dir(home)
    try:
        async with demo_model_if_needed(turn.backend) as demo_url:
            if demo_url is not None:
                err.print(f"[yellow]note:[/yellow] {DEMO_NOTICE}")
            async with agent_lock(folder, turn.agent, on_wait=waiting):
                # The platform's agents and stores live under `<home>/run`; boxes and their records
                # in the home itself, where `agentlite boxes` looks. One turn, one box at a time.
                platform = AgentLite(folder, timezone=resolve_timezone(None), runtime=runtime, max_concurrent=1,
                                     box_timeout=timeout, idle_timeout=RUN_IDLE_TIMEOUT, box_home=home)  # fmt: skip
                platform.retry_base = RUN_RETRY_BASE
                running.append(platform)
                if stopped.is_set():  # a signal came while the platform was being made
                    await platform.close()
                    raise asyncio.CancelledError
                if live:
                    live.start()
                try:
                    outcome = await _ask_until_stopped(platform, turn, with_base_url(turn.backend, demo_url),
                                                       show, stopped)  # fmt: skip
                finally:
                    if live:
                        live.stop()
    except asyncio.CancelledError:
        if not stopped.is_set():
            raise
        outcome = None
    if outcome is None:
        err.print("stopped; box removed")
        return 130
    if demo_url is not None:
        outcome.offline_demo_model = True
    if as_json:
        sys.stdout.write(jsonlib.dumps(outcome.line()) + "\n")
    elif outcome.status == "success":
        out.print(outcome.result or "(the agent finished without a reply)", markup=False)
    else:
        err.print(f"[red]error:[/red] {outcome.error}", markup=True)
    return 0 if outcome.status == "success" else 1


async def _ask_until_stopped(platform: AgentLite, turn: OneTurn, backend: BackendConfig,
                             on_event: Callable[[Event], None], stopped: asyncio.Event) -> TurnResult | None:  # fmt: skip
    """The turn's result, or ``None`` when a signal stopped it; the platform is closed either way
    (its box stopped and removed)."""
    one = run_once(platform, agent=turn.agent, group=turn.group, prompt=turn.prompt, backend=backend,
                   workspace=turn.workspace, network=turn.network, on_event=on_event)  # fmt: skip
    asking = asyncio.create_task(one, name="agentlite-run")
    stopping = asyncio.create_task(stopped.wait(), name="agentlite-run-signals")
    try:
        await asyncio.wait({asking, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not asking.done():
        # Stopping the platform stops the box and settles the turn with an error.
        await platform.close(reason="stopped", grace=0)
        await asyncio.wait([asking])
        if not asking.cancelled():
            asking.exception()  # retrieved: the turn's end is "stopped", whatever it was
        return None
    await platform.close()
    return asking.result()
