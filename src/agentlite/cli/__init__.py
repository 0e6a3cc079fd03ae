"""The ``agentlite`` command line: one module per command, errors as one line."""

from __future__ import annotations

from importlib.metadata import version
from typing import Annotated

import typer

from agentlite.cli import agents as agents_cli, image as image_cli, runs as runs_cli, tasks as tasks_cli
from agentlite.cli._common import ErrorMappingGroup
from agentlite.cli.acp import acp_command
from agentlite.cli.boxes import boxes, cleanup
from agentlite.cli.chat import chat_command
from agentlite.cli.dashboard import dashboard_command
from agentlite.cli.doctor import doctor
from agentlite.cli.exec import exec_command
from agentlite.cli.host import host_command
from agentlite.cli.run import run_command
from agentlite.cli.serve import serve_command
from agentlite.cli.usage import budgets_app, usage_command
from agentlite.core.logs import configure_logging

app = typer.Typer(
    name="agentlite",
    help="Run AI coding agents in isolated boxes on your own machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=ErrorMappingGroup,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"agentlite {version('agentlite')}")
        raise typer.Exit()


@app.callback()
def _root(
    log_level: Annotated[
        str | None,
        typer.Option("--log-level", envvar="AGENTLITE_LOG_LEVEL", help="debug, info, warning, error."),
    ] = None,
    _show_version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
) -> None:
    configure_logging(log_level)


app.command("doctor")(doctor)
app.command("exec", context_settings={"allow_interspersed_args": False})(exec_command)
app.command("boxes")(boxes)
app.command("cleanup")(cleanup)
app.command("run")(run_command)
app.command("host")(host_command)
app.command("serve")(serve_command)
app.command("acp")(acp_command)
app.command("chat")(chat_command)
app.command("dashboard")(dashboard_command)
app.add_typer(agents_cli.app, name="agents")
app.add_typer(tasks_cli.app, name="tasks")
app.add_typer(image_cli.app, name="image")
app.add_typer(runs_cli.app, name="runs")
app.command("usage")(usage_command)
app.add_typer(budgets_app, name="budgets")


def main() -> None:
    app()
