"""What every command shares: the options, the terminal, and turning errors into one line and an exit
code (:class:`ErrorMappingGroup`, the only place that does)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import click
import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

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


#: Exit codes of every command: what a script can tell apart without reading the message.
EXIT_FAILED = 1  # a run, a box or the store failed: an AgentliteError
EXIT_USAGE = 2  # bad input (an option, a config file, a name) or a runtime this machine cannot run


def exit_code_for(exc: AgentliteError) -> int:
    """Exit 2 for what the user must change (the input, the runtime choice), 1 for failures."""
    return EXIT_USAGE if isinstance(exc, ConfigError | RuntimeUnavailable) else EXIT_FAILED


def expected_error(exc: BaseException) -> AgentliteError | None:
    """The AgentliteError that ``exc`` is, or that every leaf of an exception group is (a task
    group that failed on purpose); None for anything else, which stays a traceback (a bug)."""
    if isinstance(exc, AgentliteError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        leaves = [expected_error(e) for e in exc.exceptions]
        if leaves and all(leaves):
            return leaves[0]
    return None


class ErrorMappingGroup(TyperGroup):
    """The root command group: the one place where an AgentliteError from any command becomes one
    line on stderr and its exit code (``AGENTLITE_DEBUG`` set: the traceback instead)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            error = expected_error(exc)
            if error is None or os.environ.get(ENV_DEBUG):
                raise
            abort(str(error), exit_code_for(error))


def home_path(home: Path | None) -> Path:
    return resolve_home(home)
