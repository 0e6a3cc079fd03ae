"""Budgets per agent and per group, enforced by the host from the usage ledger.

A budget has a unit (``usd`` or ``tokens``), a daily and/or a total limit, and the hour of the day
(in the platform's time zone) at which the daily period starts. Its scope is a group (a chat id)
or ``*``, the whole agent. At 80 % of a limit a ``budget.warning`` fires once per period; at the
limit the group is paused (``budget.exceeded``) until the period resets (daily) or an operator
resumes it. A resume grants a fresh allowance on top of what was spent so far, so the next message
runs. Crossing a limit during a turn raises :class:`BudgetExceeded` from the usage tally, which
stops the box at once (the turn pipeline kills a run whose event handler raises).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from agentlite.core.clock import iso_utc
from agentlite.core.errors import ConfigError
from agentlite.platform.store import AgentStore
from agentlite.platform.usage import Unit, UsageLedger
from agentlite.run.usage_tally import RunStopped, UsageTally

AGENT_SCOPE = "*"
WARNING_FRACTION = 0.8
Period = Literal["daily", "total"]


class BudgetExceeded(RunStopped):
    """A limit was reached; the message is the notice the chat gets."""

    def __init__(self, status: BudgetStatus, period: Period) -> None:
        self.status, self.period = status, period
        super().__init__(exceeded_notice(status, period))


@dataclass(frozen=True)
class Budget:
    scope: str
    unit: Unit = "usd"
    daily_limit: float | None = None
    total_limit: float | None = None
    reset_hour: int = 0

    def __post_init__(self) -> None:
        if self.unit not in ("usd", "tokens"):
            raise ConfigError(f"budget unit `{self.unit}` must be usd or tokens")
        for name in ("daily_limit", "total_limit"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
            ):
                raise ConfigError(f"budget `{name}` must be a number > 0, not {value!r}")
        if (
            isinstance(self.reset_hour, bool)
            or not isinstance(self.reset_hour, int)
            or not 0 <= self.reset_hour <= 23
        ):
            raise ConfigError(f"budget reset hour `{self.reset_hour}` must be a whole hour 0..23")
        if not self.scope:
            raise ConfigError("budget scope must be a chat id or `*` (the whole agent)")


@dataclass(frozen=True)
class BudgetStatus:
    """Where one budget stands now; ``paused`` is ``daily_limit``/``total_limit`` or ``None``."""

    budget: Budget
    period_start: datetime
    daily_spent: float
    total_spent: float
    paused: str | None

    def limit(self, period: Period) -> float | None:
        return self.budget.daily_limit if period == "daily" else self.budget.total_limit

    def spent(self, period: Period) -> float:
        return self.daily_spent if period == "daily" else self.total_spent

    def as_dict(self) -> dict[str, Any]:
        b = self.budget
        return {"scope": b.scope, "unit": b.unit, "daily_limit": b.daily_limit, "total_limit": b.total_limit,
                "reset_hour": b.reset_hour, "period_start": iso_utc(self.period_start),
                "daily_spent": round(self.daily_spent, 6), "total_spent": round(self.total_spent, 6),
                "paused": self.paused}  # fmt: skip


def _amount(unit: Unit, value: float, places: int) -> str:
    return f"${value:.{places}f}" if unit == "usd" else f"{int(value)} tokens"


def exceeded_notice(status: BudgetStatus, period: Period) -> str:
    unit, limit = status.budget.unit, status.limit(period) or 0
    return (f"Agent paused: {period} token budget exceeded ({_amount(unit, status.spent(period), 4)} of "
            f"{_amount(unit, limit, 2)} used). An operator can resume it with `agentlite budgets resume`.")  # fmt: skip


def warning_notice(status: BudgetStatus, period: Period) -> str:
    unit, limit = status.budget.unit, status.limit(period) or 0
    return (f"Budget warning: {_amount(unit, status.spent(period), 4)} of the {period} budget of "
            f"{_amount(unit, limit, 2)} used.")  # fmt: skip


class Budgets:
    """The ``budgets`` and ``budget_state`` tables of one agent's store, and the checks on them.

    ``clock`` is injectable so the daily reset is tested without waiting; ``timezone`` is the
    platform's (the reset hour is local time there)."""

    def __init__(self, store: AgentStore, *, timezone: str = "UTC",
                 clock: Callable[[], datetime] | None = None) -> None:  # fmt: skip
        self._db = store.database
        self.ledger = UsageLedger(store)
        self.tz = ZoneInfo(timezone)
        self.clock = clock or (lambda: datetime.now(UTC))

    # -- configuration ----------------------------------------------------------------------------

    def set(self, budget: Budget) -> Budget:
        with self._db.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO budgets VALUES (?, ?, ?, ?, ?, ?)",
                (budget.scope, budget.unit, budget.daily_limit, budget.total_limit, budget.reset_hour,
                 iso_utc(self.clock())),
            )  # fmt: skip
        return budget

    def remove(self, scope: str) -> bool:
        with self._db.write() as conn:
            conn.execute("DELETE FROM budget_state WHERE scope = ?", (scope,))
            return conn.execute("DELETE FROM budgets WHERE scope = ?", (scope,)).rowcount > 0

    def get(self, scope: str) -> Budget | None:
        with self._db.read() as conn:
            row = conn.execute("SELECT scope, unit, daily_limit, total_limit, reset_hour FROM budgets WHERE scope = ?",
                               (scope,)).fetchone()  # fmt: skip
        return Budget(row[0], row[1], row[2], row[3], row[4]) if row else None

    def all(self) -> list[Budget]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT scope, unit, daily_limit, total_limit, reset_hour FROM budgets ORDER BY scope"
            ).fetchall()
        return [Budget(*row) for row in rows]

    def applying_to(self, chat_id: str) -> list[Budget]:
        """The group's own budget and the agent's, if set."""
        return [b for b in (self.get(chat_id), self.get(AGENT_SCOPE)) if b is not None]

    # -- where a budget stands --------------------------------------------------------------------

    def period_start(self, budget: Budget, now: datetime | None = None) -> datetime:
        """Today's reset hour in the platform's zone, or yesterday's if that is still to come."""
        local = (now or self.clock()).astimezone(self.tz)
        start = local.replace(hour=budget.reset_hour, minute=0, second=0, microsecond=0)
        if start > local:
            start = (start - timedelta(days=1)).replace(hour=budget.reset_hour)
        return start.astimezone(UTC)

    def _state(self, scope: str) -> dict[str, Any]:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT paused_reason, paused_period, warned_period, warned_total, daily_base, daily_base_period,"
                " total_base FROM budget_state WHERE scope = ?", (scope,)).fetchone()  # fmt: skip
        keys = ("paused_reason", "paused_period", "warned_period", "warned_total", "daily_base",
                "daily_base_period", "total_base")  # fmt: skip
        return dict(zip(keys, row, strict=True)) if row else dict.fromkeys(keys) | {"warned_total": 0,
                                                                                     "daily_base": 0.0,
                                                                                     "total_base": 0.0}  # fmt: skip

    def _write_state(self, scope: str, **changes: Any) -> None:
        state = self._state(scope) | changes
        with self._db.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO budget_state (scope, paused_reason, paused_at, paused_period, warned_period,"
                " warned_total, daily_base, daily_base_period, total_base) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (scope, state["paused_reason"], iso_utc(self.clock()) if state["paused_reason"] else None,
                 state["paused_period"], state["warned_period"], state["warned_total"] or 0,
                 state["daily_base"] or 0.0, state["daily_base_period"], state["total_base"] or 0.0),
            )  # fmt: skip

    def status(self, budget: Budget) -> BudgetStatus:
        """Spend counted against the budget (what a resume granted is taken off) and its pause,
        lifted here when a daily pause's period has ended."""
        start = self.period_start(budget)
        period = iso_utc(start)
        chat = None if budget.scope == AGENT_SCOPE else budget.scope
        state = self._state(budget.scope)
        daily = self.ledger.spent(chat_id=chat, since=start, unit=budget.unit)
        total = self.ledger.spent(chat_id=chat, since=None, unit=budget.unit)
        if state["daily_base_period"] == period:
            daily -= state["daily_base"] or 0.0
        total -= state["total_base"] or 0.0
        paused = state["paused_reason"]
        if paused == "daily_limit" and state["paused_period"] != period:
            self._write_state(budget.scope, paused_reason=None, paused_period=None)
            paused = None
        return BudgetStatus(budget, start, max(daily, 0.0), max(total, 0.0), paused)

    def statuses(self, chat_id: str) -> list[BudgetStatus]:
        return [self.status(b) for b in self.applying_to(chat_id)]

    def paused(self, chat_id: str) -> BudgetStatus | None:
        """The first budget pausing the group, if any (a daily one lifts itself at the reset)."""
        return next((s for s in self.statuses(chat_id) if s.paused), None)

    # -- changes ----------------------------------------------------------------------------------

    def pause(self, status: BudgetStatus, period: Period) -> None:
        self._write_state(status.budget.scope, paused_reason=f"{period}_limit",
                          paused_period=iso_utc(status.period_start))  # fmt: skip

    def resume(self, scope: str) -> bool:
        """Lift the pause and grant a fresh allowance: the limits count from what is spent now."""
        budget = self.get(scope)
        if budget is None:
            return False
        chat = None if scope == AGENT_SCOPE else scope
        start = self.period_start(budget)
        self._write_state(
            scope, paused_reason=None, paused_period=None, daily_base_period=iso_utc(start),
            daily_base=self.ledger.spent(chat_id=chat, since=start, unit=budget.unit),
            total_base=self.ledger.spent(chat_id=chat, since=None, unit=budget.unit),
        )  # fmt: skip
        return True

    def take_warning(self, status: BudgetStatus, period: Period) -> bool:
        """True once per period (daily) or once ever (total, until a resume) when spend is at 80 %."""
        limit = status.limit(period)
        if limit is None or status.spent(period) < WARNING_FRACTION * limit:
            return False
        state = self._state(status.budget.scope)
        mark = iso_utc(status.period_start)
        if period == "daily":
            if state["warned_period"] == mark:
                return False
            self._write_state(status.budget.scope, warned_period=mark)
        else:
            if state["warned_total"]:
                return False
            self._write_state(status.budget.scope, warned_total=1)
        return True


def crossed(status: BudgetStatus, extra: float = 0.0) -> Period | None:
    """Which limit ``status`` plus ``extra`` (this run's spend so far) has reached, if any."""
    for period in ("daily", "total"):
        limit = status.limit(period)  # type: ignore[arg-type]
        if limit is not None and status.spent(period) + extra >= limit:  # type: ignore[arg-type]
            return period  # type: ignore[return-value]
    return None


def with_run(status: BudgetStatus, tally: UsageTally) -> BudgetStatus:
    """``status`` with a running run's spend added (its unpriced part counts 0)."""
    extra = tally.tokens if status.budget.unit == "tokens" else sum(
        c.cost_usd or 0.0 for c in tally.by_model().values())  # fmt: skip
    return BudgetStatus(status.budget, status.period_start, status.daily_spent + extra, status.total_spent + extra,
                        status.paused)  # fmt: skip


def budget_statuses(store: AgentStore, *, timezone: str) -> list[dict[str, Any]]:
    """Every budget of the store with what it has spent and its pause: what ``agentlite budgets
    list`` prints and the dashboard draws as budget lines."""
    budgets = Budgets(store, timezone=timezone)
    return [budgets.status(budget).as_dict() for budget in budgets.all()]
