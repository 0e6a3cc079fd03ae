"""An agent's usage and budgets around each turn: the check before the box, the guard during the
turn, the ledger row, events and chat notices after it.

Used by the agent around :func:`agentlite.run.turn.run_turn`; everything is on the host, where the
agent in the box cannot reach it (the box only reads its budget through the MCP server).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentlite.core.clock import parse_iso
from agentlite.platform.budgets import (
    BudgetExceeded,
    Budgets,
    BudgetStatus,
    Period,
    crossed,
    exceeded_notice,
    warning_notice,
    with_run,
)
from agentlite.platform.store import AgentStore
from agentlite.platform.usage import UsageLedger
from agentlite.run.prices import PriceTable
from agentlite.run.protocol import UsageEvent
from agentlite.run.turn import TurnResult
from agentlite.run.usage_tally import UsageTally

log = logging.getLogger("agentlite.usage")

Emit = Callable[..., Any]
Notify = Callable[[str, str], Awaitable[None]]


class Spending:
    def __init__(self, store: AgentStore, emit: Emit, notify: Notify, *, timezone: str = "UTC",
                 prices: PriceTable | None = None, clock: Callable[[], datetime] | None = None) -> None:  # fmt: skip
        self.store = store
        self.budgets = Budgets(store, timezone=timezone, clock=clock)
        self.ledger = UsageLedger(store)
        self.prices = prices or PriceTable()
        self._emit = emit
        self._notify = notify
        self._notices: dict[str, list[str]] = {}
        #: Groups whose running turn was stopped by a budget; ``after`` must not pause them twice.
        self._stopped_mid_turn: set[str] = set()

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.budgets.clock

    def _exceeded(self, jid: str, status: BudgetStatus, period: Period, *, already: bool = False) -> str:
        notice = exceeded_notice(status, period)
        if not already:
            self.budgets.pause(status, period)
        self._emit("budget.exceeded", jid=jid, scope=status.budget.scope, period=period, unit=status.budget.unit,
                   spent=round(status.spent(period), 6), limit=status.limit(period), already_paused=already)  # fmt: skip
        return notice

    def blocked(self, jid: str) -> str | None:
        """The notice when the group may not run now (paused, or already at a limit), else ``None``."""
        for status in self.budgets.statuses(jid):
            if status.paused:
                period: Period = "daily" if status.paused == "daily_limit" else "total"
                return self._exceeded(jid, status, period, already=True)
            reached = crossed(status)
            if reached is not None:
                return self._exceeded(jid, status, reached)
        return None

    def write_snapshot(self, ipc_root: Path, folder: str, jid: str) -> None:
        """``budget.json`` in the group's IPC folder, for the in-box MCP server's ``get_budget``.
        The box may rewrite its copy; that changes only what it reads, never what is enforced."""
        import json

        from agentlite.core.clock import iso_utc
        from agentlite.core.safefs import BoxDir

        state = {"as_of": iso_utc(self.clock()), "budgets": [s.as_dict() for s in self.budgets.statuses(jid)]}
        with BoxDir.open(ipc_root, folder, create=True) as target:
            target.write_atomic("budget.json", json.dumps(state, indent=2).encode())

    def tally(self, jid: str) -> UsageTally:
        """A tally whose guard stops the run when this run's spend reaches a limit."""
        before = self.budgets.statuses(jid)

        def guard(tally: UsageTally) -> None:
            for status in before:
                now = with_run(status, tally)
                self._warn(jid, now)
                reached = crossed(now)
                if reached is not None:
                    self._notices.setdefault(jid, []).append(self._exceeded(jid, now, reached))
                    self._stopped_mid_turn.add(jid)
                    raise BudgetExceeded(now, reached)

        return UsageTally(self.prices, on_change=guard if before else None)

    def _warn(self, jid: str, status: BudgetStatus) -> None:
        for period in ("daily", "total"):
            if crossed(status) is None and self.budgets.take_warning(status, period):  # type: ignore[arg-type]
                self._emit("budget.warning", jid=jid, scope=status.budget.scope, period=period,
                           unit=status.budget.unit, spent=round(status.spent(period), 6),  # type: ignore[arg-type]
                           limit=status.limit(period))  # type: ignore[arg-type]  # fmt: skip
                self._notices.setdefault(jid, []).append(warning_notice(status, period))  # type: ignore[arg-type]

    def plain_tally(self) -> UsageTally:
        """A tally with the price table and no guard."""
        return UsageTally(self.prices)

    def record_adopted(self, run: Any, tally: UsageTally) -> None:
        """An adopted run's usage (from its journal), under its run id; nothing when it sent none."""
        if tally.events:
            self.ledger.record(run.run_id, tally, chat_id=run.chat_id or "", group_folder=run.group_folder,
                               backend_type=run.backend, at=self.clock().astimezone(UTC))  # fmt: skip

    def record_from_ledger(self, run: Any) -> None:
        """Record a run from its run-ledger row (``final_usage``), as a final re-delivered after a
        restart does: keyed by the run id, so a run recorded live already counts once."""
        usage = run.final_usage
        if not usage:
            return  # nothing to go on: whatever the live run recorded stays
        tally = UsageTally(self.prices)
        tally.observe(UsageEvent(input_tokens=int(usage.get("input_tokens") or 0),
                                 output_tokens=int(usage.get("output_tokens") or 0),
                                 cached_input_tokens=int(usage.get("cached_input_tokens") or 0),
                                 cache_write_tokens=int(usage.get("cache_write_tokens") or 0),
                                 model=usage.get("model"), cost_usd=usage.get("cost_usd")))  # fmt: skip
        at = parse_iso(run.state_times.get("final_ready") or run.updated_at)
        self.ledger.record(run.run_id, tally, chat_id=run.chat_id or "", group_folder=run.group_folder,
                           backend_type=run.backend, at=at)  # fmt: skip

    async def after(self, jid: str, folder: str, run_id: str, tally: UsageTally, result: TurnResult,
                    backend_type: str) -> None:  # fmt: skip
        """Record the run (once per run id), emit ``usage``, then warn or pause for spend that
        only a turn's total showed (codex reports usage per turn), and send the notices."""
        self.ledger.record(run_id, tally, chat_id=jid, group_folder=folder, backend_type=backend_type,
                           at=self.clock().astimezone(UTC))  # fmt: skip
        usage = result.usage.model_dump() if result.usage else None
        self._emit("usage", jid=jid, folder=folder, run_id=run_id, usage=usage)
        if jid in self._stopped_mid_turn:
            self._stopped_mid_turn.discard(jid)
        else:
            for status in self.budgets.statuses(jid):
                if status.paused:
                    continue
                reached = crossed(status)
                if reached is not None:
                    self._notices.setdefault(jid, []).append(self._exceeded(jid, status, reached))
                    break
                self._warn(jid, status)
        for notice in self._notices.pop(jid, []):
            try:
                await self._notify(jid, notice)
            except Exception as exc:  # e.g. a group only asked through the SDK, with no channel
                log.warning("could not send the budget notice to %s: %s", jid, exc)
