"""A run's running usage tally: tokens and cost per model as the backend reports them.

A backend reports usage per model call (``scope="call"``, provisional: claude's ``assistant``
messages) and/or per turn (``scope="turn"``: codex's ``turn.completed``, claude's ``result``); a
turn's total replaces its calls, so nothing counts twice. The tally prices what the backend did not
price with the :class:`~agentlite.run.prices.PriceTable`; a model without a price makes the cost
unknown (``None``), never 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from agentlite.core.errors import RunError
from agentlite.run.prices import PriceTable
from agentlite.run.protocol import UsageEvent


class RunStopped(RunError):
    """Raised by a tally's ``on_change`` to stop the run now (the message is the turn's error)."""


@dataclass(frozen=True)
class Counts:
    """Tokens of one model (fresh input, output, cache reads, cache writes) and their cost.

    ``cost_usd`` ``None`` with tokens means unknown; ``reported`` says the backend priced all of it."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = 0.0
    reported: bool = True

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cached_input_tokens + self.cache_write_tokens

    def __add__(self, other: Counts) -> Counts:
        cost = None if self.cost_usd is None or other.cost_usd is None else self.cost_usd + other.cost_usd
        return Counts(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens,
                      self.cached_input_tokens + other.cached_input_tokens,
                      self.cache_write_tokens + other.cache_write_tokens, cost,
                      self.reported and other.reported)  # fmt: skip


def priced(event: UsageEvent, prices: PriceTable) -> Counts:
    """The event's counts with its cost: the backend's own, else the price table's, else unknown."""
    cost = event.cost_usd
    reported = cost is not None
    if cost is None:
        cost = prices.cost(event.model, event.input_tokens, event.output_tokens, event.cached_input_tokens,
                           event.cache_write_tokens)  # fmt: skip
    counts = Counts(event.input_tokens, event.output_tokens, event.cached_input_tokens, event.cache_write_tokens,
                    cost, reported)  # fmt: skip
    return replace(counts, cost_usd=0.0) if counts.tokens == 0 and cost is None else counts


def total_cost(counts: Iterable[Counts]) -> float | None:
    total: float | None = 0.0
    for c in counts:
        total = None if total is None or c.cost_usd is None else total + c.cost_usd
    return total


@dataclass
class UsageTally:
    """One run's usage so far, per model. ``on_change`` sees the tally after every usage event and
    may raise to stop the run (the budget guard)."""

    prices: PriceTable = field(default_factory=PriceTable)
    on_change: Callable[[UsageTally], None] | None = None
    settled: dict[str, Counts] = field(default_factory=dict)
    pending: dict[str, Counts] = field(default_factory=dict)
    events: int = 0

    def observe(self, event: UsageEvent) -> None:
        self.events += 1
        counts, model = priced(event, self.prices), event.model or ""
        if event.scope == "call":
            self.pending[model] = self.pending.get(model, Counts()) + counts
        else:
            self.pending.clear()  # the turn's total includes its calls
            self.settled[model] = self.settled.get(model, Counts()) + counts
        if self.on_change is not None:
            self.on_change(self)

    def by_model(self) -> dict[str, Counts]:
        merged = dict(self.settled)
        for model, counts in self.pending.items():
            merged[model] = merged.get(model, Counts()) + replace(counts, reported=False)
        return merged

    @property
    def cost_usd(self) -> float | None:
        return total_cost(self.by_model().values())

    @property
    def tokens(self) -> int:
        return sum(c.tokens for c in self.by_model().values())
