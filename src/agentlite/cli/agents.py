"""``agentlite agents list|create|delete``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from agentlite.cli._common import JsonOption, RuntimeOption, out, print_json, table
from agentlite.cli._endpoint import backend_config
from agentlite.cli._platform_opts import WorkdirOption, opened
from agentlite.cli.run import AcpOption, BackendOption, BaseUrlOption, ModelOption
from agentlite.run.protocol import DEFAULT_BACKEND_TYPE

app = typer.Typer(help="Create, list and delete agents.", no_args_is_help=True)


def _row(agent: Any) -> dict[str, Any]:
    backend = agent.get_backend()
    return {"name": agent.name, "id": agent.id, "assistant_name": agent.assistant_name, "backend": backend.type,
            "model": backend.model, "workdir": str(agent.workdir)}  # fmt: skip


def _print(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(rows)
        return
    t = table("name", "id", "assistant", "backend", "model", "workdir")
    for r in rows:
        t.add_row(r["name"], r["id"], r["assistant_name"], r["backend"], r["model"] or "-", r["workdir"])
    out.print(t if rows else "no agents")


@app.command("list")
def list_agents(
    workdir: WorkdirOption = None, runtime: RuntimeOption = None, json: JsonOption = False
) -> None:
    """List the agents of the platform."""

    async def go() -> list[dict[str, Any]]:
        async with opened(workdir, runtime) as platform:
            return [_row(a) for _, a in sorted(platform.agents.items())]

    _print(asyncio.run(go()), json)


@app.command("create")
def create_agent(
    name: Annotated[str, typer.Argument(help="Agent name.")],
    assistant_name: Annotated[
        str, typer.Option("--assistant-name", help="Name it answers to (@Name).")
    ] = "Andy",
    backend: BackendOption = DEFAULT_BACKEND_TYPE,
    acp_command: AcpOption = None,
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    workdir: WorkdirOption = None,
    runtime: RuntimeOption = None,
    json: JsonOption = False,
) -> None:
    """Create an agent (it starts with `agentlite serve` or `agentlite chat`)."""

    async def go() -> dict[str, Any]:
        config = backend_config(backend, model, base_url, acp_command)
        async with opened(workdir, runtime) as platform:
            return _row(await platform.create_agent(name, assistant_name=assistant_name, backend=config))

    _print([asyncio.run(go())], json)


@app.command("delete")
def delete_agent(
    name: Annotated[str, typer.Argument(help="Agent name.")],
    workdir: WorkdirOption = None,
    runtime: RuntimeOption = None,
    json: JsonOption = False,
) -> None:
    """Delete an agent: its boxes (live ones too), its folder and its registry row."""

    async def go() -> bool:
        async with opened(workdir, runtime) as platform:
            return await platform.delete_agent(name)

    deleted = asyncio.run(go())
    if json:
        print_json({"name": name, "deleted": deleted})
    else:
        out.print(f"deleted agent {name}" if deleted else f"no agent named {name}")
    if not deleted:
        raise typer.Exit(1)
