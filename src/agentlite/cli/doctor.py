"""``agentlite doctor``: the runtime chosen and why, and every prerequisite with its fix."""

from __future__ import annotations

from agentlite.box import choose_runtime
from agentlite.cli._common import (
    HomeOption,
    JsonOption,
    RuntimeOption,
    err,
    home_path,
    out,
    print_json,
    table,
)
from agentlite.core.errors import AgentliteError
from agentlite.platform.doctor import all_checks


def doctor(home: HomeOption = None, runtime: RuntimeOption = None, json: JsonOption = False) -> None:
    """Show which box runtime will be used and why, and what is missing."""
    import typer

    home_dir = home_path(home)
    checks = all_checks(home_dir)
    try:
        choice = choose_runtime(runtime)
        chosen, reason, ok = choice.name, choice.reason, True
    except AgentliteError as exc:
        chosen, reason, ok = None, str(exc), False
    if json:
        print_json(
            {
                "runtime": chosen,
                "reason": reason,
                "home": str(home_dir),
                "checks": [c.as_json() for c in checks],
            }
        )
    else:
        t = table("check", "ok", "detail", "fix")
        for c in checks:
            t.add_row(c.name, "[green]ok[/green]" if c.ok else "[red]missing[/red]", c.detail, c.fix or "")
        out.print(t)
        out.print(f"home: {home_dir}")
        if ok:
            out.print(f"runtime: [bold]{chosen}[/bold] ({reason})")
        else:
            err.print(f"[red]no runtime:[/red] {reason}")
    if not ok:
        raise typer.Exit(1)
