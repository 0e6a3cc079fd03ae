"""``agentlite runs [--agent] [--group] [--state] [--json]`` and ``agentlite runs show ID``: the run
ledger of an agent (:mod:`agentlite.platform.ledger`), read from its store beside a running service."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from agentlite.cli._common import JsonOption, RuntimeOption, abort, out, print_json, table
from agentlite.cli._platform_opts import WorkdirOption, need_agent, opened
from agentlite.core.errors import ConfigError

app = typer.Typer(help="The run ledger: every turn, its state, box and final.", invoke_without_command=True)
AgentName = Annotated[str, typer.Option("--agent", help="Agent name.")]


async def _agent_paths(workdir: Any, runtime: str | None, agent_name: str) -> tuple[Path, Path]:
    async with opened(workdir, runtime) as platform:
        agent = need_agent(platform, agent_name)
        return agent.paths.store, agent.ipc_root


def _open_store(path: Path) -> Any:
    from agentlite.platform.store import AgentStore

    if not path.is_file():
        return None
    return AgentStore(path)


@app.callback()
def runs(ctx: typer.Context, agent: AgentName = "main",
         group: Annotated[str | None, typer.Option("--group", help="Only this group folder.")] = None,
         state: Annotated[list[str] | None, typer.Option("--state", help="Only runs in this state (repeatable).")] = None,
         workdir: WorkdirOption = None, runtime: RuntimeOption = None, json: JsonOption = False) -> None:  # fmt: skip
    """List an agent's runs, oldest first."""
    ctx.obj = {"agent": agent, "workdir": workdir, "runtime": runtime}
    if ctx.invoked_subcommand is not None:
        return
    from agentlite.platform.ledger import RUN_STATES

    for s in state or []:
        if s not in RUN_STATES:
            raise ConfigError(f"--state `{s}` is not a run state ({', '.join(RUN_STATES)})")
    store_path, _ = asyncio.run(_agent_paths(workdir, runtime, agent))
    store = _open_store(store_path)
    records = [] if store is None else store.runs.list(group=group, states=tuple(state or ()) or None)
    if store is not None:
        store.close()
    rows = [r.as_dict() for r in records]
    if json:
        print_json(rows)
        return
    t = table("run id", "group", "backend", "state", "started", "duration", "box", "final")
    for r in rows:
        started = r["state_times"].get("starting") or r["created_at"]
        duration = "-" if r["duration_s"] is None else f"{r['duration_s']:.1f} s"
        t.add_row(r["run_id"], r["group_folder"], r["backend"], r["state"], started, duration, r["box"] or "-",
                  r["final_status"] or "-")  # fmt: skip
    out.print(t if rows else "no runs")


@app.command("show")
def show(ctx: typer.Context, run_id: Annotated[str, typer.Argument(help="Run id.")],
         json: JsonOption = False) -> None:  # fmt: skip
    """Print a run's ledger entry and the events of its journal."""
    from agentlite.run.journal import journal_of, read_journal

    opts = ctx.obj or {}
    store_path, ipc_root = asyncio.run(_agent_paths(opts.get("workdir"), opts.get("runtime"),
                                                    opts.get("agent", "main")))  # fmt: skip
    store = _open_store(store_path)
    record = None if store is None else store.runs.get(run_id)
    if store is not None:
        store.close()
    if record is None:
        abort(f"no run `{run_id}`", 1)
    entries = read_journal(journal_of(ipc_root, record))
    events = [e.event.model_dump(mode="json", exclude_none=True) for e in entries]
    if json:
        print_json({"run": record.as_dict(), "events": events})
        return
    out.print(
        f"run {record.run_id}  group {record.group_folder}  state {record.state}  box {record.box or '-'}"
    )
    if record.final_status:
        out.print(f"final: {record.final_status}: {record.final_text or record.final_error or ''}")
    for event in events:
        out.print(_one_line(event), markup=False, highlight=False)
    if not events:
        out.print("(no journal events)")


def _one_line(event: dict[str, Any]) -> str:
    import json as json_lib

    return json_lib.dumps(event, ensure_ascii=False)
