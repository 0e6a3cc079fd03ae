"""Token usage and cost: the ledger of every run in the agent's store (a run's running tally is
:mod:`agentlite.run.usage_tally`).

A backend reports usage per model call (``scope="call"``, provisional: claude's ``assistant``
messages) and/or per turn (``scope="turn"``: codex's ``turn.completed``, claude's ``result``); a
turn's total replaces its calls, so nothing counts twice. The tally prices what the backend did not
price with the :class:`~agentlite.run.prices.PriceTable`; a model without a price makes the cost
unknown (``None``), never 0. The ledger keeps one row per run and model, replaced as a whole when
the same run is recorded again (a re-delivered final), so a run's usage counts once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from agentlite.core.clock import iso_utc
from agentlite.platform.store import AgentStore
from agentlite.run.usage_tally import Counts, UsageTally

Unit = Literal["usd", "tokens"]
GroupBy = Literal["model", "group", "day", "agent"]


@dataclass(frozen=True)
class UsageRow:
    run_id: str
    model: str | None
    chat_id: str
    group_folder: str
    backend_type: str
    at: str
    counts: Counts
    #: ``reported`` (the backend's), ``price_table``, ``unknown`` (no price), ``no_usage`` (the backend sent none).
    cost_source: str
    tokens_known: bool


class UsageLedger:
    """The ``usage`` table of one agent's store."""

    def __init__(self, store: AgentStore) -> None:
        self._db = store.database

    def record(self, run_id: str, tally: UsageTally, *, chat_id: str, group_folder: str, backend_type: str,
               at: datetime) -> None:  # fmt: skip
        """Replace the run's rows with the tally; a run that reported no usage gets one row with
        unknown tokens and cost, so it shows as unknown, not as free."""
        rows = tally.by_model()
        stamp = iso_utc(at)
        with self._db.write() as conn:
            conn.execute("DELETE FROM usage WHERE run_id = ?", (run_id,))
            if not tally.events:
                conn.execute(
                    "INSERT INTO usage VALUES (?, '', ?, ?, ?, ?, 0, 0, 0, 0, NULL, 'no_usage', 0)",
                    (run_id, chat_id, group_folder, backend_type, stamp),
                )
                return
            for model, c in rows.items():
                source = "unknown" if c.cost_usd is None else "reported" if c.reported else "price_table"
                conn.execute(
                    "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                    (run_id, model, chat_id, group_folder, backend_type, stamp, c.input_tokens, c.output_tokens,
                     c.cached_input_tokens, c.cache_write_tokens, c.cost_usd, source),
                )  # fmt: skip

    def rows(self, *, chat_id: str | None = None, since: datetime | None = None,
             run_id: str | None = None) -> list[UsageRow]:  # fmt: skip
        where, params = _filters(chat_id, since, run_id)
        with self._db.read() as conn:
            found = conn.execute(
                "SELECT run_id, model, chat_id, group_folder, backend_type, at, input_tokens, output_tokens,"
                f" cached_input_tokens, cache_write_tokens, cost_usd, cost_source, tokens_known FROM usage{where}"
                " ORDER BY at, run_id, model",
                params,
            ).fetchall()
        return [
            UsageRow(r[0], r[1] or None, r[2], r[3], r[4], r[5], Counts(r[6], r[7], r[8], r[9], r[10], r[11] == "reported"),
                     r[11], bool(r[12]))
            for r in found
        ]  # fmt: skip

    def spent(self, *, chat_id: str | None, since: datetime | None, unit: Unit) -> float:
        """USD (unknown costs count 0 here: a budget cannot charge what it cannot price) or tokens."""
        where, params = _filters(chat_id, since, None)
        column = (
            "cost_usd"
            if unit == "usd"
            else "input_tokens + output_tokens + cached_input_tokens + cache_write_tokens"
        )
        with self._db.read() as conn:
            (value,) = conn.execute(f"SELECT COALESCE(SUM({column}), 0) FROM usage{where}", params).fetchone()
        return float(value)


def _filters(chat_id: str | None, since: datetime | None, run_id: str | None) -> tuple[str, tuple[Any, ...]]:
    clauses, params = [], []
    if chat_id is not None:
        clauses.append("chat_id = ?")
        params.append(chat_id)
    if since is not None:
        clauses.append("at >= ?")
        params.append(iso_utc(since))
    if run_id is not None:
        clauses.append("run_id = ?")
        params.append(run_id)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def summarize(rows: Iterable[UsageRow], by: GroupBy, *, day_of: Callable[[str], str] | None = None,
              agent: str = "") -> list[dict[str, Any]]:  # fmt: skip
    """Rows summed per model, group, day (``day_of`` maps a timestamp to the local day) or agent;
    ``cost_usd`` ``None`` where any part is unknown, with ``unknown_cost_runs`` counting those."""
    sums: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = {"model": row.model or "(unknown)", "group": row.chat_id, "agent": agent,
               "day": day_of(row.at) if day_of else row.at[:10]}[by]  # fmt: skip
        entry = sums.setdefault(key, {by: key, "runs": set(), "input_tokens": 0, "output_tokens": 0,
                                      "cached_input_tokens": 0, "cache_write_tokens": 0, "cost_usd": 0.0,
                                      "known_cost_usd": 0.0, "unknown_cost_runs": set()})  # fmt: skip
        entry["runs"].add(row.run_id)
        for name in ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens"):
            entry[name] += getattr(row.counts, name)
        if row.counts.cost_usd is None or not row.tokens_known:
            entry["unknown_cost_runs"].add(row.run_id)
            entry["cost_usd"] = None
        else:
            entry["known_cost_usd"] += row.counts.cost_usd
            if entry["cost_usd"] is not None:
                entry["cost_usd"] += row.counts.cost_usd
    out = []
    for key in sorted(sums):
        entry = sums[key]
        entry["runs"] = len(entry["runs"])
        entry["unknown_cost_runs"] = len(entry["unknown_cost_runs"])
        out.append(entry)
    return out


def usage_summary(store: AgentStore, *, timezone: str, by: GroupBy, agent: str = "",
                  chat_id: str | None = None, since: datetime | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The store's usage summed ``by`` model, group, agent or day, a day being the platform's
    (``timezone``) local day: what ``agentlite usage`` prints and the dashboard charts."""
    from zoneinfo import ZoneInfo

    from agentlite.core.clock import parse_iso

    zone = ZoneInfo(timezone)

    def day_of(at: str) -> str:
        return parse_iso(at).astimezone(zone).date().isoformat()

    return summarize(UsageLedger(store).rows(chat_id=chat_id, since=since), by, day_of=day_of, agent=agent)
