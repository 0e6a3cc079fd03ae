"""``agentlite host --jsonl``: serve agent runs to another program over JSON lines."""

from __future__ import annotations

import asyncio
import json as jsonlib
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from agentlite.box.base import BoxRuntime
from agentlite.cli._common import HomeOption, RuntimeOption, err, home_path
from agentlite.cli._endpoint import DEMO_NOTICE, backend_config, demo_model_if_needed, with_base_url
from agentlite.cli.run import AcpOption, BackendOption, BaseUrlOption, ModelOption
from agentlite.core.errors import ConfigError
from agentlite.image.guest_root import open_configured_runtime
from agentlite.platform.app import AgentLite, resolve_timezone
from agentlite.platform.hostmode import DEFAULT_MAX_CONCURRENT, JsonlHost, serve_stdin
from agentlite.run.protocol import DEFAULT_BACKEND_TYPE, BackendConfig

#: The default hard timeout of one request's box, in seconds (``--timeout``; each event re-arms it).
REQUEST_TIMEOUT = 1800.0
#: A request is one turn (its runner exits after it), so the idle timeout only bounds a runner
#: that waits anyway; the run layer keeps the hard timeout at least this plus its grace (60 s).
REQUEST_IDLE_TIMEOUT = 30.0


def host_command(
    jsonl: Annotated[
        bool, typer.Option("--jsonl", help="Speak JSON lines on stdin/stdout (required).")
    ] = False,
    backend: BackendOption = DEFAULT_BACKEND_TYPE,
    acp_command: AcpOption = None,
    model: ModelOption = None,
    base_url: BaseUrlOption = None,
    max_concurrent: Annotated[
        int, typer.Option("--max-concurrent", help="Boxes at once.")
    ] = DEFAULT_MAX_CONCURRENT,
    timeout: Annotated[
        float,
        typer.Option("--timeout", help="Seconds a request's box may go without an event (at least 60)."),
    ] = REQUEST_TIMEOUT,
    home: HomeOption = None,
    runtime: RuntimeOption = None,
) -> None:
    """Read one request a line on stdin; write events and one final per request on stdout."""
    if not jsonl:
        raise ConfigError("host mode needs `--jsonl` (the only protocol so far)")
    if max_concurrent < 1:
        raise ConfigError(f"max concurrent boxes must be at least 1, got {max_concurrent}")
    if timeout <= 0:
        raise ConfigError(f"timeout must be > 0 seconds, got {timeout:g}")
    config = backend_config(backend, model, base_url, acp_command)
    home_dir = home_path(home)
    box_runtime, _ = open_configured_runtime(home_dir, runtime)
    code = asyncio.run(_serve(box_runtime, home_dir, config, max_concurrent, timeout))
    raise typer.Exit(code)


def _write(obj: dict[str, Any]) -> None:
    sys.stdout.write(jsonlib.dumps(obj) + "\n")
    sys.stdout.flush()


async def _serve(runtime: BoxRuntime, home: Path, config: BackendConfig, max_concurrent: int,
                 timeout: float = REQUEST_TIMEOUT) -> int:  # fmt: skip
    """Serve stdin until its end (exit 0) or SIGINT/SIGTERM (every request settled; 128 + signal)."""
    loop = asyncio.get_running_loop()
    signals: list[int] = []
    stopped = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda s=signum: (signals.append(s), stopped.set()))
    async with demo_model_if_needed(config) as demo_url:
        if demo_url is not None:
            err.print(f"note: {DEMO_NOTICE}")
        # The platform's agents, stores and registry live under `<home>/host`; boxes and their
        # records in the home itself, where `agentlite boxes` looks.
        platform = AgentLite(home / "host", timezone=resolve_timezone(None), runtime=runtime,
                             max_concurrent=max_concurrent, box_timeout=timeout, idle_timeout=REQUEST_IDLE_TIMEOUT,
                             box_home=home)  # fmt: skip
        host = JsonlHost(platform, with_base_url(config, demo_url), write=_write)
        await host.start()
        await host.sweep()
        serving = asyncio.create_task(serve_stdin(host), name="host-stdin")
        stopping = asyncio.create_task(stopped.wait(), name="host-signals")
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not stopped.is_set():
            stopping.cancel()
            try:
                serving.result()
            finally:
                await platform.close()
            return 0
        serving.cancel()
        await asyncio.wait([serving])  # its end, without taking on (or swallowing) its cancellation
        await host.stop()
        return 128 + signals[0]
