"""``agentlite run``: the main job, on the embedded offline demo model when no key is set."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentlite.box.ownership import RecordStore
from agentlite.box.sandbox import SandboxRuntime
from agentlite.platform.oneshot import agent_lock
from agentlite.testing import ModelServer
from conftest import needs_agent_clis, needs_codex, raw_sql, until


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    env.update(AGENTLITE_HOME=str(home), NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "agentlite", "run", *args], capture_output=True, text=True,
                          env=env, timeout=180)  # fmt: skip


@needs_codex
def test_run_without_a_key_uses_the_offline_demo_model_and_says_so(home: Path, tmp_path: Path) -> None:
    result = run(home, "--workspace", str(tmp_path), "What is in this folder?")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('[offline demo model] You said: "What is in this folder?"')
    assert "offline demo model, not a real one" in result.stderr
    assert RecordStore(home).record_names() == []


@needs_codex
@pytest.mark.parametrize("backend", ["codex", pytest.param("claude_code", marks=needs_agent_clis("claude"))])
def test_run_json_streams_events_then_one_final(home: Path, tmp_path: Path, backend: str) -> None:
    result = run(home, "--json", "--backend", backend, "--workspace", str(tmp_path), "hi")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0, result.stderr
    assert all(line["type"] == "event" for line in lines[:-1]) and lines[-1]["type"] == "final"
    final = lines[-1]
    assert final["status"] == "success" and final["result"].startswith("[offline demo model]")
    assert final["session_id"] and final["offline_demo_model"] is True
    assert sum(1 for line in lines if line["type"] == "event" and line["event"]["type"] == "result") == 1


@needs_codex
def test_failed_run_exits_1_with_the_cause(home: Path, tmp_path: Path) -> None:
    result = run(home, "--workspace", str(tmp_path), "--base-url", "http://127.0.0.1:9/v1", "hi")
    assert result.returncode == 1
    assert "error: Codex exited with code 1" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--backend", "gemini", "hi"],
            "error: unknown backend `gemini`; choose one of codex, claude_code, acp",
        ),
        (["--base-url", "ftp://x", "hi"], "error: base URL `ftp://x` must start with http:// or https://"),
        (
            ["--workspace", "/nonexistent/place", "hi"],
            "error: workspace `/nonexistent/place` is not a folder",
        ),
        (["--group", "../up", "hi"], "error: group folder `../up` may use only letters"),
    ],
)
def test_bad_input_exits_2(home: Path, args: list[str], message: str) -> None:
    result = run(home, *args)
    assert result.returncode == 2
    assert result.stderr.startswith(message)


@needs_codex
def test_the_same_group_resumes_its_session_and_another_group_has_its_own(home: Path, tmp_path: Path) -> None:
    """`agentlite run` is a client of the platform: the group's session lives in the agent's store."""

    def final(*args: str) -> dict[str, Any]:
        result = run(home, "--json", "--workspace", str(tmp_path), *args)
        assert result.returncode == 0, result.stderr
        line = json.loads(result.stdout.splitlines()[-1])
        assert line["type"] == "final" and line["status"] == "success", line
        return line

    first = final("--group", "work", "first question")
    second = final("--group", "work", "second question")
    other = final("--group", "other", "unrelated")
    assert first["session_id"] and second["session_id"] == first["session_id"]
    assert other["session_id"] and other["session_id"] != first["session_id"]
    store = home / "run" / "agents" / "cli" / "store" / "messages.db"
    assert raw_sql(store, "SELECT group_folder, session_id FROM sessions WHERE backend_type = 'codex' "
                   "ORDER BY group_folder") == [("other", other["session_id"]), ("work", first["session_id"])]  # fmt: skip
    # Boxes are named by the agent id the command was given, and none is left.
    runs = raw_sql(store, "SELECT box FROM runs")
    assert len(runs) == 3 and all(box.startswith("agentlite-cli-") for (box,) in runs), runs
    assert RecordStore(home).record_names() == []
    assert asyncio.run(SandboxRuntime(home).list()) == []


@needs_codex
async def test_sigint_during_a_turn_exits_130_and_leaves_no_box(home: Path, tmp_path: Path) -> None:
    async with ModelServer(scenario="hang") as model:
        env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
        env.update(AGENTLITE_HOME=str(home), NO_COLOR="1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agentlite", "run", "--workspace", str(tmp_path), "--base-url",
            model.openai_base_url, "wait for it", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=env,
        )  # fmt: skip
        try:
            await until(lambda: proc.returncode is not None or model.requests, "the turn's model call", 120)
            assert proc.returncode is None, "the command ended before its turn reached the model"
            proc.send_signal(signal.SIGINT)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 130, err.decode()
    assert out == b"" and "stopped; box removed" in err.decode()
    assert RecordStore(home).record_names() == []
    assert await SandboxRuntime(home).list() == []


async def test_a_second_command_for_the_same_agent_waits_for_the_first(tmp_path: Path) -> None:
    """The agent lock: one process drives an agent at a time (flock, released however it ends)."""
    waits: list[str] = []
    order: list[str] = []
    async with agent_lock(tmp_path, "cli"):
        second_may_go = asyncio.Event()

        async def second() -> None:
            async with agent_lock(tmp_path, "cli", on_wait=lambda: waits.append("cli"), poll=0.01):
                order.append("second")
            second_may_go.set()

        other_agent_free = agent_lock(tmp_path, "other")
        async with other_agent_free:  # another agent's lock is its own
            order.append("other")
        task = asyncio.create_task(second())
        await until(lambda: waits, "the second command to wait")
        order.append("first")
    await asyncio.wait_for(second_may_go.wait(), 30)
    await task
    assert waits == ["cli"] and order == ["other", "first", "second"]
