"""The platform end to end: real SQLite files, real sandbox boxes, the real codex and claude CLIs against
the built-in model server, and a test channel driver that records what the agent says."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import agentlite
from agentlite.box.ownership import RecordStore
from agentlite.core.errors import AgentliteError, ConfigError
from agentlite.platform.store import now_iso
from agentlite.testing import ModelServer
from agentlite.testing.channels import RecordingChannel, RecordingChannels
from conftest import needs_agent_clis, needs_codex, raw_sql, until

pytestmark = needs_codex


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[agentlite.AgentLite]:
    async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox", timezone="UTC",
                                      idle_timeout=20, scheduler_poll_interval=0.3) as p:  # fmt: skip
        p.retry_base = 0.2
        yield p
    assert RecordStore(tmp_path / "data" / ".boxlite").record_names() == []


def codex(model: ModelServer) -> dict[str, Any]:
    return {"type": "codex", "base_url": model.openai_base_url, "max_retries": 0}


async def started(
    platform: agentlite.AgentLite, model: ModelServer, **options: Any
) -> tuple[Any, RecordingChannel]:
    channels = RecordingChannels()
    agent = await platform.get_or_create_agent("main", backend=options.pop("backend", codex(model)),
                                               channels={"test": channels}, **options)  # fmt: skip
    await agent.start()
    return agent, channels.channel


def requests_to(model: ModelServer, path: str) -> list[Any]:
    return [r for r in model.requests if r.path == path]


async def test_registry_persists_restores_and_refuses_conflicts(tmp_path: Path) -> None:
    workdir = tmp_path / "data"
    async with await agentlite.create(workdir=workdir, runtime="sandbox") as p:
        agent = await p.create_agent(
            "alice", assistant_name="Al", backend={"type": "codex", "model": " gpt-5 "}
        )
        assert (workdir / "store" / "agentlite.db").is_file()
        assert agent.workdir == (workdir / "agents" / "alice").resolve()
        with pytest.raises(ConfigError, match="already exists"):
            await p.create_agent("alice")
    async with await agentlite.create(workdir=workdir, runtime="sandbox") as p:
        alice = p.get_agent("alice")
        assert alice is not None and not alice.started and alice.id == agent.id
        assert alice.get_backend().model == "gpt-5" and alice.assistant_name == "Al"
        same = await p.get_or_create_agent("alice", backend={"type": "codex", "model": "gpt-5"})
        assert same is alice
        with pytest.raises(ConfigError, match="already exists with assistant name `Al`"):
            await p.get_or_create_agent("alice", assistant_name="Bob")
        with pytest.raises(ConfigError, match="already exists with backend `codex`"):
            await p.get_or_create_agent("alice", backend={"type": "claude_code"})
        with pytest.raises(ConfigError, match="already exists with workdir"):
            await p.get_or_create_agent("alice", workdir=tmp_path / "elsewhere")
        with pytest.raises(ConfigError, match="Invalid agent backend"):
            await p.create_agent("bad", backend="claude")
        assert p.get_agent("bad") is None and p.registry.get("bad") is None


async def test_triggered_message_gets_a_reply_and_advances_the_cursor(platform: agentlite.AgentLite,
                                                                      model: ModelServer) -> None:  # fmt: skip
    agent, channel = await started(platform, model)
    agent.register_group("t:team", name="team", folder="team")
    seen: list[str] = []
    agent.on("message.out", lambda e: seen.append(e.data["text"]))
    await channel.say("t:team", "an untriggered remark")
    (remark,) = agent.store.get_messages_since("t:team", "", "Andy")
    # The loop marks what it has looked at: once the remark is marked, its pass decided to leave it.
    await until(
        lambda: agent.store.get_state("last_timestamp") == remark.timestamp, "a loop pass over the remark"
    )
    assert channel.sent == [] and requests_to(model, "/v1/responses") == []
    await channel.say("t:team", "@Andy what do you think?")
    sent = await channel.wait_sent(1)
    assert sent == [("t:team", "hi from the offline model")] and seen == ["hi from the offline model"]
    prompt = json.dumps(requests_to(model, "/v1/responses")[-1].body)
    assert "an untriggered remark" in prompt and "what do you think?" in prompt  # included as context
    cursors = agent.store.get_json_state("last_agent_timestamp", {})
    assert cursors["t:team"] == agent.store.get_messages_since("t:team", "", "Andy")[-1].timestamp
    await agent.stop()


async def test_failing_run_rolls_back_and_is_retried(
    platform: agentlite.AgentLite, model: ModelServer
) -> None:
    agent, channel = await started(platform, model)
    agent.register_group("t:main", name="main", folder="main", is_main=True)
    model.scenario = "error500"
    states: list[str] = []
    agent.on("run.state", lambda e: states.append(f"{e.data['state']}:{e.data.get('reason')}"))
    await channel.say("t:main", "hello")
    await until(lambda: "stopped:error_exit" in states, "the failed run's stop", 60)
    assert agent.store.get_json_state("last_agent_timestamp", {}).get("t:main", "") == ""  # rolled back
    model.scenario = "text"
    assert await channel.wait_sent(1) == [("t:main", "hi from the offline model")]  # the retry answered
    await agent.stop()


async def test_three_groups_with_a_cap_of_two_never_run_three_boxes(
    tmp_path: Path, model: ModelServer
) -> None:
    async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox", max_concurrent=2,
                                      idle_timeout=20) as platform:  # fmt: skip
        agent, channel = await started(platform, model)
        for name in ("a", "b", "c"):
            agent.register_group(f"t:{name}", name=name, folder=name, is_main=True)
        model.delay = 1.0
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, sum(b.running for b in await platform.runtime.list()))
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        for name in ("a", "b", "c"):
            await channel.say(f"t:{name}", f"hello {name}")
        try:
            await channel.wait_sent(3, timeout=120)
        finally:
            watcher.cancel()
        assert peak == 2
        assert sorted(chat for chat, _ in channel.sent) == ["t:a", "t:b", "t:c"]
        await agent.stop()


async def test_cron_task_fires_and_its_reply_is_delivered(
    platform: agentlite.AgentLite, model: ModelServer
) -> None:
    agent, channel = await started(platform, model)
    agent.register_group("t:main", name="main", folder="main", is_main=True)
    events: list[str] = []
    agent.on("*", lambda e: events.append(e.name) if e.name.startswith("task.") else None)
    task = await agent.schedule_task(
        jid="t:main", prompt="daily report", schedule_type="cron", schedule_value="0 9 * * *"
    )
    assert task.next_run is not None and task.next_run.endswith("T09:00:00.000Z")
    agent.store.update_task(task.id, next_run="2000-01-01T00:00:00.000Z")  # due now
    assert await channel.wait_sent(1) == [("t:main", "hi from the offline model")]
    await until(lambda: "task.run.succeeded" in events, "the task run's success event", 30)
    assert events[:4] == ["task.created", "task.run.queued", "task.run.started", "task.run.succeeded"]
    details = agent.get_task(task.id)
    assert details.status == "active" and details.runs[0].status == "success"
    assert details.next_run > now_iso()
    assert "[SCHEDULED TASK" in json.dumps(requests_to(model, "/v1/responses")[-1].body)
    with pytest.raises(ConfigError, match="cron"):
        await agent.schedule_task(jid="t:main", prompt="x", schedule_type="cron", schedule_value="61 * * * *")
    with pytest.raises(ConfigError, match="unknown group"):
        await agent.schedule_task(jid="t:nope", prompt="x", schedule_type="interval", schedule_value="60000")
    assert [t.id for t in agent.list_tasks()] == [task.id]  # nothing stored was lost
    await agent.stop()


@needs_agent_clis("claude")
async def test_agent_uses_mcp_tools_and_custom_actions_from_inside_the_box(platform: agentlite.AgentLite,
                                                                           model: ModelServer) -> None:  # fmt: skip
    claude = {"type": "claude_code", "base_url": model.anthropic_base_url, "max_retries": 0}
    agent, channel = await started(platform, model, backend=claude)
    agent.register_group("t:main", name="main", folder="main", is_main=True)
    calls: list[tuple[Any, Any]] = []

    def lookup(ctx: Any) -> dict[str, Any]:
        calls.append((ctx.source_group, ctx.is_main))
        return {"answer": 42}

    agent.action("lookup", lookup, description="Look something up")
    model.scenario = "tool_call"
    model.tool = ("mcp__agentlite__send_message", {"text": "message from inside the box"})
    await channel.say("t:main", "send me something")
    sent = await channel.wait_sent(2)
    assert ("t:main", "message from inside the box") in sent  # via MCP -> IPC file -> host watcher
    model.tool = ("mcp__agentlite__schedule_task",
                  {"prompt": "check in", "schedule_type": "interval", "schedule_value": "3600000"})  # fmt: skip
    await channel.say("t:main", "schedule something")
    await until(agent.list_tasks, "the task the box scheduled", 60)
    assert [(t.prompt, t.schedule_type, t.group_folder) for t in agent.list_tasks()] == [
        ("check in", "interval", "main")
    ]
    model.tool = ("mcp__agentlite__call_action", {"name": "lookup", "payload": {}})
    count = len(channel.sent)
    await channel.say("t:main", "call the action")
    await channel.wait_sent(count + 1)
    assert calls == [("main", True)]
    tool_results = json.dumps(model.requests[-1].body)
    assert "42" in tool_results
    # Without its token the same endpoint refuses.
    import urllib.error
    import urllib.request

    url = agent._actions_server.url + "/call"
    request = urllib.request.Request(url, data=b'{"name": "lookup", "payload": {}}', method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        await asyncio.to_thread(urllib.request.urlopen, request)
    assert refused.value.code == 401
    refused.value.close()
    await agent.stop()


@pytest.mark.parametrize("kind", ["codex", pytest.param("claude_code", marks=needs_agent_clis("claude"))])
async def test_first_model_call_can_already_send_a_message(platform: agentlite.AgentLite, model: ModelServer,
                                                           kind: str) -> None:  # fmt: skip
    """The in-box MCP server is up before the agent's first model call: a turn that opens with
    send_message reaches the chat, and the tool answered "Message sent." (not "unsupported call")."""
    backend = {"type": kind, "max_retries": 0,
               "base_url": model.anthropic_base_url if kind == "claude_code" else model.openai_base_url}  # fmt: skip
    agent, channel = await started(platform, model, backend=backend)
    agent.register_group("t:main", name="main", folder="main", is_main=True)
    model.scenario = "tool_call"
    model.tool = ("mcp__agentlite__send_message", {"text": "sent by the first model call"})
    await channel.say("t:main", "say something at once")
    sent = await channel.wait_sent(2)
    assert ("t:main", "sent by the first model call") in sent
    turn = [r for r in model.requests if r.scenario == "tool_call"]
    assert [r.step for r in turn[:2]] == [0, 1]  # the tool call was the turn's first model call
    tool_output = json.dumps(turn[1].body)
    assert "Message sent." in tool_output and "unsupported call" not in tool_output
    await agent.stop()


async def test_non_main_group_cannot_message_another_group(
    platform: agentlite.AgentLite, model: ModelServer
) -> None:
    agent, channel = await started(platform, model)
    agent.register_group("t:main", name="main", folder="main", is_main=True)
    agent.register_group("t:team", name="team", folder="team", requires_trigger=False)
    model.scenario = "shell"
    forged = json.dumps({"type": "message", "chat_id": "t:main", "text": "forged", "group_folder": "team"})
    folder = "/workspace/ipc/messages"
    model.command = f"mkdir -p {folder} && echo '{forged}' > {folder}/1-forged.tmp && mv {folder}/1-forged.tmp {folder}/1-forged.json"
    await channel.say("t:team", "try it")
    await channel.wait_sent(1)
    errors = agent.ipc_root / "errors"
    await until(
        lambda: errors.is_dir() and list(errors.iterdir()), "the forged request in the errors folder", 30
    )
    assert [p.name for p in errors.iterdir()] == ["team-1-forged.json"]
    assert ("t:main", "forged") not in channel.sent
    await agent.stop()


@needs_agent_clis("claude")
async def test_switching_backend_hands_off_to_the_next_turn(
    platform: agentlite.AgentLite, model: ModelServer
) -> None:
    agent, channel = await started(platform, model)
    agent.register_group("t:main", name="main", folder="main", is_main=True)
    await channel.say("t:main", "first, on codex")
    await channel.wait_sent(1)
    assert agent.store.get_session("main", "codex")
    change = await agent.set_backend(
        {"type": "claude_code", "base_url": model.anthropic_base_url, "max_retries": 0}
    )
    assert change["handoff"] == "pending" and agent.backend_revision == 1
    assert platform.registry.get("main").backend.type == "claude_code"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="Invalid agent backend"):
        await agent.set_backend({"type": "gemini"})
    assert agent.get_backend().type == "claude_code" and agent.backend_revision == 1
    await channel.say("t:main", "second, on claude")
    await channel.wait_sent(2)
    claude_calls = requests_to(model, "/v1/messages")
    assert claude_calls and "<backend_handoff" in json.dumps(claude_calls[0].body)
    assert "first, on codex" in json.dumps(claude_calls[0].body)
    assert agent.store.get_handoff("main") is None and agent.store.get_session("main", "claude_code")
    assert agent.store.get_session("main", "codex")  # the old backend's session is kept
    same = await agent.set_backend(
        {"type": "claude_code", "base_url": model.anthropic_base_url, "max_retries": 0}
    )
    assert same["handoff"] == "notNeeded" and agent.backend_revision == 1
    await agent.stop()


async def test_delete_agent_removes_live_boxes_workdir_and_row(platform: agentlite.AgentLite,
                                                                model: ModelServer) -> None:  # fmt: skip
    agent, channel = await started(platform, model)
    agent.register_group("t:main", name="main", folder="main", is_main=True)
    await channel.say("t:main", "hello")
    await channel.wait_sent(1)
    assert any(b.running for b in await platform.runtime.list())  # idle, waiting for follow-ups
    workdir = agent.workdir
    assert await platform.delete_agent("main")
    assert await platform.runtime.list() == []
    assert (
        not workdir.exists() and platform.registry.get("main") is None and platform.get_agent("main") is None
    )
    assert (platform.workdir / "store" / "agentlite.db").exists()
    assert not await platform.delete_agent("main")


async def test_register_group_needs_start_and_a_valid_folder(platform: agentlite.AgentLite,
                                                             model: ModelServer) -> None:  # fmt: skip
    agent = await platform.create_agent("x", backend=codex(model))
    with pytest.raises(AgentliteError, match="start"):
        agent.register_group("t:1", name="one", folder="one")
    await agent.start()
    with pytest.raises(ConfigError, match="folder"):
        agent.register_group("t:1", name="one", folder="../escape")
    with pytest.raises(ConfigError, match="folder"):
        agent.register_group("t:1", name="one", folder="global")
    assert agent.registered_groups() == {}
    await agent.stop()
    await agent.stop()  # safe twice


def _service_script(workdir: Path, base_url: str) -> str:
    return f"""
