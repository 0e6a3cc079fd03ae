"""Backends against scripted stand-ins of the CLIs (one module each, the rule of exactly one result).

The real CLIs run in tests/run/test_agent_runs.py; here a tiny script named ``codex`` plays a run with
precise timing, which the real CLI cannot be made to do.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from agentlite.guest.backends.base import BackendContext, TurnFailed
from agentlite.guest.backends.codex import CodexBackend, codex_args
from agentlite.guest.runner._input import TurnInput, parse_input
from agentlite.run.protocol import (
    BackendConfig,
    ErrorEvent,
    Event,
    ResultEvent,
    RunnerInput,
    SdkMessageEvent,
    parse_event,
)
from agentlite.run.wire import Event as WireEvent

EVENTS = [
    {"type": "thread.started", "thread_id": "thread-123"},
    {"type": "turn.started"},
    {
        "type": "item.completed",
        "item": {"id": "i1", "type": "agent_message", "text": "I will inspect the repo."},
    },
    {
        "type": "item.completed",
        "item": {"id": "i2", "type": "command_execution", "command": "ls", "exit_code": 0},
    },
    {
        "type": "item.completed",
        "item": {"id": "i3", "type": "agent_message", "text": "Final answer after the tool work."},
    },
]


def fake_codex(folder: Path, exit_code: int, marker: Path) -> None:
    """A ``codex`` that prints the events, lingers, notes when it exits, and exits with ``exit_code``."""
    script = folder / "codex"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys, time\n"
        "sys.stdin.read()\n"
        f"for event in {EVENTS!r}:\n"
        "    print(json.dumps(event), flush=True)\n"
        "print('stderr detail', file=sys.stderr)\n"
        "time.sleep(0.5)\n"
        f"open({str(marker)!r}, 'w').write(repr(time.time()))\n"
        f"sys.exit({exit_code})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def as_sent(run_input: RunnerInput) -> TurnInput:
    """What the runner reads when the host sends ``run_input``."""
    return parse_input(run_input.model_dump_json())


def context(tmp_path: Path, emitted: list[tuple[float, Event]]) -> BackendContext:
    run_input = RunnerInput(prompt="go", group_folder="main", chat_id="c", is_main=True,
                            backend=BackendConfig(type="codex", model="m1", base_url="http://127.0.0.1:9/v1"))  # fmt: skip

    def received(event: WireEvent) -> None:
        # Each event as the host reads it off the wire (its own models check every field).
        emitted.append((time.time(), parse_event(json.dumps(event))))

    return BackendContext(as_sent(run_input), received, tmp_path, tmp_path / "home")


def test_codex_emits_one_result_after_the_process_exited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "exited"
    fake_codex(tmp_path, 0, marker)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    emitted: list[tuple[float, Event]] = []
    backend = CodexBackend(context(tmp_path, emitted))
    session = backend.run_turn("go", None)
    results = [(t, e) for t, e in emitted if isinstance(e, ResultEvent)]
    assert session == "thread-123"
    assert [e for _, e in results] == [
        ResultEvent(result="Final answer after the tool work.", new_session_id="thread-123")
    ]
    assert results[0][0] >= float(marker.read_text())  # only once codex had exited
    assert sum(isinstance(e, SdkMessageEvent) for _, e in emitted) == 5
    sdk_before = [e for t, e in emitted if isinstance(e, SdkMessageEvent) and t <= results[0][0]]
    assert len(sdk_before) == 5


def test_codex_nonzero_exit_gives_no_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_codex(tmp_path, 3, tmp_path / "exited")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    emitted: list[tuple[float, Event]] = []
    with pytest.raises(TurnFailed, match="Codex exited with code 3: stderr detail"):
        CodexBackend(context(tmp_path, emitted)).run_turn("go", None)
    assert not any(isinstance(e, ResultEvent | ErrorEvent) for _, e in emitted)


def test_codex_arguments_new_and_resume() -> None:
    flags = ["--json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox"]
    assert codex_args("gpt-5", None) == ["exec", "--model", "gpt-5", *flags, "-"]
    assert codex_args("gpt-5", "t-1") == ["exec", "resume", "--model", "gpt-5", *flags, "t-1", "-"]
    assert codex_args("  ", None) == ["exec", *flags, "-"]
    assert codex_args(None, "t-1") == ["exec", "resume", *flags, "t-1", "-"]


def test_codex_config_names_provider_retries_and_servers(tmp_path: Path) -> None:
    run_input = RunnerInput(prompt="p", group_folder="g", chat_id="c", is_main=True,
                            backend=BackendConfig(type="codex", base_url="http://127.0.0.1:1/v1", max_retries=0,
                                                  api_key_env="MY_KEY"),
                            mcp_servers={"zeta": {"command": "z"}, "agentlite": {"command": "python3",
                                         "args": ["-m", "x"], "env": {"B": "2", "A": "1"}}})  # fmt: skip
    text = (
        BackendContext(as_sent(run_input), lambda e: None, Path("/workspace/group"), tmp_path)
        .write_codex_config()
        .read_text()
    )
    assert 'base_url = "http://127.0.0.1:1/v1"' in text and 'env_key = "MY_KEY"' in text
    assert "request_max_retries = 0" in text and "unbounded_connection_retries = false" in text
    assert "[analytics]\nenabled = false" in text and "plugins = false" in text
    assert '[projects."/workspace/group"]\ntrust_level = "trusted"' in text
    assert text.index('[mcp_servers."agentlite"]') < text.index('[mcp_servers."zeta"]')
    assert '[mcp_servers."agentlite".env]\n"A" = "1"\n"B" = "2"' in text
    assert 'args = ["-m", "x"]' in text
    # codex waits for our own server before the first model call, not for the others.
    assert '[mcp_servers."agentlite"]\ncommand = "python3"\nargs = ["-m", "x"]\nrequired = true\n' in text
    assert text.count("required = true") == 1
    assert json.dumps("x")  # the file is TOML with JSON-quoted strings, as codex expects
