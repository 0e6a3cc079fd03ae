"""``agentlite run``: the main job, on the embedded offline demo model when no key is set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentlite.box.ownership import RecordStore
from conftest import needs_agent_clis, needs_codex


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
    ],
)
def test_bad_input_exits_2(home: Path, args: list[str], message: str) -> None:
    result = run(home, *args)
    assert result.returncode == 2
    assert result.stderr.startswith(message)
