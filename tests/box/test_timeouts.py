"""Timeouts hold whatever a command leaves running, and the command's own exit code is reported."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import captured_log

from agentlite.box import lifecycle as _lifecycle
from agentlite.box.lifecycle import Deadline, cleanup_orphans, run_in_box
from agentlite.box.ownership import RecordStore
from agentlite.box.procs import BOX_MARKER_ENV, kill_and_wait, processes_marked, start_time
from agentlite.box.sandbox import SandboxRuntime
from agentlite.run.box_run import run_agent
from agentlite.run.protocol import BackendConfig, RunnerInput

AGENTLITE = [sys.executable, "-m", "agentlite"]


def box_processes(home: Path) -> dict[int, str]:
    """Every process of a box under ``home``, tracked or not, found by the marker our boxes carry."""
    return processes_marked(BOX_MARKER_ENV, str(home.resolve() / "sandbox") + os.sep)


def exec_cli(home: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "NO_COLOR": "1", "AGENTLITE_HOME": str(home)}
    env.pop("AGENTLITE_RUNTIME", None)
    started = time.monotonic()
    result = subprocess.run([*AGENTLITE, "exec", *args], capture_output=True, text=True, env=env, timeout=120)
    return result, time.monotonic() - started


async def assert_box_gone(home: Path) -> None:
    assert await SandboxRuntime(home).list() == []
    assert box_processes(home) == {}
    assert RecordStore(home).record_names() == []


async def test_cli_timeout_kills_the_whole_box_whatever_holds_its_pipes(
    sandbox: SandboxRuntime, home: Path
) -> None:
    result, took = exec_cli(home, "--timeout", "3", "--", "sh", "-c", "sleep 40 & sleep 30")
    assert result.returncode == 124, result.stderr
    assert "timed out after 3 s" in result.stderr
    # Well before either sleep could have ended on its own (generous: the machine is shared).
    assert took < 25
    await assert_box_gone(home)


async def test_cli_reports_the_exit_code_at_once_when_a_background_child_holds_the_pipes(
    sandbox: SandboxRuntime, home: Path
) -> None:
    # The issue's `sleep 20 & exit 3`, with a longer sleep so that a loaded machine's slow start
    # cannot be mistaken for waiting on the child (about 2 s here idle, 12 s under heavy load).
    result, took = exec_cli(home, "--", "sh", "-c", "echo before; sleep 60 & exit 3")
    assert result.returncode == 3, result.stderr
    assert result.stdout == "before\n"
    assert took < 45
    await assert_box_gone(home)


async def test_output_written_just_before_exit_is_drained(sandbox: SandboxRuntime, home: Path) -> None:
    lines: list[bytes] = []
    result = await run_in_box(
        sandbox,
        home,
        ["sh", "-c", "sleep 30 & seq 1 2000; exit 5"],
        on_stdout=lines.append,
    )
    assert (result.exit_code, result.timed_out) == (5, False)
    assert lines == [f"{i}\n".encode() for i in range(1, 2001)]
    await assert_box_gone(home)


async def test_a_process_that_closes_its_output_still_times_out(sandbox: SandboxRuntime, home: Path) -> None:
    result = await run_in_box(sandbox, home, ["sh", "-c", "exec >&- 2>&-; sleep 60"], deadline=Deadline(1.0))
    assert result.timed_out
    await assert_box_gone(home)


async def test_background_child_in_its_own_session_cannot_outlive_the_timeout(
    sandbox: SandboxRuntime, home: Path
) -> None:
    # setsid puts the child out of the command's process group: only stopping the box reaches it.
    task = run_in_box(sandbox, home, ["sh", "-c", "setsid sleep 60 & sleep 60"], deadline=Deadline(1.0))
    result = await asyncio.wait_for(task, 60)
    assert result.timed_out
    await assert_box_gone(home)


async def test_agent_run_ends_when_the_runner_exits_though_a_backend_child_holds_its_stderr(
    sandbox: SandboxRuntime, home: Path, tmp_path: Path
) -> None:
    # An ACP agent that dies at once but leaves a child holding the runner's inherited stderr.
    config = BackendConfig(
        type="acp", command=["sh", "-c", "sleep 60 >/dev/null & echo agent-gone >&2; exit 1"], max_retries=0
    )
    run_input = RunnerInput(prompt="hi", group_folder="main", chat_id="c1", is_main=True, backend=config)
    started = time.monotonic()
    outcome = await run_agent(
        sandbox, home, run_input, workspace=tmp_path / "ws", single_turn=True, timeout=120, idle_timeout=5
    )
    assert (outcome.status, outcome.reason, outcome.exit_code) == ("error", "error_exit", 1)
    assert "failed" in (outcome.error or "")
    assert time.monotonic() - started < 40  # the child would hold the pipe for 60 s
    await assert_box_gone(home)


async def test_a_teardown_that_hangs_is_given_up_and_the_next_cleanup_reaps_the_box(
    sandbox: SandboxRuntime, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_lifecycle, "TEARDOWN_SECONDS", 1.0)

    class HangingRemove(SandboxRuntime):
        async def remove(self, name: str, *, force: bool = False) -> None:
            await asyncio.Event().wait()  # a runtime that never answers

    with captured_log("agentlite.lifecycle") as log:
        result = await asyncio.wait_for(run_in_box(HangingRemove(home), home, ["true"]), 60)
    assert result.exit_code == 0
    assert any("did not finish in 1 s; giving up" in m for m in log.messages(logging.ERROR))
    assert RecordStore(home).record_names() == []  # unowned now: exactly what cleanup reaps
    decisions = await cleanup_orphans(sandbox, home, "cli")
    assert [(d.name, d.action, d.removed) for d in decisions] == [(result.box, "remove", True)]
    await assert_box_gone(home)


def test_killing_escalates_from_term_to_kill() -> None:
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
    assert kill_and_wait([stubborn.pid], timeout=10, term_grace=0.2) == []
    # It ignores SIGTERM, so only the SIGKILL that followed can have ended it (and it was reaped).
    assert start_time(stubborn.pid) is None
    stubborn.wait(timeout=10)  # already reaped: this only tells Popen so
    stubborn.stdout.close()


async def test_a_slow_output_handler_still_gets_every_line_after_the_command_exits(
    sandbox: SandboxRuntime, home: Path
) -> None:
    # The drain waits for quiet output, not a fixed time: a slow consumer loses nothing.
    seen: list[bytes] = []

    async def slow(line: bytes) -> None:
        await asyncio.sleep(0.05)
        seen.append(line)

    result = await run_in_box(sandbox, home, ["sh", "-c", "sleep 30 & seq 1 60; exit 4"], on_stdout=slow)
    assert result.exit_code == 4
    assert seen == [f"{i}\n".encode() for i in range(1, 61)]  # 3 s of handling, beyond one drain
    await assert_box_gone(home)
