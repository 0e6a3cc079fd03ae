"""The host never follows what a box planted: each attack is made from inside a real sandbox box.

A box that sees its group folder at ``/workspace/group`` and its IPC folder at ``/workspace/ipc``
replaces files there with symlinks to host paths (or fifos); the host then registers the group,
builds a handoff, writes follow-ups and ``_close``, and reads requests. Every time the host path
stays untouched and the agent emits a ``path.refused`` event.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import needs_sandbox

import agentlite
from agentlite.box.base import BoxRuntime, BoxSpec, Volume
from agentlite.box.lifecycle import run_in_box
from agentlite.core.safefs import BoxDir, UnsafePath
from agentlite.platform.agent import Agent
from agentlite.platform.events import AgentEvent
from agentlite.platform.handoff import handoff_block
from agentlite.platform.store import AgentStore
from agentlite.run.box_run import run_agent
from agentlite.run.protocol import BackendConfig, RunnerInput
from agentlite.run.runner_input import request_close, write_follow_up
from agentlite.testing import ModelServer
from conftest import needs_agent_clis, until

pytestmark = needs_sandbox
SECRET = "host secret: never show this to a model\n"


async def in_box(runtime: BoxRuntime, home: Path, script: str, **mounts: Path) -> None:
    """Run ``script`` in a fresh box that sees each ``mounts`` folder at ``/workspace/<name>``."""
    volumes = [Volume(path, f"/workspace/{name}") for name, path in mounts.items()]
    result = await run_in_box(runtime, home, ["sh", "-c", "set -e; " + script], agent_id="attacker",
                              group="plant", spec=BoxSpec(volumes=volumes))  # fmt: skip
    assert result.exit_code == 0, result


def recorder(agent: Agent) -> list[AgentEvent]:
    events: list[AgentEvent] = []
    agent.on("path.refused", events.append)
    return events


@pytest.fixture
def host_files(tmp_path: Path) -> Path:
    folder = tmp_path / "host"
    folder.mkdir()
    (folder / "secret.txt").write_text(SECRET)
    return folder


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[agentlite.AgentLite]:
    async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox", timezone="UTC") as p:
        yield p


async def started_agent(platform: agentlite.AgentLite, **options: Any) -> Agent:
    agent = await platform.get_or_create_agent(
        "main", backend=options.pop("backend", {"type": "codex"}), **options
    )
    await agent.start()
    return agent


# -- memory files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["missing.txt", "secret.txt"])
async def test_a_planted_claude_md_symlink_is_never_written_through(
    platform: agentlite.AgentLite, host_files: Path, target: str
) -> None:
    agent = await started_agent(platform)
    events = recorder(agent)
    agent.register_group("t:team", name="team", folder="team")
    group = agent.groups_dir / "team"
    victim = host_files / target
    await in_box(platform.runtime, platform.box_home,
                 f"cd /workspace/group; rm -f CLAUDE.md AGENTS.md; ln -s {shlex.quote(str(victim))} CLAUDE.md;"
                 " echo 'box text' > AGENTS.md", group=group)  # fmt: skip
    before = sorted(os.listdir(host_files))
    agent.register_group("t:team", name="team", folder="team")  # what every `serve` start does
    assert sorted(os.listdir(host_files)) == before
    assert (host_files / "secret.txt").read_text() == SECRET
    assert os.path.islink(group / "CLAUDE.md")  # left as the box made it, never followed
    assert [e.data["action"] for e in events] == ["register_group"]
    assert events[0].data["path"] == str(group / "CLAUDE.md") and "symlink" in events[0].data["reason"]
    await agent.stop()


async def test_a_planted_agents_md_folder_is_refused(platform: agentlite.AgentLite) -> None:
    agent = await started_agent(platform)
    events = recorder(agent)
    agent.register_group("t:team", name="team", folder="team")
    group = agent.groups_dir / "team"
    await in_box(platform.runtime, platform.box_home,
                 "cd /workspace/group; echo memory > CLAUDE.md; rm -f AGENTS.md; mkdir AGENTS.md", group=group)  # fmt: skip
    agent.register_group("t:team", name="team", folder="team")
    assert [e.data["reason"] for e in events] == ["is a directory"]
    await agent.stop()


async def test_a_planted_main_memory_symlink_does_not_stop_the_agent_starting(
    platform: agentlite.AgentLite, host_files: Path
) -> None:
    agent = await started_agent(platform)
    await agent.stop()
    main = agent.groups_dir / "main"
    await in_box(platform.runtime, platform.box_home,
                 f"cd /workspace/group; rm -f CLAUDE.md AGENTS.md; ln -s {host_files}/gone CLAUDE.md;"
                 " echo x > AGENTS.md", group=main)  # fmt: skip
    agent = await platform.get_or_create_agent("main")
    events = recorder(agent)
    await agent.start()  # the seeding refuses `main` and goes on
    assert not (host_files / "gone").exists()
    assert agent.started
    assert [(e.data["action"], Path(e.data["path"]).name) for e in events] == [("seed_memory", "CLAUDE.md")]
    await agent.stop()


# -- the handoff ------------------------------------------------------------------------------------


async def test_the_handoff_never_reads_memory_through_a_symlink(
    platform: agentlite.AgentLite, host_files: Path, tmp_path: Path
) -> None:
    group = tmp_path / "groups" / "team"
    group.mkdir(parents=True)
    await in_box(platform.runtime, platform.box_home,
                 f"cd /workspace/group; ln -s {host_files}/secret.txt CLAUDE.md; ln -s /etc/passwd AGENTS.md",
                 group=group)  # fmt: skip
    store = AgentStore(tmp_path / "messages.db")
    refused: list[UnsafePath] = []
    try:
        block = handoff_block(
            store, group, "t:team", "codex", "claude_code", "Andy", on_refused=refused.append
        )
    finally:
        store.close()
    assert "host secret" not in block and "root:" not in block
    assert "not read: the host refused it: is a symlink" in block
    assert sorted(Path(e.path).name for e in refused) == ["AGENTS.md", "CLAUDE.md"]


@needs_agent_clis("codex", "claude")
async def test_a_backend_switch_sends_no_host_file_to_the_model(
    platform: agentlite.AgentLite, host_files: Path
) -> None:
    from agentlite.testing.channels import RecordingChannels

    async with ModelServer(scenario="text") as model:
        channels = RecordingChannels()

        agent = await started_agent(platform, backend={"type": "codex", "base_url": model.openai_base_url,
                                                       "max_retries": 0}, channels={"test": channels})  # fmt: skip
        events = recorder(agent)
        channel = channels.channel
        agent.register_group("t:main", name="main", folder="main", is_main=True)
        await channel.say("t:main", "first, on codex")
        await channel.wait_sent(1)
        await in_box(platform.runtime, platform.box_home,
                     f"cd /workspace/group; rm -f CLAUDE.md; ln -s {host_files}/secret.txt CLAUDE.md",
                     group=agent.groups_dir / "main")  # fmt: skip
        await agent.set_backend(
            {"type": "claude_code", "base_url": model.anthropic_base_url, "max_retries": 0}
        )
        await channel.say("t:main", "second, on claude")
        await channel.wait_sent(2)
        bodies = json.dumps([r.body for r in model.requests if r.path == "/v1/messages"])
        assert "<backend_handoff" in bodies and "host secret" not in bodies
        assert "handoff" in [e.data["action"] for e in events]
        await agent.stop()


# -- the IPC input folder ---------------------------------------------------------------------------


async def test_a_symlinked_input_folder_gets_no_follow_up_and_no_close(
    platform: agentlite.AgentLite, host_files: Path, tmp_path: Path
) -> None:
    ipc = tmp_path / "ipc" / "team"
    (ipc / "input").mkdir(parents=True)
    await in_box(platform.runtime, platform.box_home,
                 f"rm -rf /workspace/ipc/input; ln -s {host_files} /workspace/ipc/input", ipc=ipc)  # fmt: skip
    before = sorted(os.listdir(host_files))
    with pytest.raises(UnsafePath, match="is a symlink"):
        write_follow_up(ipc, "hello")
    with pytest.raises(UnsafePath, match="is a symlink"):
        request_close(ipc)
    run_input = RunnerInput(
        prompt="hi", group_folder="team", chat_id="t:team", is_main=False, backend=BackendConfig(type="codex")
    )
    with pytest.raises(UnsafePath):  # refused before any box starts
        await run_agent(
            platform.runtime, platform.box_home, run_input, workspace=tmp_path / "ws", ipc_dir=ipc
        )
    assert sorted(os.listdir(host_files)) == before
    assert not [b for b in await platform.runtime.list() if b.running]


async def test_a_symlinked_input_folder_fails_the_agent_run_with_an_event(
    platform: agentlite.AgentLite, host_files: Path
) -> None:
    agent = await started_agent(platform)
    events = recorder(agent)
    agent.register_group("t:team", name="team", folder="team", requires_trigger=False)
    ipc = agent.ipc_root / "team"
    ipc.mkdir(parents=True, exist_ok=True)
    await in_box(platform.runtime, platform.box_home,
                 f"rm -rf /workspace/ipc/input; ln -s {host_files} /workspace/ipc/input", ipc=ipc)  # fmt: skip
    before = sorted(os.listdir(host_files))
    result = await agent._run_turn(agent.registered_groups()["t:team"], "hello", lambda _: None)
    assert result.status == "error" and "is a symlink" in (result.error or "")
    assert sorted(os.listdir(host_files)) == before
    assert [e.data["action"] for e in events] == ["run"] and events[0].data["folder"] == "team"
    await agent.stop()


# -- IPC requests -----------------------------------------------------------------------------------


async def test_symlinked_and_special_request_files_are_refused(
    platform: agentlite.AgentLite, host_files: Path
) -> None:
    agent = await started_agent(platform)
    events = recorder(agent)
    agent.register_group("t:main", name="main", folder="main", is_main=True)
    forged = {"type": "register_group", "jid": "t:evil", "name": "evil", "folder": "evil", "trigger": "@A"}
    (host_files / "forged.json").write_text(json.dumps(forged))
    outside = host_files / "messages"
    outside.mkdir()
    (outside / "1.json").write_text(json.dumps({"type": "message", "chat_id": "t:main", "text": "x"}))
    ipc = agent.ipc_root / "main"
    ipc.mkdir(parents=True, exist_ok=True)
    await in_box(platform.runtime, platform.box_home,
                 f"mkdir -p /workspace/ipc/tasks; ln -s {host_files}/forged.json /workspace/ipc/tasks/1-link.json;"
                 " mkfifo /workspace/ipc/tasks/2-fifo.json; rm -rf /workspace/ipc/messages;"
                 f" ln -s {outside} /workspace/ipc/messages", ipc=ipc)  # fmt: skip
    await until(lambda: len(events) >= 3, "three refusals", timeout=30)
    reasons = {Path(e.data["path"]).name: e.data["reason"] for e in events}
    assert reasons == {"1-link.json": "is a symlink", "2-fifo.json": "is a fifo, not a regular file",
                       "messages": "is a symlink"}  # fmt: skip
    assert {e.data["action"] for e in events} == {"ipc_request"}
    assert "t:evil" not in agent.registered_groups()
    assert (host_files / "forged.json").read_text() == json.dumps(forged)  # the target is untouched
    assert os.listdir(outside) == ["1.json"]  # nothing deleted through the symlinked folder
    errors = agent.ipc_root / "errors"
    assert sorted(os.listdir(errors)) == ["main-1-link.json", "main-2-fifo.json"]
    assert os.path.islink(errors / "main-1-link.json")  # the link itself moved, not its target
    await agent.stop()


# -- the module itself ------------------------------------------------------------------------------


def test_box_dir_refuses_each_kind_of_plant(tmp_path: Path) -> None:
    box = tmp_path / "box"
    box.mkdir()
    (box / "ok.txt").write_text("fine")
    os.symlink("/etc/passwd", box / "link")
    os.symlink("/etc", box / "dirlink")
    os.mkfifo(box / "fifo")
    (box / "big").write_bytes(b"x" * 2048)
    with BoxDir.open(tmp_path, "box") as folder:
        assert folder.read_text("ok.txt", limit=100) == "fine"
        for name, reason in (("link", "is a symlink"), ("fifo", "is a fifo"), ("big", "too large")):
            with pytest.raises(UnsafePath, match=reason) as info:
                folder.read_bytes(name, limit=1024)
            assert info.value.path == str(box / name)
        assert folder.read_bytes("big", limit=10, truncate=True) == b"x" * 10
        with pytest.raises(UnsafePath, match="is a symlink"):
            folder.subdir("dirlink")
        with pytest.raises(UnsafePath, match="is a regular file"):
            folder.subdir("ok.txt")
        folder.write_atomic("link", b"replaced")  # the link itself is replaced, /etc/passwd untouched
        assert not os.path.islink(box / "link") and (box / "link").read_text() == "replaced"
        assert folder.unlink("dirlink") and os.path.isdir("/etc")
        with pytest.raises(UnsafePath, match="single path component"):
            folder.read_bytes("../box/ok.txt", limit=10)
    assert not [n for n in os.listdir(box) if n.endswith(".tmp")]
