"""USD per million tokens, per model: what a turn costs when its backend reports no cost.

A price is four rates (input, output, cache read, cache write). Models are matched exactly first,
then by the longest matching pattern (``gpt-5*``, fnmatch style), so an operator's entry for one
model beats a family default. A model with no price has an unknown cost: ``None``, never 0.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlite.core.errors import ConfigError


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_read: float = 0.0
    cache_write: float = 0.0

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0,
             cache_write_tokens: int = 0) -> float:  # fmt: skip
        """``input_tokens`` are the ones not read from the cache (each kind is billed once)."""
        total = (input_tokens * self.input + output_tokens * self.output
                 + cached_input_tokens * self.cache_read + cache_write_tokens * self.cache_write)  # fmt: skip
        return total / 1_000_000


#: The reference's three Claude models, their current dated/undated names, and OpenAI's current
#: families (list prices at the time of writing; an operator overrides any of them in config).
DEFAULT_PRICES: dict[str, Price] = {
    "claude-opus-4-6*": Price(15, 75, 1.5, 18.75),
    "claude-sonnet-4-6*": Price(3, 15, 0.3, 3.75),
    "claude-haiku-4-5*": Price(0.8, 4, 0.08, 1),
    "gpt-5*": Price(1.25, 10, 0.125),
    "gpt-5-mini*": Price(0.25, 2, 0.025),
    "gpt-5-nano*": Price(0.05, 0.4, 0.005),
    "gpt-4.1*": Price(2, 8, 0.5),
    "gpt-4.1-mini*": Price(0.4, 1.6, 0.1),
    "o4-mini*": Price(1.1, 4.4, 0.275),
}


class PriceTable:
    """Model name (or pattern) to :class:`Price`; ``lookup`` answers ``None`` for unknown models."""

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self.prices: dict[str, Price] = dict(DEFAULT_PRICES if prices is None else prices)

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None, *, with_defaults: bool = True) -> PriceTable:
        """Entries like ``{"gpt-5*": {"input": 1.25, "output": 10, "cache_read": 0.125}}`` over the
        defaults; a bad entry is a :class:`ConfigError` naming the model and field."""
        table = cls(None if with_defaults else {})
        for model, entry in (raw or {}).items():
            table.prices[str(model)] = parse_price(str(model), entry)
        return table

    def lookup(self, model: str | None) -> Price | None:
        if not model:
            return None
        model = model.strip()
        # claude reports `claude-opus-4-6[1m]` for its 1M-context variant: same price per token.
        base = model.split("[", 1)[0]
        for name in (model, base):
            if name in self.prices:
                return self.prices[name]
        matches = [p for p in self.prices if any(c in p for c in "*?[") and fnmatch.fnmatchcase(base, p)]
        return self.prices[max(matches, key=len)] if matches else None

    def cost(self, model: str | None, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0,
             cache_write_tokens: int = 0) -> float | None:  # fmt: skip
        price = self.lookup(model)
        if price is None:
            return None
        return price.cost(input_tokens, output_tokens, cached_input_tokens, cache_write_tokens)

    def as_config(self) -> dict[str, dict[str, float]]:
        return {m: vars(p).copy() for m, p in sorted(self.prices.items())}


def parse_price(model: str, entry: Any) -> Price:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"price for `{model}` must be a table of USD per million tokens, not {entry!r}")
    unknown = set(entry) - {"input", "output", "cache_read", "cache_write"}
    if unknown:
        raise ConfigError(f"price for `{model}` has unknown field(s) {', '.join(sorted(unknown))}; "
                          "use input, output, cache_read, cache_write")  # fmt: skip
    values: dict[str, float] = {}
    for field in ("input", "output", "cache_read", "cache_write"):
        if field not in entry:
            if field in ("input", "output"):
                raise ConfigError(f"price for `{model}` needs `{field}` (USD per million tokens)")
            continue
        value = entry[field]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"price for `{model}`: `{field}` must be a number >= 0, not {value!r}")
        values[field] = float(value)
    return Price(**values)


PRICES_FILE = "prices.json"


def load_prices(workdir: Path) -> PriceTable:
    """The defaults, overridden by ``<platform workdir>/prices.json`` when it exists."""
    path = Path(workdir) / PRICES_FILE
    if not path.exists():
        return PriceTable()
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"price table `{path}` is not readable JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"price table `{path}` must be a JSON object of model -> prices")
    return PriceTable.from_config(raw)
