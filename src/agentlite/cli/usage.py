"""``agentlite usage`` and ``agentlite budgets list|set|resume``: what the agents spent, and their limits.

Both work on the agents' stores directly, so they run beside ``agentlite serve``: the service reads
budgets and pauses from the store before every turn, so a ``resume`` here takes effect at the next
message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentlite.cli._common import JsonOption, RuntimeOption, out, print_json, table
from agentlite.cli._platform_opts import WorkdirOption, need_agent, opened
from agentlite.core.clock import parse_since
from agentlite.core.errors import ConfigError

if TYPE_CHECKING:
    from agentlite.platform.budgets import Budgets

budgets_app = typer.Typer(help="Budgets per agent and group: list, set, resume.", no_args_is_help=True)
AgentName = Annotated[str, typer.Option("--agent", help="Agent name.")]
GroupOption = Annotated[str, typer.Option("--group", help="A group's chat id, or `*` for the whole agent.")]


@contextlib.asynccontextmanager
async def _stores(
    workdir: Any, runtime: Any, agent_name: str | None
) -> AsyncIterator[list[tuple[str, Any, str]]]:
    """(agent name, open store, platform time zone) for one agent or all."""
    from agentlite.platform.store import AgentStore

    async with opened(workdir, runtime) as platform:
        agents = (
            [need_agent(platform, agent_name)]
            if agent_name
            else [platform.agents[n] for n in sorted(platform.agents)]
        )
        stores = [(a.name, AgentStore(a.paths.store), platform.timezone) for a in agents]
        try:
            yield stores
        finally:
            for _, store, _ in stores:
                store.close()


@contextlib.asynccontextmanager
async def _agent_budgets(workdir: Any, runtime: Any, agent_name: str) -> AsyncIterator[tuple[str, Budgets]]:
    """(agent name, its budgets) for ``set`` and ``resume``."""
    from agentlite.platform.budgets import Budgets

    async with _stores(workdir, runtime, agent_name) as stores:
        name, store, tz = stores[0]
        yield name, Budgets(store, timezone=tz)


def _cost(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def usage_command(
    agent: Annotated[str | None, typer.Option("--agent", help="Agent name (default: every agent).")] = None,
    group: Annotated[str | None, typer.Option("--group", help="Only this group's chat id.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="7d, 24h, 30m, or an ISO date/time.")] = None,
    by: Annotated[str, typer.Option("--by", help="model, group or day (the platform's days).")] = "model",
    workdir: WorkdirOption = None,
    runtime: RuntimeOption = None,
    json: JsonOption = False,
) -> None:
    """Tokens and cost, summed by model, group or day; unknown costs are shown as unknown."""
    from agentlite.platform.usage import usage_summary

    async def go() -> list[dict[str, Any]]:
        if by not in ("model", "group", "day"):
            raise ConfigError(f"--by `{by}`: choose model, group or day")
        start = parse_since(since)
        rows: list[dict[str, Any]] = []
        async with _stores(workdir, runtime, agent) as stores:
            for name, store, tz in stores:
                summary = usage_summary(store, timezone=tz, by=by, chat_id=group, since=start)  # type: ignore[arg-type]
                rows += [{"agent": name, **r} for r in summary]
        return rows

    rows = asyncio.run(go())
    if json:
        print_json(rows)
        return
    t = table("agent", by, "runs", "input", "cached", "cache write", "output", "cost")
    for r in rows:
        cost = _cost(r["cost_usd"])
        if r["cost_usd"] is None and r["known_cost_usd"]:
            cost = f"≥ ${r['known_cost_usd']:.4f} ({r['unknown_cost_runs']} run(s) unknown)"
        t.add_row(r["agent"], str(r[by]), str(r["runs"]), str(r["input_tokens"]), str(r["cached_input_tokens"]),
                  str(r["cache_write_tokens"]), str(r["output_tokens"]), cost)  # fmt: skip
    out.print(t if rows else "no usage recorded")


def _statuses(stores: list[tuple[str, Any, str]]) -> Iterator[dict[str, Any]]:
    from agentlite.platform.budgets import budget_statuses

    for name, store, tz in stores:
        for status in budget_statuses(store, timezone=tz):
            yield {"agent": name, **status}


def _print_budgets(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(rows)
        return

    def amount(unit: str, value: float | None) -> str:
        if value is None:
            return "-"
        return f"${value:.4f}" if unit == "usd" else f"{int(value)}"

    t = table("agent", "scope", "unit", "daily", "total", "reset hour", "paused")
    for r in rows:
        t.add_row(r["agent"], r["scope"], r["unit"],
                  f"{amount(r['unit'], r['daily_spent'])} of {amount(r['unit'], r['daily_limit'])}",
                  f"{amount(r['unit'], r['total_spent'])} of {amount(r['unit'], r['total_limit'])}",
                  str(r["reset_hour"]), r["paused"] or "no")  # fmt: skip
    out.print(t if rows else "no budgets")


@budgets_app.command("list")
def list_budgets(
    agent: Annotated[str | None, typer.Option("--agent", help="Agent name (default: every agent).")] = None,
    workdir: WorkdirOption = None,
    runtime: RuntimeOption = None,
    json: JsonOption = False,
) -> None:
    """Every budget, what it has spent in this period and in total, and whether it pauses its group."""

    async def go() -> list[dict[str, Any]]:
        async with _stores(workdir, runtime, agent) as stores:
            return list(_statuses(stores))

    rows = asyncio.run(go())
    _print_budgets(rows, json)


@budgets_app.command("set")
def set_budget(
    agent: AgentName = "main",
    group: GroupOption = "*",
    daily: Annotated[float | None, typer.Option("--daily", help="Daily limit (USD or tokens).")] = None,
    total: Annotated[float | None, typer.Option("--total", help="Total limit (USD or tokens).")] = None,
    unit: Annotated[str, typer.Option("--unit", help="usd or tokens.")] = "usd",
    reset_hour: Annotated[
        int, typer.Option("--reset-hour", help="Hour 0..23 the day starts (platform time zone).")
    ] = 0,
    workdir: WorkdirOption = None,
    runtime: RuntimeOption = None,
    json: JsonOption = False,
) -> None:
    """Set (replace) the budget of one group or of the whole agent."""
    from agentlite.platform.budgets import Budget

    async def go() -> list[dict[str, Any]]:
        if daily is None and total is None:
            raise ConfigError("give --daily and/or --total")
        budget = Budget(group, unit, daily, total, reset_hour)  # type: ignore[arg-type]
        async with _agent_budgets(workdir, runtime, agent) as (name, budgets):
            return [{"agent": name, **budgets.status(budgets.set(budget)).as_dict()}]

    rows = asyncio.run(go())
    _print_budgets(rows, json)


@budgets_app.command("resume")
def resume_budget(
    agent: AgentName = "main",
    group: GroupOption = "*",
    workdir: WorkdirOption = None,
    runtime: RuntimeOption = None,
    json: JsonOption = False,
) -> None:
    """Lift a budget pause: the next message runs; the limits count again from what is spent now."""

    async def go() -> list[dict[str, Any]]:
        async with _agent_budgets(workdir, runtime, agent) as (name, budgets):
            if not budgets.resume(group):
                raise ConfigError(
                    f"agent `{name}` has no budget for `{group}` (see `agentlite budgets list`)"
                )
            return [{"agent": name, **budgets.status(budgets.get(group)).as_dict()}]  # type: ignore[arg-type]

    rows = asyncio.run(go())
    _print_budgets(rows, json)
