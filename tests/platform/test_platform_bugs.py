"""Regression tests for behaviour bugs of the platform found while using it: each one through a real
platform (SQLite store, sandbox boxes, the real codex CLI against the offline model on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import agentlite
from agentlite.box.ownership import RecordStore
from agentlite.run.retry import RetryPolicy
from agentlite.testing import ModelServer
from agentlite.testing.channels import RecordingChannel
from conftest import needs_agent_clis, needs_codex, until

sys.path.insert(0, str(Path(__file__).parent))
from test_platform import codex, started

pytestmark = needs_codex


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[agentlite.AgentLite]:
    async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox", timezone="UTC",
                                      idle_timeout=20, scheduler_poll_interval=0.3) as p:  # fmt: skip
        p.retry_base = 0.2
        yield p
    assert RecordStore(tmp_path / "data" / ".boxlite").record_names() == []  # no box left


async def test_a_failed_run_emits_run_error_with_the_error_text(
    platform: agentlite.AgentLite, model: ModelServer
) -> None:
    agent, _channel = await started(platform, model)
    agent.retry_policy = RetryPolicy(max_retries=0)  # one failed attempt is the whole turn
    agent.register_group("t:main", name="main", folder="main", is_main=True)
    model.scenario = "error500"
    errors: list[dict[str, Any]] = []
    agent.on("run.error", lambda e: errors.append(e.data))
    result = await agent.ask("t:main", "hello")
    assert result.status == "error" and result.error
    await until(lambda: errors, "a run.error event")
    assert errors[0]["jid"] == "t:main" and errors[0]["folder"] == "main"
    assert errors[0]["error"] == result.error and "Codex exited with code 1" in errors[0]["error"]
    assert errors[0]["run_id"]
    await agent.stop()


async def test_a_task_scheduled_from_the_box_keeps_the_id_the_tool_gave_so_pausing_it_works(
    platform: agentlite.AgentLite, model: ModelServer
) -> None:
    agent, _channel = await started(platform, model)
    agent.register_group("t:main", name="main", folder="main", is_main=True)
    model.scenario = "tool_call"
    model.tool = ("mcp__agentlite__schedule_task",
                  {"prompt": "check in", "schedule_type": "interval", "schedule_value": "3600000"})  # fmt: skip
    assert (await agent.ask("t:main", "schedule something")).status == "success"
    told = re.findall(r"Task (task-\d+-[a-z0-9]+) scheduled", json.dumps(model.requests[-1].body))
    assert told, "the tool's answer names the task's id"
    await until(agent.list_tasks, "the task from the box")
    assert [t.id for t in agent.list_tasks()] == [told[0]]  # the id the box was told is the task's
    model.tool = ("mcp__agentlite__pause_task", {"task_id": told[0]})
    assert (await agent.ask("t:main", "pause it")).status == "success"
    await until(lambda: agent.list_tasks()[0].status == "paused", "the task paused from the box")
    assert not (agent.ipc_root / "errors").exists()  # nothing refused
    await agent.stop()


class SenderChannel(RecordingChannel):
    """A driver that takes the display name the agent gave a message."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.senders: list[str | None] = []

    async def send_message(self, chat_id: str, text: str, sender: str | None = None) -> None:
        self.senders.append(sender)
        await super().send_message(chat_id, text)


async def test_a_message_sent_from_the_box_keeps_its_sender(
    platform: agentlite.AgentLite, model: ModelServer
) -> None:
    holder: dict[str, SenderChannel] = {}

    def factory(config: Any) -> SenderChannel:
        holder["channel"] = SenderChannel(config)
        return holder["channel"]

    agent = await platform.get_or_create_agent("main", backend=codex(model), channels={"test": factory})
    await agent.start()
    channel = holder["channel"]
    agent.register_group("t:main", name="main", folder="main", is_main=True)
    outgoing: list[dict[str, Any]] = []
    agent.on("message.out", lambda e: outgoing.append(e.data))
    model.scenario = "tool_call"
    model.tool = ("mcp__agentlite__send_message", {"text": "progress report", "sender": "Researcher"})
    await channel.say("t:main", "report progress")
    await channel.wait_sent(2)
    await until(lambda: len(outgoing) >= 2, "two message.out events")
    by_text = dict(zip([text for _, text in channel.sent], channel.senders, strict=True))
    assert by_text["progress report"] == "Researcher" and by_text["Called the tool."] is None
    assert {"text": "progress report", "sender": "Researcher"}.items() <= next(
        e for e in outgoing if e["text"] == "progress report"
    ).items()
    await agent.stop()


async def test_messages_the_agent_sends_during_a_turn_reach_the_chat_before_its_final(
    tmp_path: Path, model: ModelServer
) -> None:
    # The IPC folder is polled rarely here, so only the drain at the final can deliver in time.
    async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox", timezone="UTC",
                                      idle_timeout=20, ipc_poll_interval=120) as platform:  # fmt: skip
        agent, channel = await started(platform, model)
        agent.register_group("t:main", name="main", folder="main", is_main=True)
        model.scenario = "tool_call"
        model.tool = ("mcp__agentlite__send_message", {"text": "working on it"})
        await channel.say("t:main", "do something")
        assert await channel.wait_sent(2) == [("t:main", "working on it"), ("t:main", "Called the tool.")]
        await agent.stop()


def _handoff_of(body: Any) -> tuple[str, str]:
    """The handoff block of a model request and what follows it (the current message)."""
    text = json.dumps(body)
    start, end = text.index("<backend_handoff"), text.index("</backend_handoff>")
    return text[start:end], text[end:]


@needs_agent_clis("claude")
async def test_the_handoff_after_a_switch_has_both_sides_and_not_the_current_message(
    platform: agentlite.AgentLite, model: ModelServer
) -> None:
    agent, channel = await started(platform, model)
    agent.register_group("t:main", name="main", folder="main", is_main=True)
    await channel.say("t:main", "first, on codex")
    await channel.wait_sent(1)
    await agent.set_backend({"type": "claude_code", "base_url": model.anthropic_base_url, "max_retries": 0})
    await channel.say("t:main", "second, on claude")
    await channel.wait_sent(2)
    claude_calls = [r for r in model.requests if r.path == "/v1/messages"]
    block, after = _handoff_of(claude_calls[0].body)
    assert "first, on codex" in block  # the chat's side
    assert "Andy (assistant): hi from the offline model" in block  # the previous backend's answer
    assert "second, on claude" not in block and "second, on claude" in after  # only as the prompt
    await agent.stop()


async def test_deleting_an_agent_during_a_run_settles_the_run_without_a_traceback(
    platform: agentlite.AgentLite, model: ModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    agent, channel = await started(platform, model)
    agent.register_group("t:main", name="main", folder="main", is_main=True)
    states: list[str] = []
    agent.on("run.state", lambda e: states.append(e.data["state"]))
    model.scenario = "hang"  # the turn is mid-model-call when the agent goes
    caplog.set_level(logging.DEBUG, logger="agentlite")
    await channel.say("t:main", "take your time")
    await until(lambda: model.requests, "the turn's model call")
    assert await platform.delete_agent("main")
    assert await platform.runtime.list() == []
    # Settled before the store closed: nothing the agent started is still running to write to it.
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(f"agent-{agent.id}:")]
    assert left == []
    troubles = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert troubles == [], [f"{r.name}: {r.getMessage()}" for r in troubles]
