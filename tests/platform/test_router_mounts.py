"""Prompt format, triggers, sender allowlist, internal tags, mount allowlist, memory files, handoff, events."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from agentlite.channels.message import strip_internal
from agentlite.core.errors import ConfigError
from agentlite.platform.events import EventHub
from agentlite.platform.handoff import MESSAGE_SEPARATOR, handoff_block, with_handoff
from agentlite.platform.mounts import (
    AllowedRoot,
    ExtraMount,
    MountAllowlist,
    check_extra_mount,
    ensure_memory_alias,
    seed_memory,
)
from agentlite.platform.router import (
    SenderAllowlist,
    format_messages,
    format_time,
    is_trigger,
)
from agentlite.platform.store import AgentStore, Message


def message(
    content: str, sender: str = "u1", is_from_me: bool = False, ts: str = "2026-01-05T15:04:00.000Z"
) -> Message:
    return Message(id="1", chat_id="c1", sender=sender, sender_name="Ann & <Bo>", content=content, timestamp=ts,
                   is_from_me=is_from_me)  # fmt: skip


def test_prompt_format_escapes_and_uses_local_time() -> None:
    text = format_messages([message('say "hi" & <wave>')], "Europe/Berlin")
    assert text == (
        '<context timezone="Europe/Berlin" />\n<messages>\n'
        '<message sender="Ann &amp; &lt;Bo&gt;" time="Jan 5, 2026, 4:04 PM">say &quot;hi&quot; &amp; &lt;wave&gt;</message>\n'
        "</messages>"
    )
    assert format_time("2026-07-01T00:30:00.000Z", "UTC") == "Jul 1, 2026, 12:30 AM"


def test_trigger_needs_the_name_as_a_word_at_the_start() -> None:
    allow_all = SenderAllowlist()
    assert is_trigger(message("  @andy please"), "Andy", allow_all)
    assert not is_trigger(message("@Andyx please"), "Andy", allow_all)
    assert not is_trigger(message("hey @Andy"), "Andy", allow_all)


def test_sender_allowlist_modes_and_invalid_file(tmp_path: Path) -> None:
    path = tmp_path / "allow.json"
    path.write_text(
        json.dumps(
            {"default": {"allow": ["u1"], "mode": "trigger"}, "chats": {"c2": {"allow": "*", "mode": "drop"}}}
        )
    )
    allowlist = SenderAllowlist.load(path)
    assert is_trigger(message("@Andy go", sender="u1"), "Andy", allowlist)
    assert not is_trigger(message("@Andy go", sender="u2"), "Andy", allowlist)
    assert is_trigger(message("@Andy go", sender="u2", is_from_me=True), "Andy", allowlist)
    assert allowlist.rule("c2").mode == "drop"
    path.write_text("{broken")
    assert SenderAllowlist.load(path) == SenderAllowlist()  # invalid: allow everyone, trigger mode


def test_internal_blocks_are_stripped() -> None:
    assert strip_internal("<internal>notes\nmore</internal>Answer <internal>x</internal>") == "Answer"
    assert strip_internal("<internal>only notes</internal>") == ""


def test_mount_allowlist_rules(tmp_path: Path) -> None:
    root = tmp_path / "projects"
    (root / "app").mkdir(parents=True)
    (root / ".ssh").mkdir()
    allowlist = MountAllowlist(allowed_roots=[AllowedRoot(path=str(root), allow_read_write=True)])
    volume = check_extra_mount(
        ExtraMount(host_path=str(root / "app"), readonly=False), allowlist, is_main=True
    )
    assert (volume.guest, volume.read_only) == ("/workspace/extra/app", False)
    non_main = check_extra_mount(
        ExtraMount(host_path=str(root / "app"), readonly=False), allowlist, is_main=False
    )
    assert non_main.read_only  # non-main groups are read-only by default
    with pytest.raises(ConfigError, match="no mount allowlist"):
        check_extra_mount(ExtraMount(host_path=str(root / "app")), None, is_main=True)
    with pytest.raises(ConfigError, match=r"`\.ssh` is a blocked pattern"):
        check_extra_mount(ExtraMount(host_path=str(root / ".ssh")), allowlist, is_main=True)
    with pytest.raises(ConfigError, match="not under an allowed root"):
        check_extra_mount(ExtraMount(host_path=str(tmp_path)), allowlist, is_main=True)
    with pytest.raises(ConfigError, match="must be relative"):
        check_extra_mount(
            ExtraMount(host_path=str(root / "app"), container_path="../up"), allowlist, is_main=True
        )
    with pytest.raises(ConfigError, match="does not exist"):
        check_extra_mount(ExtraMount(host_path=str(root / "none")), allowlist, is_main=True)
    link = root / "sneaky"
    link.symlink_to(root / ".ssh")  # a symlink is resolved before the checks
    with pytest.raises(ConfigError, match="blocked"):
        check_extra_mount(ExtraMount(host_path=str(link)), allowlist, is_main=True)


def test_memory_templates_and_alias(tmp_path: Path) -> None:
    seed_memory(tmp_path, "Zed")
    assert "You are Zed" in (tmp_path / "main" / "CLAUDE.md").read_text()
    assert os.readlink(tmp_path / "global" / "AGENTS.md") == "CLAUDE.md"
    (tmp_path / "main" / "CLAUDE.md").write_text("mine")
    seed_memory(tmp_path, "Other")
    assert (tmp_path / "main" / "CLAUDE.md").read_text() == "mine"  # never overwritten
    only_alias = tmp_path / "g"
    only_alias.mkdir()
    (only_alias / "AGENTS.md").write_text("from agents")
    ensure_memory_alias(only_alias)
    assert (only_alias / "CLAUDE.md").read_text() == "from agents" and (only_alias / "AGENTS.md").is_symlink()


def test_handoff_block_available_and_partial(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "db.sqlite")
    store.store_message(message("remember the milk"))
    group = tmp_path / "main"
    group.mkdir()
    (group / "CLAUDE.md").write_text("group memory")
    block = handoff_block(store, group, "c1", "codex", "claude_code", "Andy")
    assert block.startswith('<backend_handoff from="codex" to="claude_code" status="available">')
    assert "remember the milk" in block and "### CLAUDE.md\ngroup memory" in block
    assert with_handoff(block, "now").endswith(f"{MESSAGE_SEPARATOR}\n\nnow")
    store.close()
    broken = handoff_block(store, group, "c1", "codex", "claude_code", "Andy")  # the store is closed
    assert 'status="partial"' in broken and "Summary error:" in broken


async def test_events_reach_callbacks_and_iterators() -> None:
    hub = EventHub("agent1")
    got: list[str] = []
    hub.on("message.in", lambda e: got.append(e.data["text"]))
    unsubscribe = hub.on("*", lambda e: got.append(e.name))

    async def collect() -> list[str]:
        return [event.name async for event in hub.events()]

    collector = asyncio.create_task(collect())
    await asyncio.sleep(0)
    event = hub.emit("message.in", jid="c", text="hi", name="not the event name")
    unsubscribe()
    hub.emit("started")
    hub.close()
    assert await collector == ["message.in", "started"]
    assert got == ["hi", "message.in"]
    assert event.agent_id == "agent1" and event.timestamp.endswith("Z")
    with pytest.raises(ConfigError, match="unknown event"):
        hub.on("no.such.event", print)


async def test_instructions_skills_and_mcp_servers_persist(tmp_path: Path) -> None:
    import agentlite

    skill = tmp_path / "skills" / "review"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text("# Review")
    async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox") as platform:
        agent = await platform.create_agent("a", backend={"type": "codex"})
        agent.set_instructions("Be brief.")
        agent.add_skill(skill)
        agent.add_skill(skill)  # deduplicated
        agent.set_mcp_servers({"notes": {"command": "notes-mcp", "args": ["--stdio"]}})
        with pytest.raises(ConfigError, match=r"missing SKILL\.md"):
            agent.add_skill(tmp_path)
        with pytest.raises(ConfigError, match="not a directory"):
            agent.add_skill(tmp_path / "nope")
        with pytest.raises(ConfigError, match="reserved"):
            agent.set_mcp_servers({"agentlite": {"command": "x"}})
        assert (agent.workdir / "agent" / "CLAUDE.md").read_text() == "Be brief."
        assert (agent.workdir / "agent" / "skills" / "review" / "SKILL.md").exists()
    async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox") as platform:
        agent = platform.get_agent("a")
        assert agent is not None
        assert agent.get_instructions() == "Be brief." and agent.get_skills() == [str(skill.resolve())]
        assert agent.get_mcp_servers() == {"notes": {"command": "notes-mcp", "args": ["--stdio"]}}
        agent.remove_skill("review")
        assert agent.get_skills() == [] and not (agent.workdir / "agent" / "skills" / "review").exists()


async def test_messages_sharing_a_millisecond_are_all_answered(tmp_path: Path) -> None:
    """Regression: timestamps have millisecond resolution; a message stored after a poll in the same
    millisecond as the cursor used to be skipped for good."""
    import agentlite
    from agentlite.channels.base import ChannelConfig

    answered: list[str] = []

    class Quiet:
        name, is_connected = "q", True

        def __init__(self, config: ChannelConfig) -> None:
            self.config = config

        async def connect(self) -> None: ...
        async def disconnect(self) -> None: ...
        async def set_typing(self, chat_id: str, on: bool) -> None: ...
        async def send_message(self, chat_id: str, text: str) -> None: ...

        def owns_chat(self, chat_id: str) -> bool:
            return True

    holder: dict[str, Quiet] = {}
    async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox") as platform:
        agent = await platform.create_agent("a", backend={"type": "codex"},
                                            channels={"q": lambda c: holder.setdefault("q", Quiet(c))})  # fmt: skip

        async def trivial_turn(group, prompt, deliver, **_):  # type: ignore[no-untyped-def]
            import re

            from agentlite.run.turn import TurnResult

            answered.extend(re.findall(r">(text\d+)</message>", prompt))
            return TurnResult(status="success")

        agent._run_turn = trivial_turn  # type: ignore[method-assign]
        await agent.start()
        for n in range(4):
            agent.register_group(f"c{n}", name=f"g{n}", folder=f"g{n}", is_main=True)
        same = "2026-11-25T10:00:00.000Z"
        for n in range(20):
            message = Message(id=f"m{n}", chat_id=f"c{n % 4}", sender="u", sender_name="U", content=f"text{n}",
                              timestamp=same)  # fmt: skip
            await holder["q"].config.deliver(message.chat_id, message)
            await asyncio.sleep(0.05)  # let the loop poll between messages of the same millisecond
        deadline = asyncio.get_running_loop().time() + 20
        while len(set(answered)) < 20 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        await agent.stop()
    assert sorted(set(answered)) == sorted(f"text{n}" for n in range(20))
