"""``agentlite chat``: talk to an agent in the terminal, with a live view of its work."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from agentlite.cli._common import RuntimeOption, err, user_errors
from agentlite.cli._endpoint import DEMO_NOTICE, needs_demo
from agentlite.cli._platform_opts import WorkdirOption, opened

CHAT_ID = "term:local"


def chat_command(
    agent: Annotated[
        str, typer.Option("--agent", help="Agent name (created with the codex backend if new).")
    ] = "main",
    workdir: WorkdirOption = None,
    runtime: RuntimeOption = None,
) -> None:
    """Chat with an agent: type a message, see its reply. End with Ctrl-D."""
    with user_errors():
        asyncio.run(_chat(agent, workdir, runtime))


async def _chat(name: str, workdir: Any, runtime: Any) -> None:
    from agentlite.channels.terminal import TerminalChannel

    holder: dict[str, TerminalChannel] = {}

    async with opened(workdir, runtime) as platform:
        existing = platform.get_agent(name)
        assistant = existing.assistant_name if existing else "Andy"

        def factory(config: Any) -> TerminalChannel:
            holder["term"] = TerminalChannel(config, assistant_name=assistant)
            return holder["term"]

        agent = existing or await platform.create_agent(name, backend={"type": "codex"})
        await agent.add_channel("terminal", factory)
        demo = None
        if needs_demo(agent.get_backend()):
            from agentlite.testing.model_server import ModelServer

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
