"""``agentlite host --jsonl``: serve agent runs to another program over JSON lines."""

from __future__ import annotations

import asyncio
import json as jsonlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from agentlite._errors import ConfigError
from agentlite._hostmode import DEFAULT_MAX_CONCURRENT, JsonlHost, serve_stdin
from agentlite.cli._common import HomeOption, RuntimeOption, err, home_path, user_errors
from agentlite.cli._endpoint import DEMO_NOTICE, backend_config, demo_model_if_needed, with_base_url
from agentlite.cli.run import AcpOption, BackendOption, BaseUrlOption, ModelOption
from agentlite.runtime import open_runtime


def host_command(
    jsonl: Annotated[
        bool, typer.Option("--jsonl", help="Speak JSON lines on stdin/stdout (required).")
    ] = False,
    backend: BackendOption = "codex",
    acp_command: AcpOption = None,
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    max_concurrent: Annotated[
        int, typer.Option("--max-concurrent", help="Boxes at once.")
    ] = DEFAULT_MAX_CONCURRENT,
    home: HomeOption = None,
    runtime: RuntimeOption = None,
) -> None:
    """Read one request a line on stdin; write events and one final per request on stdout."""
    with user_errors():
        if not jsonl:
            raise ConfigError("host mode needs `--jsonl` (the only protocol so far)")
        if max_concurrent < 1:
            raise ConfigError(f"max concurrent boxes must be at least 1, got {max_concurrent}")
        config = backend_config(backend, model, base_url, acp_command)
        home_dir = home_path(home)
        box_runtime, _ = open_runtime(home_dir, runtime)
        asyncio.run(_serve(box_runtime, home_dir, config, max_concurrent))


def _write(obj: dict[str, Any]) -> None:
    sys.stdout.write(jsonlib.dumps(obj) + "\n")
    sys.stdout.flush()


async def _serve(runtime: Any, home: Path, config: Any, max_concurrent: int) -> None:
    async with demo_model_if_needed(config) as demo_url, runtime:
        if demo_url is not None:
            err.print(f"note: {DEMO_NOTICE}")
        host = JsonlHost(
            runtime, home, with_base_url(config, demo_url), write=_write, max_concurrent=max_concurrent
        )
        await serve_stdin(host)
