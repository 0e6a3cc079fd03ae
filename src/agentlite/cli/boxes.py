"""``agentlite boxes`` and ``agentlite cleanup``: every box with its owner, and reaping orphans."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from agentlite.box.lifecycle import cleanup_orphans
from agentlite.cli._common import (
    AgentOption,
    HomeOption,
    JsonOption,
    RuntimeOption,
    home_path,
    out,
    print_json,
    table,
)
from agentlite.image.guest_root import open_configured_runtime
from agentlite.platform.adoption import adoptable_run
from agentlite.platform.box_listing import list_boxes, row_verdict

_VERDICT_STYLE = {"live": "green", "stale": "yellow", "dead": "red", "none": "red", "adoptable": "cyan"}


def boxes(
    agent: AgentOption = None,
    home: HomeOption = None,
    runtime: RuntimeOption = None,
    json: JsonOption = False,
) -> None:
    """List every AgentLite box with its state and owner."""
    home_dir = home_path(home)
    box_runtime, _ = open_configured_runtime(home_dir, runtime, boot=False)
    rows = asyncio.run(list_boxes(box_runtime, home_dir, agent))
    if json:
        print_json(rows)
        return
    t = table("name", "runtime", "state", "owner pid", "boot id", "heartbeat", "verdict")
    for row in rows:
        o = row["owner"] or {}
        verdict = row_verdict(row)
        age = o.get("heartbeat_age")
        t.add_row(
            row["name"],
            row["runtime"],
            row["state"],
            str(o.get("pid", "-")),
            o.get("boot_id") or "-",
            "-" if age is None else f"{age:.0f} s ago",
            f"[{_VERDICT_STYLE[verdict]}]{verdict}[/]",
        )
    out.print(t if rows else "no boxes")


def cleanup(
    agent: AgentOption = None,
    include_live: Annotated[
        bool, typer.Option("--include-live", help="Also remove boxes of live owners.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Explain every decision; change nothing.")
    ] = False,
    home: HomeOption = None,
    runtime: RuntimeOption = None,
    json: JsonOption = False,
) -> None:
    """Remove boxes whose owner is gone (and their records), explaining every decision."""
    home_dir = home_path(home)
    box_runtime, _ = open_configured_runtime(home_dir, runtime, boot=False)
    decisions = asyncio.run(
        cleanup_orphans(
            box_runtime, home_dir, agent, include_live=include_live, dry_run=dry_run, adoptable=adoptable_run
        )
    )
    if json:
        print_json([d.as_json() for d in decisions])
        return
    t = table("name", "action", "reason", "error")
    for d in decisions:
        colour = "green" if d.action == "keep" else "red"
        t.add_row(d.name, f"[{colour}]{d.action}[/]", d.reason, d.error or "")
    out.print(t if decisions else "nothing to clean up")
