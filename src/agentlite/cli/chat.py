"""``agentlite chat``: talk to an agent in the terminal, with a live view of its work."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from agentlite.cli._common import RuntimeOption, err
from agentlite.cli._endpoint import DEMO_NOTICE, backend_config, needs_demo
from agentlite.cli._platform_opts import WorkdirOption, opened
from agentlite.cli.run import AcpOption, BaseUrlOption, ModelOption
from agentlite.run.protocol import DEFAULT_BACKEND_TYPE, BackendConfig

CHAT_ID = "term:local"

#: Unlike ``run``, unset means "keep the agent's": the option is the same, its default is not.
ChatBackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend", help=f"codex, claude_code or acp (default: the agent's; {DEFAULT_BACKEND_TYPE} if new)."
    ),
]


def chat_command(
    agent: Annotated[str, typer.Option("--agent", help="Agent name (created if new).")] = "main",
    backend: ChatBackendOption = None,
    acp_command: AcpOption = None,
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    workdir: WorkdirOption = None,
    runtime: RuntimeOption = None,
) -> None:
    """Chat with an agent: type a message, see its reply. End with Ctrl-D.

    ``--backend``, ``--model`` and ``--base-url`` set the agent's backend (a new agent is created
    with them; an existing one switches, with a handoff when the type changes).
    """
    asyncio.run(_chat(agent, workdir, runtime, backend, model, base_url, acp_command))


def wanted_backend(current: BackendConfig | None, kind: str | None, model: str | None, base_url: str | None,
                   acp_command: str | None) -> BackendConfig | None:  # fmt: skip
    """The backend the options ask for, or None when they ask for nothing (keep ``current``).

    A new type starts from that type's defaults; the same type keeps what the options leave unset.
    """
    if current is None or (kind is not None and kind != current.type):
        return backend_config(kind or DEFAULT_BACKEND_TYPE, model, base_url, acp_command)
    if model is None and base_url is None and acp_command is None:
        return None
    checked = backend_config(current.type, model, base_url, acp_command)  # validates the options
    changes = {k: v for k, v in (("model", model), ("base_url", base_url), ("command", checked.command)) if v}
    return current.model_copy(update=changes)


async def _chat(name: str, workdir: Any, runtime: Any, kind: str | None, model: str | None,
                base_url: str | None, acp_command: str | None) -> None:  # fmt: skip
    from agentlite.channels.terminal import TerminalChannel

    holder: dict[str, TerminalChannel] = {}
    # Bad options are refused (exit 2) before anything is opened or made.
    backend_config(kind or DEFAULT_BACKEND_TYPE, model, base_url, acp_command)

    async with opened(workdir, runtime) as platform:
        existing = platform.get_agent(name)
        assistant = existing.assistant_name if existing else "Andy"

        def factory(config: Any) -> TerminalChannel:
            holder["term"] = TerminalChannel(config, assistant_name=assistant)
            return holder["term"]

        if existing is None:
            agent = await platform.create_agent(
                name, backend=wanted_backend(None, kind, model, base_url, acp_command)
            )
        else:
            agent = existing
            wanted = wanted_backend(agent.get_backend(), kind, model, base_url, acp_command)
            if wanted is not None and wanted != agent.get_backend():
                change = await agent.set_backend(wanted)
                err.print(f"agent {name}: backend {change['previous'].type} -> {wanted.type} "
                          f"(model {wanted.model or 'default'}, handoff {change['handoff']})")  # fmt: skip
        await agent.add_channel("terminal", factory)
        demo = None
        if needs_demo(agent.get_backend()):
            from agentlite.offline.model_server import ModelServer

            demo = ModelServer(scenario="demo")
            await demo.start()
            agent.endpoint_override = (
                demo.openai_base_url if agent.get_backend().type != "claude_code" else demo.url
            )
            err.print(f"[yellow]note:[/yellow] {DEMO_NOTICE}")
        agent.on(
            "run.tool",
            lambda e: err.print(f"[dim]  tool {e.data['tool_name']}: {e.data['input'][:80]}[/dim]"),
        )
        try:
            await agent.start()
            if CHAT_ID not in agent.registered_groups():
                agent.register_group(
                    CHAT_ID, name="terminal", folder="main", is_main=True, requires_trigger=False
                )
            err.print(f"chatting with {assistant} (agent {name}); Ctrl-D to end")
            await holder["term"].wait_eof()
            await _wait_for_replies(agent)
        finally:
            await agent.stop()
            if demo is not None:
                await demo.stop()


async def _wait_for_replies(agent: Any, timeout: float = 120.0) -> None:
    """After end of input, let the last message's run answer before stopping."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if not agent.busy(CHAT_ID):
            return
        await asyncio.sleep(0.2)
