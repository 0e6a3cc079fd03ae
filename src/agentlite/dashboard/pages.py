"""The dashboard's pages as HTML fragments, from the rows :mod:`agentlite.dashboard.source` reads.

Each list page is one fragment the stream re-sends when it changes; the words are the CLI's
(verdicts and reasons of ``agentlite boxes``, the decisions of ``cleanup --dry-run``, run states of
``agentlite runs``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from agentlite.dashboard.chart import Bar, Limit, bar_chart
from agentlite.dashboard.html import esc, facts, hidden, table
from agentlite.platform.box_listing import row_verdict
from agentlite.platform.ledger import RUN_STATES, RunRecord
from agentlite.run.protocol import ErrorEvent, Event, ResultEvent

_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens")


def _verdict(word: str) -> str:
    return f'<span class="verdict verdict-{esc(word)}">{esc(word)}</span>'


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f} s ago"


def run_href(agent: str, run_id: str) -> str:
    return f"/runs/{esc(agent)}/{esc(run_id)}"


# -- boxes ----------------------------------------------------------------------------------------


def boxes_fragment(rows: list[dict[str, Any]]) -> str:
    body = []
    for row in rows:
        owner = row["owner"] or {}
        lease = owner.get("lease")
        cleanup = row.get("cleanup") or {}
        remove = (
            f'<a class="button" href="/boxes/remove?{urlencode({"name": row["name"]})}"'
            f' aria-label="Remove box {esc(row["name"])}…">Remove…</a>'
        )
        body.append(
            [
                f'<span class="mono">{esc(row["name"])}</span>',
                esc(row["runtime"]),
                esc(row["state"]),
                esc(owner.get("pid", "-")),
                esc(_age(owner.get("heartbeat_age"))),
                f'<span class="mono">{esc(Path(lease).name)}</span>' if lease else "-",
                _verdict(row_verdict(row)),
                esc(row["reason"])
                + (f" (run {esc(row['adoptable_run'])} adopts it)" if row.get("adoptable_run") else ""),
                esc(cleanup.get("reason", "-")),
                remove,
            ]
        )
    return table(
        "Every box on this home, its owner and the verdict on it; the cleanup column is what "
        "agentlite cleanup --dry-run would do.",
        [
            "box",
            "runtime",
            "state",
            "owner pid",
            "heartbeat",
            "lease",
            "verdict",
            "reason",
            "cleanup",
            "action",
        ],
        body,
        empty="No boxes.",
        numeric=(3,),
    )


def remove_confirm(row: dict[str, Any] | None, name: str, plan: list[dict[str, Any]], form_key: str) -> str:
    """The page that asks before a box is removed (a form: works without script)."""
    if row is None and not plan:
        return f'<p>No box named <code>{esc(name)}</code>.</p><p><a href="/boxes">Back to boxes</a></p>'
    owner = (row or {}).get("owner") or {}
    verdict = "none" if row is None else row_verdict(row)
    would = plan[0]["reason"] if plan else "-"
    keeps = bool(plan) and plan[0]["action"] == "keep"
    live_box = (
        '<p><input type="checkbox" id="include_live" name="include_live" value="1">'
        ' <label for="include_live">Remove it although its owner is alive (as <code>cleanup --include-live</code>;'
        " the owner's run is cut short)</label></p>"
        if keeps
        else ""
    )
    return (
        facts(
            [
                ("box", f"<code>{esc(name)}</code>"),
                ("verdict", _verdict(verdict)),
                ("reason", esc((row or {}).get("reason", "-"))),
                ("owner pid", esc(owner.get("pid", "-"))),
                ("cleanup would", esc(would)),
            ]
        )
        + '<form method="post" action="/boxes/remove">'
        + hidden("name", name)
        + hidden("form_key", form_key)
        + live_box
        + '<p><button type="submit" class="danger">Remove box</button> <a class="button" href="/boxes">Cancel</a></p>'
        "</form>"
    )


def remove_result(decisions: list[dict[str, Any]], error: str | None = None) -> str:
    body = [
        [f"<code>{esc(d['name'])}</code>", esc(d["action"]), esc(d["reason"]), esc(d["error"] or "")]
        for d in decisions
    ]
    failed = f'<p role="alert">The cleanup itself failed: {esc(error)}</p>' if error else ""
    return failed + table("What cleanup did", ["box", "action", "reason", "error"], body,
                 empty="Cleanup found no such box.") + '<p><a href="/boxes">Back to boxes</a></p>'  # fmt: skip


# -- agents ---------------------------------------------------------------------------------------


def agents_fragment(rows: list[dict[str, Any]]) -> str:
    agents = [
        [esc(r["name"]), f'<span class="mono">{esc(r["id"])}</span>', esc(r["backend"]), esc(r["model"] or "-"),
         esc(len(r["groups"]))]
        for r in rows
    ]  # fmt: skip
    groups = []
    for r in rows:
        for g in r["groups"]:
            last: RunRecord | None = g["last_run"]
            last_cell = (
                "-"
                if last is None
                else f'<a href="{run_href(r["name"], last.run_id)}">{esc(last.state)}</a> '
                f'<span class="muted">{esc(last.finished_at or last.created_at)}</span>'
            )
            groups.append(
                [
                    esc(r["name"]),
                    esc(g["name"]),
                    f'<span class="mono">{esc(g["jid"])}</span>',
                    esc(g["folder"]),
                    f'<span class="mono">{esc(g["session"] or "-")}</span>',
                    esc(g["queued"]),
                    esc(g["paused"] or "no"),
                    last_cell,
                ]
            )
    return table("Agents", ["agent", "id", "backend", "model", "groups"], agents, empty="No agents.",
                 numeric=(4,)) + table(
        "Groups: the session their next turn resumes, messages waiting, and budget pauses",
        ["agent", "group", "chat id", "folder", "session", "queued messages", "paused by budget", "last run"],
        groups, empty="No registered groups.", numeric=(5,))  # fmt: skip


# -- runs -----------------------------------------------------------------------------------------


def _started(record: RunRecord) -> str:
    return record.state_times.get("starting") or record.created_at


def _duration(record: RunRecord) -> str:
    return "-" if record.duration_s is None else f"{record.duration_s:.1f} s"


def runs_fragment(runs: list[tuple[str, RunRecord]]) -> str:
    body = [
        [f'<a href="{run_href(agent, r.run_id)}" class="mono">{esc(r.run_id)}</a>', esc(agent), esc(r.group_folder),
         esc(r.backend), esc(r.state), esc(_started(r)), esc(_duration(r)),
         f'<span class="mono">{esc(r.box or "-")}</span>', esc(r.final_status or "-")]
        for agent, r in runs
    ]  # fmt: skip
    return table("The run ledger, newest first", ["run", "agent", "group", "backend", "state", "started",
                 "duration", "box", "final"], body, empty="No runs.", numeric=(6,))  # fmt: skip


def runs_filter(current: Any, agents: list[str]) -> str:
    """A plain GET form over the ledger's own filters (agent, group folder, state)."""

    def options(values: list[str], chosen: str | None, blank: str) -> str:
        return f'<option value="">{esc(blank)}</option>' + "".join(
            f'<option value="{esc(v)}"{" selected" if v == chosen else ""}>{esc(v)}</option>' for v in values
        )

    return (
        '<form method="get" action="/runs" class="filters" aria-label="Filter runs">'
        f'<label for="f-agent">agent</label> <select id="f-agent" name="agent">{options(agents, current.agent, "all")}</select> '
        f'<label for="f-group">group</label> <input id="f-group" name="group" size="12" value="{esc(current.group or "")}"> '
        f'<label for="f-state">state</label> <select id="f-state" name="state">{options(list(RUN_STATES), current.state, "any")}</select> '
        '<button type="submit">Filter</button></form>'
    )


