"""The lean in-box side of the wire: input read without pydantic, events framed as plain dicts,
the follow-up inbox, and what the runner and the MCP server import."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentlite.guest.runner import _inbox
from agentlite.guest.runner._inbox import Inbox
from agentlite.guest.runner._input import InputError, TurnInput, parse_input
from agentlite.run import wire as _wire
from agentlite.run.protocol import (
    BackendConfig,
    ErrorEvent,
    FrameParser,
    ResultEvent,
    RunnerInput,
    SdkMessageEvent,
    StateEvent,
    UsageEvent,
)


def fields(turn: TurnInput) -> dict[str, Any]:
    """The TurnInput as RunnerInput.model_dump() would show it."""
    backend = turn.backend
    return {
        "prompt": turn.prompt, "group_folder": turn.group_folder, "chat_id": turn.chat_id, "is_main": turn.is_main,
        "session_id": turn.session_id, "is_scheduled_task": turn.is_scheduled_task,
        "assistant_name": turn.assistant_name,
        "backend": {k: getattr(backend, k) for k in ("type", "model", "base_url", "api_key_env", "command", "max_retries")},
        "mcp_servers": {name: s.as_dict() for name, s in turn.mcp_servers.items()},
        "actions_auth": turn.actions_auth,
    }  # fmt: skip


INPUTS = [
    RunnerInput(prompt="hi", group_folder="main", chat_id="c", is_main=True),
    RunnerInput(prompt="p ✓", group_folder="g", chat_id="tg:1", is_main=False, session_id="s1", is_scheduled_task=True,
                assistant_name="Andy", backend=BackendConfig(type="acp", model="m", base_url="http://h/v1",
                                                             api_key_env="K", command=["codex-acp"], max_retries=0),
                mcp_servers={"agentlite": {"command": "python", "args": ["-m", "x"], "env": {"A": "1"}}},
                actions_auth={"url": "http://127.0.0.1:1", "token": "t"}),
]  # fmt: skip


def test_the_fast_path_knows_every_field_of_the_host_models() -> None:
    """A field added to the host's models must be added to the runner's reader too (or every run
    silently takes the slow pydantic path)."""
    from agentlite.guest.runner import _input
    from agentlite.run.protocol import ActionsAuth, McpServer

    assert set(_input._INPUT) == set(RunnerInput.model_fields)
    assert set(_input._BACKEND) == set(BackendConfig.model_fields)
    assert set(_input._MCP) == set(McpServer.model_fields)
    assert set(_input._AUTH) == set(ActionsAuth.model_fields)


def test_frames_are_utf8_whatever_the_locale() -> None:
    code = "from agentlite.guest.runner._loop import emit; emit({'type': 'result', 'result': 'gr\\u00fc\\u00df \\U0001f600'})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "PYTHONIOENCODING": "ascii"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    parser = FrameParser()
    assert [e for line in proc.stdout.decode().splitlines(keepends=True) for e in parser.feed(line)] == [
        ResultEvent(result="grüß 😀")
    ]


@pytest.mark.parametrize("run_input", INPUTS)
def test_what_the_host_sends_is_read_the_same_without_pydantic(run_input: RunnerInput) -> None:
    turn = parse_input(run_input.model_dump_json())
    assert fields(turn) == run_input.model_dump()
    assert turn.backend.key_env() == run_input.backend.key_env()


@pytest.mark.parametrize(
    "changes",
    [
        {"is_main": "true"},
        {"backend": {"type": "codex", "model": " gpt-5 "}},
        {"session_id": None, "extra": None},
    ],
)
def test_other_inputs_get_the_host_models_answer(changes: dict[str, Any]) -> None:
    raw = {"prompt": "hi", "group_folder": "main", "chat_id": "c", "is_main": True, **changes}
    try:
        expected: dict[str, Any] | str = RunnerInput.model_validate_json(json.dumps(raw)).model_dump()
    except ValueError as exc:
        expected = type(exc).__name__
    try:
        got: dict[str, Any] | str = fields(parse_input(json.dumps(raw)))
    except InputError:
        got = "ValidationError"
    assert got == expected


def test_bad_input_names_every_problem() -> None:
    with pytest.raises(InputError) as refused:
        parse_input('{"prompt": 5, "is_main": true}')
    assert str(refused.value).startswith(
        "`prompt`: Input should be a valid string; `group_folder`: Field required"
    )
    with pytest.raises(InputError, match="Invalid JSON"):
        parse_input(b"{not json")


def test_frames_are_valid_host_events() -> None:
    sent = [
        _wire.state_event("active", reason="query_started"),
        _wire.sdk_message_event("item.completed", "agent_message", {"item": {"text": "ü", "x": None}}),
        _wire.usage_event(3, 4, 1, "m"),
        _wire.result_event("done", "s1"),
        _wire.result_event(None, "s1"),
        _wire.error_event("boom", "s1"),
    ]
    parser = FrameParser()
    text = "".join(_wire.frame(e) for e in sent)
    assert [e for line in text.splitlines(keepends=True) for e in parser.feed(line)] == [
        StateEvent(state="active", reason="query_started"),
        SdkMessageEvent(sdk_type="item.completed", sdk_subtype="agent_message", message={"item": {"text": "ü", "x": None}}),
        UsageEvent(input_tokens=3, output_tokens=4, cached_input_tokens=1, model="m"),
        ResultEvent(result="done", new_session_id="s1"),
        ResultEvent(result=None, new_session_id="s1"),
        ErrorEvent(error="boom", new_session_id="s1"),
    ]  # fmt: skip
    assert parser.skipped == 0


def test_runner_and_mcp_server_import_only_what_a_turn_needs() -> None:
    code = (
        "import sys, agentlite.guest.runner._loop, agentlite.guest.backends.codex, agentlite.guest.backends.claude_code, "
        "agentlite.guest.mcp_server; print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'mcp', 'croniter', 'acp', 'sqlite3', 'asyncio') or m in ('agentlite.run.protocol', 'agentlite.platform.store', "
        "'agentlite.platform.ipc', 'agentlite.platform.scheduler', 'agentlite.box.lifecycle', 'agentlite.guest.backends.acp')))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == "[]\n"


def test_a_follow_up_wakes_the_idle_runner_without_waiting_for_the_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_inbox, "POLL_INTERVAL", 3600.0)  # only the folder watch can wake it in time
    inbox = Inbox(tmp_path)
    inbox.watch()

    def woken_by(land: Callable[[], None]) -> bool:
        waiter = threading.Thread(target=inbox.wait, daemon=True)
        waiter.start()
        land()
        waiter.join(30)
        return not waiter.is_alive()

    def follow_up() -> None:  # as the host writes one: a temporary name, then a rename
        (tmp_path / "1-a.json.tmp").write_text(json.dumps({"type": "message", "text": "next"}))
        (tmp_path / "1-a.json.tmp").rename(tmp_path / "1-a.json")

    try:
        assert inbox.drain() == []
        assert woken_by(follow_up)
        assert inbox.drain() == ["next"] and not inbox.take_close()
        assert woken_by((tmp_path / "_close").touch)
        assert inbox.take_close() and not (tmp_path / "_close").exists()
    finally:
        inbox.close()


def test_the_host_writes_the_bytecode_a_box_cannot_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from agentlite.run import box_bytecode as bytecode

    package = tmp_path / "agentlite"
    (package / "guest" / "runner").mkdir(parents=True)
    (package / "guest" / "backends").mkdir()
    (package / "run").mkdir()
    chosen = ("__init__.py", "run/wire.py", "guest/runner/_loop.py", "guest/backends/codex.py")
    for name in chosen:
        (package / name).write_text("VALUE = 1\n")
    monkeypatch.setattr(bytecode, "__file__", str(package / "run" / "box_bytecode.py"))
    sources = bytecode.box_sources()
    assert {s.relative_to(package).as_posix() for s in sources} == set(chosen)
    bytecode.ensure.cache_clear()
    try:
        assert bytecode.ensure() == 4
        assert all(Path(importlib.util.cache_from_source(str(s))).is_file() for s in sources)
        bytecode.ensure.cache_clear()
        assert bytecode.ensure() == 0  # fresh bytecode is left alone
        (package / "run" / "wire.py").write_text("VALUE = 22\n")  # an edit makes its bytecode stale
        bytecode.ensure.cache_clear()
        assert bytecode.ensure() == 1
    finally:
        bytecode.ensure.cache_clear()
