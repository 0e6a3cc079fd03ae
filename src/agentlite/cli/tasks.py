"""``agentlite tasks list|create|pause|resume|cancel``: scheduled tasks of an agent.

These work on the agent's store directly, so they can run beside ``agentlite serve``: the service's
scheduler picks up new and changed tasks at its next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import typer

from agentlite.cli._common import JsonOption, RuntimeOption, out, print_json, table
from agentlite.cli._platform_opts import WorkdirOption, need_agent, opened
from agentlite.core.names import check_task_id

app = typer.Typer(help="Scheduled tasks: list, create, pause, resume, cancel.", no_args_is_help=True)
AgentName = Annotated[str, typer.Option("--agent", help="Agent name.")]
TaskId = Annotated[str, typer.Argument(help="Task id.")]


@contextlib.asynccontextmanager
async def _scheduler(workdir: Any, runtime: Any, agent_name: str) -> AsyncIterator[Any]:
    from agentlite.platform.scheduler import store_scheduler
    from agentlite.platform.store import AgentStore

    async with opened(workdir, runtime) as platform:
        agent = need_agent(platform, agent_name)
        store = AgentStore(agent.paths.store)
        try:
            yield store_scheduler(store, tz=platform.timezone, agent_id=agent.id)
        finally:
            store.close()


def _row(task: Any) -> dict[str, Any]:
    return task.model_dump(include={"id", "group_folder", "chat_id", "prompt", "schedule_type", "schedule_value",
                                    "context_mode", "status", "next_run", "last_run", "last_result"})  # fmt: skip


def _print(tasks: list[Any], as_json: bool) -> None:
    rows = [_row(t) for t in tasks]
    if as_json:
        print_json(rows)
        return
    t = table("id", "group", "schedule", "status", "next run", "prompt")
    for r in rows:
        t.add_row(r["id"], r["group_folder"], f"{r['schedule_type']} {r['schedule_value']}", r["status"],
                  r["next_run"] or "-", r["prompt"][:60])  # fmt: skip
    out.print(t if rows else "no tasks")


def _run(coro: Any, as_json: bool) -> None:
    result = asyncio.run(coro)
    if result is None:
        from agentlite.cli._common import abort

        abort("no such task", 1)
    _print(result if isinstance(result, list) else [result], as_json)


@app.command("list")
def list_tasks(agent: AgentName = "main", workdir: WorkdirOption = None, runtime: RuntimeOption = None,
               json: JsonOption = False) -> None:  # fmt: skip
    """List an agent's tasks."""

    async def go() -> list[Any]:
        async with _scheduler(workdir, runtime, agent) as s:
            return s.list_tasks()

    _run(go(), json)


@app.command("create")
def create_task(
    prompt: Annotated[str, typer.Argument(help="What the agent is asked each time.")],
    group: Annotated[str, typer.Option("--group", help="Chat id of a registered group.")],
    schedule_type: Annotated[str, typer.Option("--type", help="cron, interval (ms) or once (local time).")],
    value: Annotated[
        str, typer.Option("--value", help="Cron expression, milliseconds, or YYYY-MM-DDTHH:MM:SS.")
    ],
    context: Annotated[str, typer.Option("--context", help="group (its session) or isolated.")] = "isolated",
    agent: AgentName = "main",
    workdir: WorkdirOption = None,
    runtime: RuntimeOption = None,
    json: JsonOption = False,
) -> None:
    """Schedule a task for a group."""

    async def go() -> Any:
        async with _scheduler(workdir, runtime, agent) as s:
            return await s.create_task(chat_id=group, prompt=prompt, schedule_type=schedule_type,
                                       schedule_value=value, context_mode=context)  # fmt: skip

    _run(go(), json)


def _change(action: str) -> Any:
    def command(task_id: TaskId, agent: AgentName = "main", workdir: WorkdirOption = None,
                runtime: RuntimeOption = None, json: JsonOption = False) -> None:  # fmt: skip
        async def go() -> Any:
            check_task_id(task_id)
            async with _scheduler(workdir, runtime, agent) as s:
                result = await getattr(s, f"{action}_task")(task_id)
                return result

        if action != "cancel":
            _run(go(), json)
            return
        cancelled = asyncio.run(go())
        if json:
            print_json({"id": task_id, "cancelled": cancelled})
        else:
            out.print(f"cancelled {task_id}" if cancelled else f"no task {task_id}")
        if not cancelled:
            raise typer.Exit(1)

    command.__doc__ = f"{action.capitalize()} a task."
    return command


for _action in ("pause", "resume", "cancel"):
    app.command(_action)(_change(_action))
