"""Real agent runs: the unmodified codex, claude and ACP CLIs in real sandbox boxes, against the
built-in model server on 127.0.0.1. Each turn must give exactly one final result, after the backend
really finished, and every run must leave no box and no ownership record behind."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from agentlite.box.ownership import RecordStore
from agentlite.box.sandbox import SandboxRuntime
from agentlite.core.errors import RunTimeout
from agentlite.run import box_run as _run
from agentlite.run.box_run import RunOutcome, run_agent
from agentlite.run.protocol import (
    BackendConfig,
    ErrorEvent,
    Event,
    ResultEvent,
    RunnerInput,
    SdkMessageEvent,
    StateEvent,
)
from agentlite.run.runner_input import request_close, write_follow_up
from agentlite.testing import ModelServer
from conftest import needs_agent_clis


def backend(kind: str, server: ModelServer, **extra: object) -> BackendConfig:
    base = server.anthropic_base_url if kind == "claude_code" else server.openai_base_url
    return BackendConfig(type=kind, base_url=base, model="fake-model", max_retries=0, **extra)  # type: ignore[arg-type]


async def run(sandbox: SandboxRuntime, home: Path, workspace: Path, config: BackendConfig, prompt: str,
              **kwargs: object) -> tuple[RunOutcome, list[Event]]:  # fmt: skip
    events: list[Event] = []
    run_input = RunnerInput(prompt=prompt, group_folder="main", chat_id="c1", is_main=True, backend=config)
    outcome = await run_agent(
        sandbox,
        home,
        run_input,
        workspace=workspace,
        on_event=events.append,
        **{"single_turn": True, "timeout": 120, "idle_timeout": 5, **kwargs},
    )  # type: ignore[arg-type]
    assert await sandbox.list() == [], "a box was left behind"
    assert RecordStore(home).record_names() == [], "an ownership record was left behind"
    return outcome, events


def results(events: list[Event]) -> list[ResultEvent]:
    return [e for e in events if isinstance(e, ResultEvent)]


def errors(events: list[Event]) -> list[ErrorEvent]:
    return [e for e in events if isinstance(e, ErrorEvent)]


@needs_agent_clis("codex")
async def test_codex_many_messages_one_result_after_exit(sandbox: SandboxRuntime, home: Path, tmp_path: Path,
                                                         model: ModelServer) -> None:  # fmt: skip
    outcome, events = await run(
        sandbox, home, tmp_path / "ws", backend("codex", model), "work [scenario:multi]"
    )
    agent_texts = [e.message["item"]["text"] for e in events if isinstance(e, SdkMessageEvent)
                   and e.sdk_type == "item.completed" and e.sdk_subtype == "agent_message"]  # fmt: skip
    assert agent_texts == ["I will inspect the workspace first.", "Plan: run one command, then answer.",
                           "Final answer after the tool work."]  # fmt: skip
    assert [r.result for r in results(events)] == ["Final answer after the tool work."]
    index = events.index(results(events)[0])
    assert sum(isinstance(e, SdkMessageEvent) for e in events[:index]) >= 5
    assert any(isinstance(e, SdkMessageEvent) and e.sdk_type == "turn.completed" for e in events[:index])
    assert (outcome.status, outcome.reason, outcome.result) == (
        "success",
        "exit",
        "Final answer after the tool work.",
    )
    assert (tmp_path / "ws" / "probe.txt").read_text() == "probe\n"  # the tool really ran, in the workspace
    assert outcome.session_id and outcome.session_id == results(events)[0].new_session_id
    assert events[-1] == StateEvent(
        state="stopped", reason="exit", exit_code=0, new_session_id=outcome.session_id
    )


@needs_agent_clis("codex")
async def test_codex_failing_model_gives_one_error_and_no_result(sandbox: SandboxRuntime, home: Path,
                                                                 tmp_path: Path, model: ModelServer) -> None:  # fmt: skip
    started = time.monotonic()
    outcome, events = await run(
        sandbox, home, tmp_path / "ws", backend("codex", model), "x [scenario:error500]"
    )
    assert results(events) == [] and len(errors(events)) == 1
    assert errors(events)[0].error.startswith("Codex exited with code 1:")
    assert (outcome.status, outcome.reason) == ("error", "error_exit")
    assert time.monotonic() - started < 60


@pytest.mark.parametrize(
    ("kind", "base_url", "causes"),
    [
        pytest.param("codex", "http://127.0.0.1:9/v1", ("Connection failed", "error sending request"),
                     marks=needs_agent_clis("codex"), id="codex"),
        pytest.param("claude_code", "http://127.0.0.1:9", ("Unable to connect",), marks=needs_agent_clis("claude"),
                     id="claude"),
    ],
)  # fmt: skip
async def test_model_server_down_fails_fast_naming_the_cause(sandbox: SandboxRuntime, home: Path, tmp_path: Path,
                                                             kind: str, base_url: str, causes: tuple[str, ...]) -> None:  # fmt: skip
    config = BackendConfig(type=kind, base_url=base_url, max_retries=0)  # type: ignore[arg-type]
    started = time.monotonic()
    outcome, events = await run(sandbox, home, tmp_path / "ws", config, "hello")
    assert len(errors(events)) == 1 and results(events) == []
    assert any(cause in errors(events)[0].error for cause in causes), errors(events)[0].error
    # Not a wall-time benchmark: a generous bound that only a retrying or hanging CLI would cross.
    assert outcome.status == "error" and time.monotonic() - started < 60


@needs_agent_clis("claude")
async def test_claude_tool_writes_a_file_and_gives_one_result(sandbox: SandboxRuntime, home: Path, tmp_path: Path,
                                                              model: ModelServer) -> None:  # fmt: skip
    outcome, events = await run(
        sandbox, home, tmp_path / "ws", backend("claude_code", model), "go [scenario:tool]"
    )
    assert (tmp_path / "ws" / "out.txt").read_text() == "probe\n"
    assert [r.result for r in results(events)] == ["Wrote out.txt with the shell tool."]
    assert (outcome.status, outcome.result) == ("success", "Wrote out.txt with the shell tool.")
    init = next(e for e in events if isinstance(e, SdkMessageEvent) and e.sdk_subtype == "init")
    assert outcome.session_id == init.message["session_id"]


@needs_agent_clis("claude")
async def test_claude_is_error_becomes_an_error(sandbox: SandboxRuntime, home: Path, tmp_path: Path,
                                                model: ModelServer) -> None:  # fmt: skip
    outcome, events = await run(
        sandbox, home, tmp_path / "ws", backend("claude_code", model), "x [scenario:error500]"
    )
    assert results(events) == [] and len(errors(events)) == 1
    assert errors(events)[0].error.startswith("Claude Code failed: API Error: 500")
    assert outcome.status == "error"


@needs_agent_clis("codex-acp")
async def test_acp_codex_adapter_one_result_per_prompt_with_a_tool(sandbox: SandboxRuntime, home: Path,
                                                                    tmp_path: Path, model: ModelServer) -> None:  # fmt: skip
    config = backend("acp", model, command=["codex-acp"])
    outcome, events = await run(sandbox, home, tmp_path / "ws", config, "go [scenario:tool]")
    assert [r.result for r in results(events)] == ["Wrote out.txt with the shell tool."]
    assert (tmp_path / "ws" / "out.txt").read_text() == "probe\n"
    assert any(isinstance(e, SdkMessageEvent) and e.sdk_subtype == "tool_call" for e in events)
    response = next(e for e in events if isinstance(e, SdkMessageEvent) and e.sdk_type == "prompt_response")
    assert response.message["stopReason"] == "end_turn" and events.index(response) < events.index(
        results(events)[0]
    )
    assert outcome.status == "success"


@needs_agent_clis("claude-agent-acp")
async def test_acp_claude_adapter_one_result_per_prompt(sandbox: SandboxRuntime, home: Path, tmp_path: Path,
                                                        model: ModelServer) -> None:  # fmt: skip
    config = BackendConfig(
        type="acp", command=["claude-agent-acp"], base_url=model.anthropic_base_url, max_retries=0
    )
    outcome, events = await run(sandbox, home, tmp_path / "ws", config, "go [scenario:tool]")
    assert [r.result for r in results(events)] == ["Wrote out.txt with the shell tool."]
    assert (tmp_path / "ws" / "out.txt").read_text() == "probe\n"
    assert outcome.status == "success"


@pytest.mark.parametrize("kind", ["codex", "claude_code"])
async def test_follow_up_runs_a_second_turn_in_the_same_box_and_session(
    kind: str,sandbox: SandboxRuntime, home: Path,
                                                                        tmp_path: Path, model: ModelServer) -> None:  # fmt: skip
    ipc = tmp_path / "ipc"
    boxes: list[str] = []
    events: list[Event] = []
    turns = asyncio.Event()

    async def on_event(event: Event) -> None:
        events.append(event)
        if isinstance(event, StateEvent) and event.state == "idle":
            if len(results(events)) == 1:
                write_follow_up(ipc, "second question")
            else:
                request_close(ipc)
                turns.set()

    run_input = RunnerInput(prompt="first", group_folder="main", chat_id="c", is_main=True,
                            backend=backend(kind, model))  # fmt: skip
    outcome = await run_agent(sandbox, home, run_input, workspace=tmp_path / "ws", ipc_dir=ipc, on_event=on_event,
                              timeout=120, idle_timeout=60, on_box=boxes.append)  # fmt: skip
    assert turns.is_set() and len(boxes) == 1
    assert len(results(events)) == 2
    first, second = results(events)
    assert first.new_session_id == second.new_session_id == outcome.session_id
    assert (outcome.status, outcome.reason, outcome.exit_code) == (
        "success",
        "exit",
        0,
    )  # _close ended it cleanly
    assert sum(1 for r in model.requests if r.path in ("/v1/responses", "/v1/messages")) == 2
    assert await sandbox.list() == [] and RecordStore(home).record_names() == []


@needs_agent_clis("codex")
async def test_hanging_backend_is_killed_by_the_hard_timeout(sandbox: SandboxRuntime, home: Path, tmp_path: Path,
                                                             model: ModelServer, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(_run, "IDLE_GRACE", 0.0)
    started = time.monotonic()
    outcome, events = await run(sandbox, home, tmp_path / "ws", backend("codex", model), "x [scenario:hang]",
                                timeout=3, idle_timeout=0.5)  # fmt: skip
    assert (outcome.status, outcome.reason) == ("error", "timeout")
    assert outcome.error == "Box timed out after 3 s"
    with pytest.raises(RunTimeout) as timed_out:  # the same outcome, as an exception
        outcome.raise_for_status()
    assert (timed_out.value.box, timed_out.value.timeout) == (outcome.box, 3)
    assert events[-1].reason == "timeout"  # type: ignore[union-attr]
    assert time.monotonic() - started < 30


@needs_agent_clis("codex")
async def test_output_over_the_cap_is_truncated_in_the_log_not_in_the_events(sandbox: SandboxRuntime, home: Path,
                                                                              tmp_path: Path, model: ModelServer) -> None:  # fmt: skip
    outcome, events = await run(
        sandbox, home, tmp_path / "ws", backend("codex", model), "[scenario:multi]", max_output=300
    )
    assert [r.result for r in results(events)] == ["Final answer after the tool work."]
    assert outcome.log_path is not None
    header = json.loads(outcome.log_path.read_text().split("\n\n=== stdout ===")[0])
    assert header["stdout_truncated"] is True and header["outcome"]["status"] == "success"
    assert len(outcome.log_path.read_text().split("=== stdout ===\n")[1].split("\n=== stderr ===")[0]) <= 300


@needs_agent_clis("codex")
async def test_output_handler_exception_is_reraised_after_teardown(sandbox: SandboxRuntime, home: Path,
                                                                   tmp_path: Path, model: ModelServer) -> None:  # fmt: skip
    def explode(event: Event) -> None:
        if isinstance(event, SdkMessageEvent):
            raise ConnectionError("send failed")

    run_input = RunnerInput(
        prompt="hi", group_folder="main", chat_id="c", is_main=True, backend=backend("codex", model)
    )
    with pytest.raises(ConnectionError, match="send failed"):
        await run_agent(
            sandbox, home, run_input, workspace=tmp_path / "ws", on_event=explode, single_turn=True
        )
    assert await sandbox.list() == [] and RecordStore(home).record_names() == []


@pytest.mark.parametrize(
    ("exit_code", "timed_out", "last_state", "error", "expected"),
    [
        (137, True, "idle", None, ("success", "idle_timeout", None)),
        (137, True, "active", None, ("error", "timeout", "Box timed out after 60 s")),
        (1, False, "active", None, ("error", "error_exit", "Box exited with code 1: trace\noops")),
        (
            1,
            False,
            "active",
            "Codex exited with code 1: 500",
            ("error", "error_exit", "Codex exited with code 1: 500"),
        ),
        (0, False, "idle", None, ("success", "exit", None)),
    ],
)
def test_outcome_classification(exit_code: int, timed_out: bool, last_state: str, error: str | None,
                                expected: tuple[str, str, str | None]) -> None:  # fmt: skip
    outcome = _run._classify(
        exit_code, timed_out, last_state, "answer", error, "s1", b"trace\noops", 60, "box"
    )
    assert (outcome.status, outcome.reason, outcome.error) == expected
    assert outcome.session_id == "s1"
