"""Every box on a home with its owner and a verdict: what ``agentlite boxes`` prints and the
dashboard's Boxes page shows, computed once here."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from agentlite.box.base import BoxInfo, BoxRuntime
from agentlite.box.lifecycle import box_prefix
from agentlite.box.ownership import RecordStore, Verdict
from agentlite.platform.adoption import adoptable_run


async def list_boxes(
    box_runtime: BoxRuntime, home: Path, agent_id: str | None = None
) -> list[dict[str, Any]]:
    """One row per box (``agent_id``: only that agent's): name, runtime, state, running, owner
    (pid, boot id, heartbeat age, verdict, lease) or None, the verdict's reason, and the run a
    dead owner's box may be adopted by."""
    listed, untracked = await _list_all(box_runtime)
    store = RecordStore(home)
    now = time.time()
    prefix = box_prefix(agent_id)
    rows: list[dict[str, Any]] = []
    # Untracked boxes (processes whose state was deleted under them) are listed so they can be seen;
    # `cleanup` reaps them.
    entries = [(b.name, b.runtime, str(b.state), b.running) for b in listed]
    entries += [(name, box_runtime.name, "untracked", True) for name in untracked]
    for name, runtime_name, state, running in entries:
        if not name.startswith(prefix):
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
                "lease": r.lease,
            }
        # A box whose owner is gone but whose runner lives on a turn in the agent's ledger.
        adoptable = None if judgement.verdict.keeps_box or not running else adoptable_run(home, name)
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
    rows += _other_hosts_rows(box_runtime, store, prefix, now)
    return rows


def row_verdict(row: dict[str, Any]) -> str:
    """The one word a reader sees: ``adoptable`` for a dead owner's box a run will adopt, else the
    owner's verdict (``none`` without a usable record)."""
    if row.get("adoptable_run"):
        return "adoptable"
    return str((row["owner"] or {}).get("verdict", "none"))


async def _list_all(box_runtime: BoxRuntime) -> tuple[list[BoxInfo], list[str]]:
    listed = await box_runtime.list()
    known = {b.name for b in listed}
    return listed, [n for n in await box_runtime.untracked() if n not in known]


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
            "lease": str(home.home),
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
