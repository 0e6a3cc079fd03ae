"""``agentlite exec -- CMD...``: one command in a fresh box owned by this process."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from agentlite.box import BoxSpec, Volume
from agentlite.box.base import DEFAULT_CPUS, DEFAULT_MEMORY_MIB, DEFAULT_WORKING_DIR
from agentlite.box.lifecycle import Deadline, check_agent_id, run_in_box
from agentlite.cli._common import AgentOption, HomeOption, RuntimeOption, err, home_path
from agentlite.cli._network_opts import AllowNetOption, NetworkOption, NoNetworkOption, network_settings
from agentlite.core.errors import ConfigError
from agentlite.image.guest_root import open_configured_runtime

EXIT_TIMEOUT = 124


def exec_command(
    command: Annotated[list[str], typer.Argument(help="The command to run in the box, after `--`.")],
    agent: AgentOption = None,
    group: Annotated[str, typer.Option("--group", help="Group name used in the box name.")] = "main",
    memory: Annotated[int, typer.Option("--memory", help="Box memory in MiB.")] = DEFAULT_MEMORY_MIB,
    cpus: Annotated[int, typer.Option("--cpus", help="Box CPUs.")] = DEFAULT_CPUS,
    volume: Annotated[
        list[str] | None, typer.Option("--volume", "-v", help="HOST:GUEST[:ro], repeatable.")
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE for the box, repeatable.")
    ] = None,
    workdir: Annotated[
        str, typer.Option("--workdir", help="Working folder inside the box.")
    ] = DEFAULT_WORKING_DIR,
    network: NetworkOption = None,
    allow_net: AllowNetOption = None,
    no_network: NoNetworkOption = False,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Kill the command after this many seconds.")
    ] = None,
    home: HomeOption = None,
    runtime: RuntimeOption = None,
) -> None:
    """Run CMD in a fresh box, stream its output, exit with its exit code, then remove the box."""
    # Validate everything before anything is created.
    agent_id = check_agent_id(agent or "cli")
    spec = BoxSpec(
        memory_mib=memory,
        cpus=cpus,
        env=_parse_env(env or []),
        volumes=[Volume.parse(v) for v in volume or []],
        working_dir=workdir,
        **network_settings(network, allow_net, no_network),
    )
    deadline = Deadline(timeout)
    home_dir = home_path(home)
    box_runtime, _choice = open_configured_runtime(home_dir, runtime)
    code = asyncio.run(_run(box_runtime, home_dir, command, agent_id, group, spec, deadline))
    raise typer.Exit(code)


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"env `{pair}` must look like KEY=VALUE")
        env[key] = value
    return env


async def _run(runtime, home: Path, command, agent_id, group, spec, deadline) -> int:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    got_signal: list[int] = []

    def on_signal(signum: int) -> None:
        got_signal.append(signum)
        main.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)

    def write_out(line: bytes) -> None:
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()

    def write_err(line: bytes) -> None:
        sys.stderr.buffer.write(line)
        sys.stderr.buffer.flush()

    status = err.status("starting box…") if err.is_terminal else None
    if status:
        status.start()

    def on_box(name: str) -> None:
        if status:
            status.stop()

    try:
        async with runtime:
            result = await run_in_box(
                runtime,
                home,
                command,
                agent_id=agent_id,
                group=group,
                spec=spec,
                on_stdout=write_out,
                on_stderr=write_err,
                deadline=deadline,
                on_box=on_box,
            )
    except asyncio.CancelledError:
        if got_signal:
            err.print(f"stopped by {signal.Signals(got_signal[0]).name}; box removed")
            return 128 + got_signal[0]
        raise
    finally:
        if status:
            status.stop()
    if result.timed_out:
        err.print(f"error: command timed out after {deadline.seconds:g} s; box `{result.box}` removed")
        return EXIT_TIMEOUT
    return result.exit_code if result.exit_code >= 0 else 128 - result.exit_code