def run_summary(agent: str, record: RunRecord) -> str:
    return facts(
        [
            ("agent", esc(agent)),
            ("group", esc(record.group_folder)),
            ("state", f'<span class="run-state">{esc(record.state)}</span>'),
            ("backend", esc(record.backend)),
            ("box", f'<span class="mono">{esc(record.box or "-")}</span>'),
            ("started", esc(_started(record))),
            ("duration", esc(_duration(record))),
            ("session", f'<span class="mono">{esc(record.session_id or "-")}</span>'),
            ("note", esc(record.note or "-")),
        ]
    )


def event_item(event: Event) -> str:
    data = event.model_dump(mode="json", exclude_none=True)
    kind = str(data.pop("type", "event"))
    if kind == "sdk_message":
        kind = f"sdk {data.get('sdk_type')}" + (f"/{data['sdk_subtype']}" if data.get("sdk_subtype") else "")
    text = json.dumps(data, ensure_ascii=False)
    if len(text) > 400:
        text = text[:399] + "…"
    return f'<li class="event" data-type="{esc(event.type)}"><strong>{esc(kind)}</strong> <code>{esc(text)}</code></li>'


def final_block(record: RunRecord, event: Event | None = None) -> str:
    """The run's one final: the ledger's once it holds it, else the journal's final event."""
    if record.final_status is not None:
        status, text = record.final_status, record.final_text or record.final_error or ""
    elif isinstance(event, ResultEvent):
        status, text = "success", event.result or ""
    elif isinstance(event, ErrorEvent):
        status, text = "error", event.error
    else:
        return '<p class="muted">No final yet.</p>'
    css = "final-success" if status == "success" else "final-error"
    return (
        f'<div class="final {css}" data-status="{esc(status)}"><strong>final: {esc(status)}</strong>'
        f"<p>{esc(text)}</p></div>"
    )


# -- tasks ----------------------------------------------------------------------------------------


