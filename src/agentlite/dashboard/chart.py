"""Horizontal bar charts as inline SVG, drawn on the server (no script, no chart library), with
dashed lines for budget limits. Each chart has a title and description for screen readers; the
same numbers are also in a table under it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agentlite.dashboard.html import esc

_LABEL_W = 190
_BAR_W = 380
_VALUE_W = 110
_ROW_H = 24
_TOP = 34


@dataclass(frozen=True)
class Bar:
    label: str
    value: float


@dataclass(frozen=True)
class Limit:
    label: str
    value: float


def bar_chart(chart_id: str, title: str, bars: Sequence[Bar], limits: Sequence[Limit] = (), *,
              fmt: Callable[[float], str] = lambda v: f"{v:,.0f}") -> str:  # fmt: skip
    """One bar per entry, scaled to the largest bar or limit; limits drawn across every row."""
    if not bars:
        return f'<p class="muted">{esc(title)}: nothing recorded yet.</p>'
    top = max([b.value for b in bars] + [lim.value for lim in limits] + [1e-9])
    width = _LABEL_W + _BAR_W + _VALUE_W
    height = _TOP + _ROW_H * len(bars) + 8 + 16 * len(limits)
    parts = [
        f'<svg class="chart" id="{esc(chart_id)}" role="img" aria-labelledby="{esc(chart_id)}-t {esc(chart_id)}-d"'
        f' viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{esc(chart_id)}-t">{esc(title)}</title>',
        f'<desc id="{esc(chart_id)}-d">'
        + esc("; ".join(f"{b.label}: {fmt(b.value)}" for b in bars))
        + esc("".join(f"; {lim.label}: {fmt(lim.value)}" for lim in limits))
        + "</desc>",
        f'<text x="0" y="16" font-weight="600">{esc(title)}</text>',
    ]
    for i, bar in enumerate(bars):
        y = _TOP + i * _ROW_H
        length = max(1.0, _BAR_W * bar.value / top) if bar.value > 0 else 0.0
        parts.append(
            f'<g class="row" data-label="{esc(bar.label)}" data-value="{bar.value:g}">'
            f'<text x="0" y="{y + 15}">{esc(_clip(bar.label))}</text>'
            f'<rect class="bar" x="{_LABEL_W}" y="{y + 3}" width="{length:.1f}" height="{_ROW_H - 8}"/>'
            f'<text class="value" x="{_LABEL_W + length + 6:.1f}" y="{y + 15}">{esc(fmt(bar.value))}</text></g>'
        )
    bottom = _TOP + _ROW_H * len(bars)
    for i, limit in enumerate(limits):
        x = _LABEL_W + _BAR_W * limit.value / top
        parts.append(
            f'<g class="budget" data-label="{esc(limit.label)}" data-value="{limit.value:g}">'
            f'<line class="limit" x1="{x:.1f}" y1="{_TOP - 4}" x2="{x:.1f}" y2="{bottom}"/>'
            f'<text x="{_LABEL_W}" y="{bottom + 16 + 16 * i}">{esc(limit.label)}: {esc(fmt(limit.value))}</text></g>'
        )
    parts.append("</svg>")
    return f'<figure class="scroll">{"".join(parts)}</figure>'


def _clip(text: str, size: int = 28) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"
