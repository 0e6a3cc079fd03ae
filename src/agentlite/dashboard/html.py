"""The page shell, its stylesheet and script, and small HTML builders (every value escaped here).

Plain server-rendered HTML: tables work without JavaScript; the script only swaps in fragments the
server streams (server-sent events). No fonts, images or scripts from elsewhere: the machine may be
offline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

#: The pages in the navigation: (path, label).
NAV = (
    ("/boxes", "Boxes"),
    ("/agents", "Agents"),
    ("/runs", "Runs"),
    ("/tasks", "Tasks"),
    ("/usage", "Usage"),
)

STYLE = """
:root { color-scheme: light dark; --fg: #1b1f24; --bg: #fff; --muted: #57606a; --line: #d0d7de;
  --live: #1a7f37; --stale: #9a6700; --dead: #cf222e; --accent: #0969da; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --bg: #0d1117; --muted: #8d96a0;
  --line: #30363d; --live: #3fb950; --stale: #d29922; --dead: #f85149; --accent: #4493f8; } }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; align-items: center; padding: .6rem 1rem;
  border-bottom: 1px solid var(--line); }
header .brand { font-weight: 700; }
nav ul { display: flex; flex-wrap: wrap; gap: .25rem 1rem; list-style: none; margin: 0; padding: 0; }
nav a { color: var(--accent); text-decoration: none; padding: .2rem 0; }
nav a[aria-current="page"] { font-weight: 700; border-bottom: 2px solid var(--accent); }
main { padding: 1rem; max-width: 100rem; }
h1 { font-size: 1.35rem; margin: 0 0 .75rem; }
h2 { font-size: 1.1rem; margin: 1.25rem 0 .5rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; margin-bottom: 1rem; }
caption { text-align: left; color: var(--muted); padding: .25rem 0; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0 0 1rem; }
code, .mono { font-family: ui-monospace, monospace; font-size: .9em; overflow-wrap: anywhere; }
.verdict { font-weight: 700; }
.verdict-live { color: var(--live); } .verdict-stale, .verdict-adoptable { color: var(--stale); }
.verdict-dead, .verdict-none { color: var(--dead); }
.muted { color: var(--muted); }
button, .button { font: inherit; padding: .25rem .7rem; border: 1px solid var(--line); border-radius: 4px;
  background: transparent; color: var(--accent); cursor: pointer; text-decoration: none; display: inline-block; }
button.danger { color: var(--dead); border-color: var(--dead); }
form.inline { display: inline; margin: 0; }
form.filters { display: flex; flex-wrap: wrap; gap: .4rem; align-items: center; margin: 0 0 .75rem; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
ol.events { padding-left: 2.5rem; } ol.events li { margin: .2rem 0; }
.final { border: 2px solid var(--line); border-radius: 6px; padding: .5rem .75rem; }
.final-success { border-color: var(--live); } .final-error { border-color: var(--dead); }
svg.chart { max-width: 100%; height: auto; }
svg.chart text { fill: var(--fg); font: 12px system-ui, sans-serif; }
svg.chart .bar { fill: var(--accent); } svg.chart .limit { stroke: var(--dead); stroke-dasharray: 4 3; }
#live-status { color: var(--muted); font-size: .85rem; }
@media (max-width: 40rem) { main { padding: .5rem; } th, td { padding: .3rem .35rem; } }
"""

#: Swaps in what the server streams: whole fragments, appended events, the final, and an end.
SCRIPT = """
(function () {
  var status = document.getElementById("live-status");
  document.querySelectorAll("[data-stream]").forEach(function (el) {
    var source = new EventSource(el.getAttribute("data-stream"));
    source.addEventListener("open", function () { if (status) status.textContent = "live"; });
    source.addEventListener("error", function () { if (status) status.textContent = "reconnecting"; });
    source.addEventListener("fragment", function (e) { el.innerHTML = e.data; });
    source.addEventListener("event", function (e) {
      var list = document.getElementById("events");
      if (list) list.insertAdjacentHTML("beforeend", e.data);
    });
    source.addEventListener("final", function (e) {
      var box = document.getElementById("final");
      if (box) box.innerHTML = e.data;
    });
    source.addEventListener("summary", function (e) {
      var box = document.getElementById("summary");
      if (box) box.innerHTML = e.data;
    });
    source.addEventListener("end", function () {
      source.close();
      if (status) status.textContent = "finished";
    });
  });
})();
"""


def esc(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def page(title: str, body: str, *, current: str = "") -> str:
    """A whole page: navigation, a heading, ``body`` (already HTML)."""
    marked = ' aria-current="page"'
    links = "".join(
        f'<li><a href="{path}"{marked if path == current else ""}>{label}</a></li>' for path, label in NAV
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · AgentLite</title>"
        '<link rel="stylesheet" href="/static/dashboard.css"></head><body>'
        '<header><span class="brand">AgentLite</span>'
        f'<nav aria-label="Pages"><ul>{links}</ul></nav>'
        '<span id="live-status" role="status" aria-live="polite"></span></header>'
        f"<main><h1>{esc(title)}</h1>{body}</main>"
        '<script src="/static/dashboard.js" defer></script></body></html>'
    )


def live(stream: str, fragment: str, *, element_id: str = "live") -> str:
    """A region the script keeps current from ``stream`` (the page works without it)."""
    return f'<div id="{element_id}" data-stream="{esc(stream)}">{fragment}</div>'


def table(caption: str, headers: Sequence[str], rows: Iterable[Sequence[str]], *, empty: str,
          numeric: Sequence[int] = ()) -> str:  # fmt: skip
    """A semantic table; cells are HTML already (escape with :func:`esc`)."""
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )  # fmt: skip
    if not body:
        return f'<p class="muted">{esc(empty)}</p>'
    head = "".join(
        f'<th scope="col"{" class=num" if i in numeric else ""}>{esc(h)}</th>' for i, h in enumerate(headers)
    )
    return (
        f'<div class="scroll"><table><caption>{esc(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def facts(pairs: Iterable[tuple[str, str]]) -> str:
    """A definition list; values are HTML already."""
    return '<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in pairs) + "</dl>"


def hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{esc(name)}" value="{esc(value)}">'
