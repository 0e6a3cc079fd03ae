"""``agentlite boxes`` and ``agentlite cleanup``: every box with its owner, and reaping orphans."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import typer

from agentlite.box import open_runtime
from agentlite.box.base import BoxInfo, BoxRuntime
from agentlite.box.lifecycle import box_prefix, cleanup_orphans
from agentlite.box.ownership import RecordStore, Verdict
from agentlite.cli._common import (
    AgentOption,
    HomeOption,
    JsonOption,
    RuntimeOption,
    home_path,
    out,
    print_json,
    table,
    user_errors,
)
from agentlite.platform.adoption import adoptable_run

_VERDICT_STYLE = {"live": "green", "stale": "yellow", "dead": "red", "none": "red", "adoptable": "cyan"}


def boxes(
    agent: AgentOption = None,
    home: HomeOption = None,
    runtime: RuntimeOption = None,
    json: JsonOption = False,
) -> None:
    """List every AgentLite box with its state and owner."""
    with user_errors():
        home_dir = home_path(home)
        box_runtime, _ = open_runtime(home_dir, runtime, boot=False)
        listed, untracked = asyncio.run(_list_all(box_runtime))
    store = RecordStore(home_dir)
    now = time.time()
    rows: list[dict[str, Any]] = []
    # Untracked boxes (processes whose state was deleted under them) are listed so they can be seen;
    # `cleanup` reaps them.
    entries = [(b.name, b.runtime, str(b.state), b.running) for b in listed]
    entries += [(name, box_runtime.name, "untracked", True) for name in untracked]
    for name, runtime_name, state, running in entries:
        if not name.startswith(box_prefix(agent)):
            continue
        judgement = store.judge(name, now)
        owner = None
        if judgement.record is not None and judgement.verdict is not Verdict.NONE:
            r = judgement.record
            owner = {
                "pid": r.pid,
                "boot_id": r.boot_id,
                "updated_at": r.updated_at,
                "verdict": str(judgement.verdict),
                "heartbeat_age": None
                if judgement.heartbeat_age is None
                else round(judgement.heartbeat_age, 1),
            }
        # A box whose owner is gone but whose runner lives on a turn in the agent's ledger.
        adoptable = None if judgement.verdict.keeps_box or not running else adoptable_run(home_dir, name)
        rows.append(
            {
                "name": name,
                "runtime": runtime_name,
                "state": state,
                "running": running,
                "owner": owner,
                "reason": judgement.reason,
                "adoptable_run": adoptable,
            }
        )
    rows += _other_hosts_rows(box_runtime, store, box_prefix(agent), now)
    if json:
        print_json(rows)
        return
    t = table("name", "runtime", "state", "owner pid", "boot id", "heartbeat", "verdict")
    for row in rows:
        o = row["owner"] or {}
        verdict = "adoptable" if row.get("adoptable_run") else o.get("verdict", "none")
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


async def _list_all(box_runtime: BoxRuntime) -> tuple[list[BoxInfo], list[str]]:
    listed = await box_runtime.list()
    known = {b.name for b in listed}
    return listed, [n for n in await box_runtime.untracked() if n not in known]


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
    with user_errors():
        home_dir = home_path(home)
        box_runtime, _ = open_runtime(home_dir, runtime, boot=False)
        decisions = asyncio.run(
            cleanup_orphans(box_runtime, home_dir, agent, include_live=include_live, dry_run=dry_run)
        )
    if json:
        print_json([d.as_json() for d in decisions])
        return
    t = table("name", "action", "reason", "error")
    for d in decisions:
        colour = "green" if d.action == "keep" else "red"
        t.add_row(d.name, f"[{colour}]{d.action}[/]", d.reason, d.error or "")
    out.print(t if decisions else "nothing to clean up")


def _other_hosts_rows(box_runtime: Any, store: RecordStore, prefix: str, now: float) -> list[dict[str, Any]]:
    """BoxLite boxes in other hosts' homes, from what those hosts publish (their homes stay shut).

    The home's lock decides the verdict: it is the host's lease.
    """
    other_hosts_boxes = getattr(box_runtime, "other_hosts_boxes", None)
    if other_hosts_boxes is None:
        return []
    rows = []
    for box, home in other_hosts_boxes(prefix):
        record = store.judge(box.name, now).record
        state = home.state
        owner = {
            "pid": home.pid,
            "boot_id": None if state is None else state.boot_id,
            "updated_at": None if state is None else state.updated_at,
            "verdict": str(home.verdict),
            "heartbeat_age": None
            if state is None or state.age(now) is None
            else round(state.age(now) or 0.0, 1),
        }
        rows.append(
            {
                "name": box.name,
                "runtime": box.runtime,
                "state": str(box.state),
                "running": box.running,
                "owner": owner,
                "reason": home.reason,
                "box_home": str(home.home),
                "record": record is not None,
            }
        )
    return rows
