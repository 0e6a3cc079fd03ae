"""What every command shares: the options, the terminal, and turning errors into one line."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from agentlite.core.config import ENV_DEBUG, ENV_HOME, resolve_home
from agentlite.core.errors import AgentliteError, ConfigError, RuntimeUnavailable

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home", envvar=ENV_HOME, help="State folder (env AGENTLITE_HOME; default ~/.local/share/agentlite)."
    ),
]
RuntimeOption = Annotated[
    str | None,
    typer.Option(
        "--runtime", envvar="AGENTLITE_RUNTIME", help="auto, boxlite or sandbox (env AGENTLITE_RUNTIME)."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
AgentOption = Annotated[
    str | None, typer.Option("--agent", help="Agent id (box names start agentlite-<id>-).")
]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def table(*columns: str, title: str | None = None) -> Table:
    t = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        t.add_column(column, overflow="fold")
    return t


def abort(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", markup=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn AgentLite errors into one line on stderr: exit 2 for bad input, 1 otherwise."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except AgentliteError as exc:
        if os.environ.get(ENV_DEBUG):
            raise
        abort(str(exc), 2 if isinstance(exc, ConfigError | RuntimeUnavailable) else 1)


def home_path(home: Path | None) -> Path:
    return resolve_home(home)
