"""Outbound ACP delegation: a boxed agent's actions drive peer ACP agents that run in boxes of their
own. Real platform, real sandbox boxes, the real codex CLI and codex-acp adapter against the offline
model server; the actions are called as the in-box MCP server calls them (HTTP, per-run token)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import acp
import pytest

import agentlite
from agentlite.box.ownership import RecordStore
from agentlite.box.sandbox import SandboxRuntime
from agentlite.core.errors import ConfigError
from agentlite.platform.acp_peers import AcpPeer, _PeerBox, _PeerClient, resolve_peers
from agentlite.testing import ModelServer
from agentlite.testing.channels import RecordingChannel, RecordingChannels
from conftest import needs_agent_clis, until

needs_codex = needs_agent_clis("codex", "codex-acp")


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[agentlite.AgentLite]:
    async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox", timezone="UTC",
                                      idle_timeout=20, scheduler_poll_interval=0.3) as p:  # fmt: skip
        p.retry_base = 0.2
        yield p
    assert RecordStore(tmp_path / "data" / ".boxlite").record_names() == []


async def started(platform: agentlite.AgentLite, model: ModelServer, peers: list[Any],
                  **acp_options: Any) -> tuple[Any, RecordingChannel]:  # fmt: skip
    channels = RecordingChannels()
    backend = {"type": "codex", "base_url": model.openai_base_url, "max_retries": 0}
    agent = await platform.get_or_create_agent("main", backend=backend, channels={"test": channels})
    agent.set_acp_peers(peers, **acp_options)
    await agent.start()
    return agent, channels.channel


def _call_action(agent: Any, folder: str, is_main: bool, name: str, payload: dict[str, Any],
                chat_id: str | None = None) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """POST /call as the in-box MCP server does, with a token minted for ``folder``."""
    auth = agent._actions_server.mint_token(folder, is_main)
    body = json.dumps({"name": name, "payload": payload, "chat_id": chat_id}).encode()
    request = urllib.request.Request(auth.url + "/call", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {auth.token}",
                                              "Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())
    finally:
        agent._actions_server.revoke_token(auth.token)


async def call_action(*args: Any) -> tuple[int, dict[str, Any]]:
    # Off the event loop: the actions server answers on it.
    return await asyncio.to_thread(_call_action, *args)


async def box_names(platform: agentlite.AgentLite) -> list[str]:
    return [b.name for b in await SandboxRuntime(platform.box_home).list()]


@needs_codex
async def test_a_turn_delegates_to_the_codex_peer_which_runs_in_its_own_box(
    platform: agentlite.AgentLite, model: ModelServer
) -> None:
    agent, channel = await started(platform, model, ["codex"], idle_timeout=1.0)
    agent.register_group("t:main", name="main", folder="main", is_main=True)
    model.scenario = "tool_call"
    payload = {
        "target_group_jid": "codex",
        "prompt": "Summarise the folder [scenario:text]",
        "timeout_ms": 120000,
    }
    model.tool = ("mcp__agentlite__call_action", {"name": "agent_delegate", "payload": payload})
    seen: set[str] = set()

    async def watch_boxes() -> None:
        while True:
            seen.update(await box_names(platform))
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch_boxes())
    try:
        await channel.say("t:main", "ask the codex peer")
        sent = await channel.wait_sent(1, timeout=150)
    finally:
        watcher.cancel()
    assert ("t:main", "Called the tool.") in sent
    # The peer's answer came back to the calling agent as the tool's result.
    assert "hi from the offline model" in json.dumps(model.requests[-1].body)
    peer_boxes = [n for n in seen if "-acp-codex-main-" in n]
    assert peer_boxes, f"the peer never ran in a box of its own: {sorted(seen)}"
    assert any(n.startswith(f"agentlite-{agent.id}-main-") for n in seen), "the caller's own box"

    async def peer_box_gone() -> bool:
        return not [n for n in await box_names(platform) if "-acp-" in n]

    await until(peer_box_gone, "the peer's box to go", 60)  # its delegate session closed, it idled out
    await agent.stop()


@needs_codex
async def test_acp_prompt_writes_its_artifact_and_a_notice_wakes_a_trigger_only_group(
    platform: agentlite.AgentLite, model: ModelServer
) -> None:
    agent, channel = await started(platform, model, ["codex"])
    agent.register_group("t:team", name="team", folder="team")  # needs @Andy, except for notices
    status, body = await call_action(agent, "team", False, "acp_new_session", {"peer": "codex"}, "t:team")
    assert status == 200, body
    session_id = body["result"]["session_id"]
    status, body = await call_action(agent, "team", False, "acp_prompt",
                               {"session_id": session_id, "prompt": [{"type": "text", "text": "hello peer"}]})  # fmt: skip
    assert (status, body) == (200, {"result": {"ok": True}})
    runs = agent.ipc_root / "team" / "acp" / "runs"

    def finished() -> list[dict[str, Any]]:
        found = [json.loads(p.read_text()) for p in runs.glob("acp-run-*.json")] if runs.is_dir() else []
        return [f for f in found if f["status"] != "running"]

    (artifact,) = await until(finished, "the ACP run's artifact", 90)
    assert artifact["status"] == "completed" and artifact["stop_reason"] == "end_turn"
    assert artifact["session_id"] == session_id and artifact["peer"] == "codex"
    assert "hi from the offline model" in artifact["text"]
    assert artifact["text_bytes"] == len(artifact["text"].encode())
    # The notice woke the group without its trigger word: the agent ran a turn on it and replied.
    sent = await channel.wait_sent(1, timeout=150)
    assert sent[0][0] == "t:team"
    asked = json.dumps([r.body for r in model.requests])
    assert f"ACP prompt finished for session {session_id}: completed (end_turn)" in asked
    assert "/workspace/ipc/acp/runs/acp-run-" in asked
    await agent.stop()


@needs_codex
async def test_a_non_main_group_cannot_act_on_another_groups_session(
    platform: agentlite.AgentLite, model: ModelServer
) -> None:
    agent, _channel = await started(platform, model, ["codex"])
    agent.register_group("t:main", name="main", folder="main", is_main=True)
    agent.register_group("t:team", name="team", folder="team")
    agent.register_group("t:other", name="other", folder="other")
    status, body = await call_action(agent, "team", False, "acp_new_session", {"peer": "codex"}, "t:team")
    assert status == 200, body
    session_id = body["result"]["session_id"]
    # A second session of the same group reuses the peer's box (single-flight, lazy, reused).
    status, second = await call_action(agent, "team", False, "acp_new_session", {"peer": "codex"}, "t:team")
    assert status == 200 and second["result"]["session_id"] != session_id
    assert len([n for n in await box_names(platform) if "-acp-codex-team-" in n]) == 1
    status, body = await call_action(agent, "team", False, "acp_new_session",
                                     {"peer": "codex", "cwd": "/etc"}, "t:team")  # fmt: skip
    assert status == 500 and "must be inside /workspace/group" in body["error"]
    for action, payload in (("acp_prompt", {"session_id": session_id, "prompt": ["hi"]}),
                            ("acp_cancel", {"session_id": session_id}),
                            ("acp_close_session", {"session_id": session_id})):  # fmt: skip
        status, body = await call_action(agent, "other", False, action, payload, "t:other")
        assert status == 500 and "is owned by a different group" in body["error"], (action, body)
    # The main group may; the owner may too.
    assert (await call_action(agent, "main", True, "acp_cancel", {"session_id": session_id}))[0] == 200
    assert (await call_action(agent, "team", False, "acp_close_session", {"session_id": session_id}))[
        0
    ] == 200
    status, body = await call_action(agent, "team", False, "acp_new_session", {"peer": "nope"}, "t:team")
    assert status == 500 and body["error"].startswith("unknown acp peer: nope.")
    status, body = await call_action(agent, "team", False, "acp_list_remote_agents", {})
    assert [a["name"] for a in body["result"]["agents"]] == ["codex"]
    await agent.stop()


async def test_a_host_restart_marks_running_artifacts_abandoned_and_old_ones_are_swept(
    platform: agentlite.AgentLite, model: ModelServer
) -> None:
    workdir = platform.workdir / "agents" / "main"
    runs = workdir / "data" / "ipc" / "main" / "acp" / "runs"
    runs.mkdir(parents=True)
    running = {"session_id": "s1", "peer": "codex", "status": "running", "started_at": "2026-01-01T00:00:00Z"}
    (runs / "acp-run-1.json").write_text(json.dumps(running))
    (runs / "acp-run-old.json").write_text(json.dumps({**running, "status": "completed"}))
    eight_days_ago = time.time() - 8 * 24 * 3600
    os.utime(runs / "acp-run-old.json", (eight_days_ago, eight_days_ago))
    agent, _channel = await started(platform, model, ["codex"])
    data = json.loads((runs / "acp-run-1.json").read_text())
    assert (data["status"], data["stop_reason"]) == ("failed", "abandoned")
    assert data["error"] == "Host restarted before ACP prompt completed"
    assert not (runs / "acp-run-old.json").exists()
    await agent.stop()


def test_peer_config_presets_commands_and_errors() -> None:
    assert resolve_peers(["codex"]) == [AcpPeer("codex", ["codex-acp"])]
    custom = resolve_peers([{"name": "mine", "command": "my-agent", "args": ["--acp"], "env": {"A": "1"}}])
    assert custom == [AcpPeer("mine", ["my-agent", "--acp"], {"A": "1"})]
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_peers([{"name": "x", "preset": "emacs"}])
    with pytest.raises(ConfigError, match="needs `command`"):
        resolve_peers([{"name": "x"}])


@pytest.mark.parametrize(
    ("installed", "expected"),
    [((), []), (("codex-acp",), ["codex"]), (("claude-agent-acp",), ["claude-code"]),
     (("codex-acp", "claude-agent-acp"), ["codex", "claude-code"])],
)  # fmt: skip
def test_the_auto_preset_is_the_installed_adapters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   installed: tuple[str, ...], expected: list[str]) -> None:  # fmt: skip
    bin_dir = tmp_path / "node_modules" / ".bin"
    bin_dir.mkdir(parents=True)
    for name in installed:
        (bin_dir / name).write_text("#!/bin/sh\n")
    monkeypatch.setattr("agentlite.platform.acp_peers.agent_clis_bin", lambda: bin_dir)
    assert [p.name for p in resolve_peers(["auto"])] == expected


@needs_agent_clis("codex-acp", "claude-agent-acp")
def test_the_auto_preset_finds_both_pinned_adapters_of_this_checkout() -> None:
    assert [p.name for p in resolve_peers(["auto"])] == ["codex", "claude-code"]


async def test_peer_fs_requests_are_confined_to_the_callers_group_folder(tmp_path: Path) -> None:
    folder = tmp_path / "groups" / "team"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("one\ntwo\nthree\n")
    (tmp_path / "secret.txt").write_text("host secret")
    (folder / "link").symlink_to(tmp_path / "secret.txt")
    box = _PeerBox.__new__(_PeerBox)
    box.folder = folder
    client = _PeerClient(box)
    read = await client.read_text_file(path="/workspace/group/notes.txt", session_id="s", line=2, limit=1)
    assert read.content == "two\n"
    await client.write_text_file(content="new", path="/workspace/group/sub/dir/out.txt", session_id="s")
    assert (folder / "sub" / "dir" / "out.txt").read_text() == "new"
    for path in ("/etc/passwd", "/workspace/group/../secret.txt", "relative.txt", "/workspace/group"):
        with pytest.raises(acp.RequestError) as refused:
            await client.read_text_file(path=path, session_id="s")
        assert "path outside sandbox" in str(refused.value.data), path
    with pytest.raises(acp.RequestError):  # a planted symlink is refused, not followed
        await client.read_text_file(path="/workspace/group/link", session_id="s")


def test_service_config_takes_acp_peers_and_names_a_bad_one(tmp_path: Path) -> None:
    from agentlite.platform.service import load_config

    path = tmp_path / "agentlite.toml"
    path.write_text('[[agents]]\nname = "main"\nacp_peers = ["codex", { name = "mine", command = "x-acp" }]\n'
                    'acp_permissions = "allow"\n')  # fmt: skip
    agent = load_config(path, env={}).agents[0]
    assert agent.acp_peers[0] == "codex" and agent.acp_permissions == "allow"
    path.write_text('[[agents]]\nname = "main"\nacp_peers = [{ name = "mine" }]\n')
    with pytest.raises(ConfigError, match=r"agents\[0\]\.acp_peers.*needs `command`"):
        load_config(path, env={})


@needs_agent_clis("claude-agent-acp")
@pytest.mark.parametrize("policy", ["deny", "allow"])
async def test_the_claude_code_peer_follows_the_permission_policy(
    platform: agentlite.AgentLite, model: ModelServer, policy: str
) -> None:
    agent, _channel = await started(platform, model, ["claude-code"], permissions=policy)
    agent.register_group("t:main", name="main", folder="main", is_main=True)
    payload = {"target_group_jid": "claude-code", "prompt": "go [scenario:tool]", "timeout_ms": 120000}
    status, body = await call_action(agent, "main", True, "agent_delegate", payload, "t:main")
    assert status == 200, body
    result = body["result"]
    assert result["status"] == "completed" and result["stop_reason"] == "end_turn", result
    written = agent.groups_dir / "main" / "out.txt"
    # The peer worked in the caller's group folder, and only ran the command when allowed.
    assert written.exists() == (policy == "allow")
    await agent.stop()


@needs_codex
async def test_a_host_that_stops_mid_prompt_leaves_running_which_the_next_start_marks_abandoned(
    tmp_path: Path, model: ModelServer
) -> None:
    workdir = tmp_path / "data"
    async with await agentlite.create(workdir=workdir, runtime="sandbox", timezone="UTC") as first:
        agent, _channel = await started(first, model, ["codex"])
        agent.register_group("t:main", name="main", folder="main", is_main=True)
        status, body = await call_action(agent, "main", True, "acp_new_session", {"peer": "codex"}, "t:main")
        assert status == 200, body
        asked = len(model.requests)
        model.delay = 60  # the peer's model request is held: the prompt is still running at the stop
        payload = {"session_id": body["result"]["session_id"], "prompt": ["take your time"]}
        assert (await call_action(agent, "main", True, "acp_prompt", payload))[0] == 200
        await until(lambda: len(model.requests) > asked, "the peer's model request", 90)
        await agent.stop()
    model.delay = 0
    runs = workdir / "agents" / "main" / "data" / "ipc" / "main" / "acp" / "runs"
    (artifact,) = runs.glob("acp-run-*.json")
    assert json.loads(artifact.read_text())["status"] == "running"
    async with await agentlite.create(workdir=workdir, runtime="sandbox", timezone="UTC") as second:
        agent, _channel = await started(second, model, ["codex"])
        data = json.loads(artifact.read_text())
        assert (data["status"], data["stop_reason"]) == ("failed", "abandoned")
        await agent.stop()
    assert RecordStore(workdir / ".boxlite").record_names() == []
