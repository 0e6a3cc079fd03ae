"""``agentlite run PROMPT``: one agent turn in a fresh box, with a live view of its work."""

from __future__ import annotations

import asyncio
import json as jsonlib
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from agentlite.box import open_runtime
from agentlite.box.base import BoxRuntime, BoxSpec
from agentlite.box.lifecycle import check_agent_id
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
from agentlite.run.protocol import DEFAULT_BACKEND_TYPE, Event, RunnerInput, SdkMessageEvent, StateEvent
from agentlite.run.turn import GroupKey, TurnResult, run_turn

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
    timeout: Annotated[float, typer.Option("--timeout", help="Hard timeout in seconds.")] = 1800.0,
    network: NetworkOption = None,
    allow_net: AllowNetOption = None,
    no_network: NoNetworkOption = False,
    home: HomeOption = None,
    runtime: RuntimeOption = None,
    json: JsonOption = False,
) -> None:
    """Run one agent turn on PROMPT in a fresh box and print the final result."""
    agent_id = check_agent_id(agent or "cli")
    config = backend_config(backend, model, base_url, acp_command)
    spec = BoxSpec(**network_settings(network, allow_net, no_network))
    if timeout <= 0:
        raise typer.BadParameter(f"timeout must be > 0 seconds, got {timeout:g}")
    folder = (workspace or Path.cwd()).resolve()
    if not folder.is_dir():
        from agentlite.core.errors import ConfigError

        raise ConfigError(f"workspace `{folder}` is not a folder")
    home_dir = home_path(home)
    box_runtime, _ = open_runtime(home_dir, runtime)
    code = asyncio.run(_run(box_runtime, home_dir, agent_id, folder, config, prompt, timeout, json, spec))
    raise typer.Exit(code)


async def _run(runtime: BoxRuntime, home: Path, agent_id: str, workspace: Path, config: Any, prompt: str,
               timeout: float, as_json: bool, spec: BoxSpec | None = None) -> int:  # fmt: skip
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, main.cancel)
    live = err.status("starting box…") if (err.is_terminal and not as_json) else None

    def show(event: Event) -> None:
        if as_json:
            sys.stdout.write(
                jsonlib.dumps({"type": "event", "event": event.model_dump(exclude_none=True)}) + "\n"
            )
            sys.stdout.flush()
        elif live is not None and (line := describe(event)):
            live.update(line)

    async with demo_model_if_needed(config) as demo_url:
        if demo_url is not None:
            err.print(f"[yellow]note:[/yellow] {DEMO_NOTICE}")
        run_input = RunnerInput(prompt=prompt, group_folder="main", chat_id="cli", is_main=True,
                                backend=with_base_url(config, demo_url))  # fmt: skip
        if live:
            live.start()
        try:
            async with runtime:
                # A one-off turn in a folder of the user's: the turn pipeline without a session store.
                outcome: TurnResult = await run_turn(runtime, home, GroupKey(agent_id, "main"), run_input, None,
                                                     on_event=show, workspace=workspace, timeout=timeout,
                                                     idle_timeout=30, single_turn=True, spec=spec,
                                                     errors_as_results=False)  # fmt: skip
        except asyncio.CancelledError:
            err.print("stopped; box removed")
            return 130
        finally:
            if live:
                live.stop()
    if demo_url is not None:
        outcome.offline_demo_model = True
    if as_json:
        sys.stdout.write(jsonlib.dumps(outcome.line()) + "\n")
    elif outcome.status == "success":
        out.print(outcome.result or "(the agent finished without a reply)", markup=False)
    else:
        err.print(f"[red]error:[/red] {outcome.error}", markup=True)
    return 0 if outcome.status == "success" else 1