import asyncio, sys
import agentlite
from agentlite.testing.channels import RecordingChannel

async def main():
    platform = await agentlite.create(workdir={str(workdir)!r}, runtime="sandbox", idle_timeout=20)
    holder = {{}}
    def factory(config):
        holder["c"] = RecordingChannel(config)
        return holder["c"]
    agent = await platform.get_or_create_agent("svc", backend={{"type": "codex", "base_url": {base_url!r}, "max_retries": 0}},
                                               channels={{"test": factory}})
    await agent.start()
    if "t:main" not in agent.registered_groups():
        agent.register_group("t:main", name="main", folder="main", is_main=True)
    if sys.argv[1] == "send":
        await holder["c"].say("t:main", "please answer this")
    print("ready", flush=True)
    while not holder["c"].sent:
        await asyncio.sleep(0.1)
    print("sent", holder["c"].sent[-1][1], flush=True)
    await platform.close()

asyncio.run(main())
"""


async def test_sigkill_mid_run_then_restart_recovers_the_message_and_reaps_the_box(tmp_path: Path,
                                                                                    model: ModelServer) -> None:  # fmt: skip
    import sys

    workdir = tmp_path / "data"
    script = tmp_path / "service.py"
    script.write_text(_service_script(workdir, model.openai_base_url))
    model.scenario = "hang"
    # The old behaviour, kept behind the switch: a live box is reaped, not adopted (tests/platform/test_adoption.py).
    env = {**os.environ, "AGENTLITE_ADOPT_RUNS": "0"}
    first = await asyncio.create_subprocess_exec(
        sys.executable, str(script), "send", stdout=asyncio.subprocess.PIPE, env=env
    )
    assert first.stdout is not None and await asyncio.wait_for(first.stdout.readline(), 60) == b"ready\n"
    await until(
        lambda: requests_to(model, "/v1/responses"), "the run's model call", 60
    )  # it waits on the model
    boxes = RecordStore(workdir / ".boxlite").record_names()
    assert len(boxes) == 1
    first.kill()
    await first.wait()
    model.scenario = "text"
    second = await asyncio.create_subprocess_exec(
        sys.executable, str(script), "wait", stdout=asyncio.subprocess.PIPE, env=env
    )
    assert second.stdout is not None
    out = (await asyncio.wait_for(second.stdout.read(), 120)).decode()
    assert await second.wait() == 0
    assert "sent hi from the offline model" in out  # the interrupted message was answered
    from agentlite.box.sandbox import SandboxRuntime

    assert [b.name for b in await SandboxRuntime(workdir / ".boxlite").list()] == []  # the orphan was reaped
    assert RecordStore(workdir / ".boxlite").record_names() == []


async def test_telegram_message_gets_the_agents_reply(
    platform: agentlite.AgentLite, model: ModelServer
) -> None:
    """The whole path through a real Telegram library against a fake Bot API server on 127.0.0.1."""
    from tests.fake_telegram import FakeTelegram

    from agentlite.channels.telegram import telegram

    async with FakeTelegram() as fake:
        agent = await platform.get_or_create_agent(
            "tg", backend=codex(model), channels={"telegram": telegram(fake.token, assistant_name="Andy",
                                                                       base_url=fake.base_url, poll_timeout=1)}
        )  # fmt: skip
        await agent.start()
        agent.register_group("tg:777", name="group", folder="tgroup", requires_trigger=True)
        fake.inject_message(777, "@Andy are you there?", chat_type="group", title="Team")
        sent = await fake.wait_for("sendMessage", 1, timeout=60)
        assert (sent[0]["chat_id"], sent[0]["text"]) in ((777, "hi from the offline model"),
                                                         ("777", "hi from the offline model"))  # fmt: skip
        stored = agent.store.get_messages_since("tg:777", "", "Andy")
        assert stored[0].content == "@Andy are you there?" and stored[0].sender_name == "Alice"
        await agent.stop()


async def test_an_old_backend_turn_does_not_repopulate_sessions_after_a_switch(platform: agentlite.AgentLite,
                                                                               model: ModelServer) -> None:  # fmt: skip
    agent, channel = await started(platform, model)
    agent.register_group("t:main", name="main", folder="main", is_main=True)
    model.delay = 2.0
    states: list[str] = []
    agent.on("run.state", lambda e: states.append(e.data["state"]))
    await channel.say("t:main", "a slow question")
    await until(lambda: "active" in states, "the codex turn to be active", 30)
    await agent.set_backend({"type": "claude_code", "base_url": model.anthropic_base_url}, context="fresh")
    await channel.wait_sent(1)  # the codex turn still answers...
    assert agent.session("main") is None
    await agent.stop()  # its box ends here: the last moment the old turn could save a session
    sessions = raw_sql(agent.workdir / "store" / "messages.db", "SELECT backend_type FROM sessions")
    assert sessions == []  # ...but its session was never saved