def tasks_fragment(tasks: list[tuple[str, Any]], form_key: str) -> str:
    body = []
    for agent, t in tasks:
        action = {"active": "pause", "paused": "resume"}.get(t.status)
        button = "-"
        if action:
            button = (
                '<form class="inline" method="post" action="/tasks/change">'
                + hidden("agent", agent) + hidden("task", t.id) + hidden("action", action)
                + hidden("form_key", form_key)
                + f'<button type="submit" aria-label="{esc(action.capitalize())} task {esc(t.id)}">'
                f"{esc(action.capitalize())}</button></form>"
            )  # fmt: skip
        body.append(
            [esc(agent), f'<span class="mono">{esc(t.id)}</span>', esc(t.group_folder),
             esc(f"{t.schedule_type} {t.schedule_value}"), esc(t.status), esc(t.next_run or "-"),
             esc(t.last_run or "-"), esc((t.last_result or "-")[:120]), esc(t.prompt[:80]), button]
        )  # fmt: skip
    return table("Scheduled tasks", ["agent", "task", "group", "schedule", "status", "next run", "last run",
                 "last result", "prompt", "action"], body, empty="No tasks.")  # fmt: skip


# -- usage ----------------------------------------------------------------------------------------


def usage_filter(since: str) -> str:
    return (
        '<form method="get" action="/usage" class="filters" aria-label="Usage period">'
        '<label for="f-since">since</label> '
        f'<input id="f-since" name="since" size="12" placeholder="7d, 24h or 2026-01-31" value="{esc(since)}"> '
        '<button type="submit">Show</button> <a href="/usage">all time</a></form>'
    )


def _tokens(row: dict[str, Any]) -> int:
    return sum(int(row[f]) for f in _TOKEN_FIELDS)


def _cost(row: dict[str, Any]) -> str:
    if row["cost_usd"] is not None:
        return f"${row['cost_usd']:.4f}"
    if row["known_cost_usd"]:
        return f"≥ ${row['known_cost_usd']:.4f} ({row['unknown_cost_runs']} run(s) unknown)"
    return "unknown"


def _amount(unit: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:.4f}" if unit == "usd" else f"{int(value):,} tokens"


def _limits(budgets: list[dict[str, Any]], unit: str, period: str) -> list[Limit]:
    key = f"{period}_limit"
    return [
        Limit(f"budget {b['agent']} {b['scope']} {period}", float(b[key]))
        for b in budgets
        if b["unit"] == unit and b[key] is not None
    ]


def usage_fragment(summary: dict[str, Any]) -> str:
    budgets = summary["budgets"]
    parts = []
    titles = {"agent": "Tokens per agent", "group": "Tokens per group", "model": "Tokens per model",
              "day": "Tokens per day"}  # fmt: skip
    for by in ("day", "agent", "group", "model"):
        rows = summary[by]
        label = (lambda r: r["agent"]) if by == "agent" else (lambda r, by=by: f"{r['agent']} · {r[by]}")
        limits = _limits(budgets, "tokens", "daily" if by == "day" else "total")
        parts.append(
            bar_chart(f"tokens-by-{by}", titles[by], [Bar(label(r), _tokens(r)) for r in rows], limits)
        )
    cost_rows = summary["day"]
    cost_bars = [Bar(f"{r['agent']} · {r['day']}", r["known_cost_usd"]) for r in cost_rows]
    parts.append(bar_chart("cost-by-day", "Cost per day (USD; unknown parts count 0)", cost_bars,
                           _limits(budgets, "usd", "daily"), fmt=lambda v: f"${v:.4f}"))  # fmt: skip
    for by in ("agent", "group", "model", "day"):
        body = [
            [esc(r["agent"]), *([] if by == "agent" else [esc(r[by])]), esc(r["runs"]),
             *(esc(r[f]) for f in _TOKEN_FIELDS), esc(_tokens(r)), esc(_cost(r))]
            for r in summary[by]
        ]  # fmt: skip
        heads = ["agent", *([] if by == "agent" else [by]), "runs", "input", "output", "cached", "cache write",
                 "tokens", "cost"]  # fmt: skip
        first_number = 1 if by == "agent" else 2
        parts.append(table(f"Usage by {by}", heads, body, empty=f"No usage by {by} yet.",
                           numeric=tuple(range(first_number, first_number + 6))))  # fmt: skip
    budget_rows = [
        [esc(b["agent"]), esc(b["scope"]), esc(b["unit"]),
         esc(f"{_amount(b['unit'], b['daily_spent'])} of {_amount(b['unit'], b['daily_limit'])}"),
         esc(f"{_amount(b['unit'], b['total_spent'])} of {_amount(b['unit'], b['total_limit'])}"),
         esc(b["reset_hour"]), esc(b["paused"] or "no")]
        for b in budgets
    ]  # fmt: skip
    parts.append(table("Budgets", ["agent", "scope", "unit", "daily", "total", "reset hour", "paused"],
                       budget_rows, empty="No budgets."))  # fmt: skip
    return "".join(parts)
