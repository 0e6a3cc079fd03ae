"""``agentlite acp`` driven by a real ACP client (the ``agent-client-protocol`` SDK) as an editor
would: the real adapters in real sandbox boxes, against the offline model server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import acp
import pytest
from acp import schema

from agentlite.box.ownership import RecordStore
from agentlite.box.sandbox import SandboxRuntime
from agentlite.run.acp_client import AcpClientBase
from agentlite.testing import ModelServer
from conftest import needs_agent_clis, until


class EditorClient(AcpClientBase):
    """What an editor does with an ACP agent: show updates, answer permission requests."""

    def __init__(self, permission: str = "deny") -> None:
        self.updates: list[tuple[str, Any]] = []
        self.permission_requests: list[Any] = []
        self.permission = permission

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        self.updates.append((session_id, update))

    async def request_permission(
        self, session_id: str, tool_call: Any, options: list[Any], **kwargs: Any
    ) -> acp.RequestPermissionResponse:
        self.permission_requests.append(tool_call)
        wanted = (
            ("reject_once", "reject_always") if self.permission == "deny" else ("allow_once", "allow_always")
        )
        option = next((o for o in options if o.kind in wanted), None)
        if option is None:
            return acp.RequestPermissionResponse(outcome=schema.DeniedOutcome(outcome="cancelled"))
        return acp.RequestPermissionResponse(
            outcome=schema.AllowedOutcome(outcome="selected", option_id=option.option_id)
        )

    async def write_text_file(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("agentlite acp must not use the client's fs")

    async def read_text_file(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("agentlite acp must not use the client's fs")

    def kinds(self) -> list[str]:
        return [type(u).__name__ for _, u in self.updates]

    def text(self) -> str:
        return "".join(
            u.content.text
            for _, u in self.updates
            if isinstance(u, schema.AgentMessageChunk) and isinstance(u.content, schema.TextContentBlock)
        )


def acp_argv(home: Path, backend: str, base_url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "agentlite", "acp", "--home", str(home), "--runtime", "sandbox",
            "--backend", backend, "--base-url", base_url, *extra]  # fmt: skip


@contextlib.asynccontextmanager
async def agentlite_acp(argv: list[str], client: EditorClient) -> AsyncIterator[tuple[Any, Any]]:
    env = {**os.environ, "AGENTLITE_LOG_LEVEL": "info"}
    async with acp.spawn_agent_process(client, argv[0], *argv[1:], env=env) as (conn, proc):
        yield conn, proc


async def boxes_of(home: Path) -> list[str]:
    return [b.name for b in await SandboxRuntime(home).list()]


async def no_boxes_left(home: Path) -> None:
    async def gone() -> bool:
        return await boxes_of(home) == [] and RecordStore(home).record_names() == []

    await until(gone, "no box or record left", 60)


@needs_agent_clis("codex-acp")
async def test_codex_session_streams_updates_then_one_response_resumes_and_cancels(
    sandbox: SandboxRuntime, home: Path, tmp_path: Path, model: ModelServer
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    client = EditorClient()
    async with agentlite_acp(acp_argv(home, "codex", model.openai_base_url), client) as (conn, _proc):
        init = await conn.initialize(protocol_version=acp.PROTOCOL_VERSION,
                                     client_capabilities=schema.ClientCapabilities())  # fmt: skip
        assert init.agent_info is not None and init.agent_info.name == "agentlite"
        assert init.agent_capabilities is not None and init.agent_capabilities.load_session
        session = await conn.new_session(cwd=str(project), mcp_servers=[])
        boxes = await boxes_of(home)
        assert len(boxes) == 1 and boxes[0].startswith("agentlite-acp-")

        response = await conn.prompt(session_id=session.session_id,
                                     prompt=[acp.text_block("go [scenario:tool]")])  # fmt: skip
        assert response.stop_reason == "end_turn"
        assert (project / "out.txt").read_text() == "probe\n"
        kinds = client.kinds()
        assert "ToolCallStart" in kinds and "AgentMessageChunk" in kinds
        # In order: the tool call started, then its progress, then the final text.
        assert kinds.index("ToolCallStart") < len(kinds) - 1 - kinds[::-1].index("AgentMessageChunk")
        assert "Wrote out.txt with the shell tool." in client.text()
        assert all(sid == session.session_id for sid, _ in client.updates)

        # The same session, the same box: the second prompt resumes it (the model's first tag
        # scripts the whole session, so the tool runs again).
        client.updates.clear()
        (project / "out.txt").unlink()
        again = await conn.prompt(session_id=session.session_id, prompt=[acp.text_block("and again")])
        assert again.stop_reason == "end_turn" and (project / "out.txt").exists()
        sent = str(model.requests[-1].body)
        assert "go [scenario:tool]" in sent and "and again" in sent, "the first turn is not in the session"
        assert await boxes_of(home) == boxes

        # A slow turn cancelled: `cancelled`, the box stays, and the next prompt works.
        hung = await slow_prompt(conn, session.session_id, model)
        await conn.cancel(session_id=session.session_id)
        cancelled = await asyncio.wait_for(hung, 60)
        assert cancelled.stop_reason == "cancelled"
        model.delay = 0
        assert await boxes_of(home) == boxes
        after = await conn.prompt(session_id=session.session_id, prompt=[acp.text_block("still there?")])
        assert after.stop_reason == "end_turn"
    # The client exited: the session's box and its record are gone.
    await no_boxes_left(home)


async def open_session(conn: Any, project: Path) -> Any:
    """Initialize the connection and open a session on ``project``, as an editor does first."""
    await conn.initialize(protocol_version=acp.PROTOCOL_VERSION)
    return await conn.new_session(cwd=str(project), mcp_servers=[])


async def slow_prompt(conn: Any, session_id: str, model: ModelServer) -> asyncio.Task[Any]:
    """A prompt whose model request is held for a minute; returns once the model has it."""
    asked = len(model.requests)
    model.delay = 60

    async def model_has_it() -> bool:
        return len(model.requests) > asked

    task = asyncio.create_task(conn.prompt(session_id=session_id, prompt=[acp.text_block("take your time")]))
    await until(model_has_it, "the prompt's model request", 60)
    return task


@needs_agent_clis("codex-acp")
async def test_session_load_resumes_a_stored_session_in_a_new_process(
    sandbox: SandboxRuntime, home: Path, tmp_path: Path, model: ModelServer
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    client = EditorClient()
    argv = acp_argv(home, "codex", model.openai_base_url)
    async with agentlite_acp(argv, client) as (conn, _proc):
        session = await open_session(conn, project)
        await conn.prompt(session_id=session.session_id, prompt=[acp.text_block("remember banana")])
    await no_boxes_left(home)
    client = EditorClient()
    async with agentlite_acp(argv, client) as (conn, _proc):
        await conn.initialize(protocol_version=acp.PROTOCOL_VERSION)
        await conn.load_session(cwd=str(project), session_id=session.session_id, mcp_servers=[])
        response = await conn.prompt(session_id=session.session_id, prompt=[acp.text_block("what fruit?")])
        assert response.stop_reason == "end_turn"
    # The model saw the first turn's prompt again: the session was resumed, not a fresh one.
    last = model.requests[-1]
    assert "remember banana" in str(last.body)
    await no_boxes_left(home)


async def test_a_cwd_the_allowlist_forbids_is_refused_and_makes_no_box(
    sandbox: SandboxRuntime, home: Path, tmp_path: Path, model: ModelServer
) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    allowlist = {"allowed_roots": [{"path": str(allowed), "allow_read_write": True}]}
    (tmp_path / "allowlist.json").write_text(json.dumps(allowlist))
    argv = acp_argv(
        home, "codex", model.openai_base_url, "--mount-allowlist", str(tmp_path / "allowlist.json")
    )
    async with agentlite_acp(argv, EditorClient()) as (conn, _proc):
        await conn.initialize(protocol_version=acp.PROTOCOL_VERSION)
        with pytest.raises(acp.RequestError) as refused:
            await conn.new_session(cwd=str(elsewhere), mcp_servers=[])
        assert "not under an allowed root" in str(refused.value.data)
        with pytest.raises(acp.RequestError):
            await conn.new_session(cwd="relative/path", mcp_servers=[])
        assert await boxes_of(home) == []


@needs_agent_clis("claude-agent-acp")
async def test_claude_session_forwards_a_permission_request_and_the_denial_holds(
    sandbox: SandboxRuntime, home: Path, tmp_path: Path, model: ModelServer
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    client = EditorClient(permission="deny")
    async with agentlite_acp(acp_argv(home, "claude_code", model.anthropic_base_url), client) as (
        conn,
        _proc,
    ):
        session = await open_session(conn, project)
        response = await conn.prompt(session_id=session.session_id,
                                     prompt=[acp.text_block("go [scenario:tool]")])  # fmt: skip
        assert response.stop_reason == "end_turn"
        assert client.permission_requests, "the boxed agent's permission request never reached the client"
        assert not (project / "out.txt").exists(), "the denied command ran"
        assert "ToolCallStart" in client.kinds()
        client.updates.clear()
        again = await conn.prompt(session_id=session.session_id, prompt=[acp.text_block("hello again")])
        assert again.stop_reason == "end_turn" and len(client.permission_requests) >= 2
        assert not (project / "out.txt").exists()
    await no_boxes_left(home)


@needs_agent_clis("claude-agent-acp")
async def test_claude_session_with_the_permission_allowed_writes_the_file_and_cancels(
    sandbox: SandboxRuntime, home: Path, tmp_path: Path, model: ModelServer
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    client = EditorClient(permission="allow")
    async with agentlite_acp(acp_argv(home, "claude_code", model.anthropic_base_url), client) as (
        conn,
        _proc,
    ):
        session = await open_session(conn, project)
        response = await conn.prompt(session_id=session.session_id,
                                     prompt=[acp.text_block("go [scenario:tool]")])  # fmt: skip
        assert response.stop_reason == "end_turn"
        assert (project / "out.txt").read_text() == "probe\n"
        hung = await slow_prompt(conn, session.session_id, model)
        await conn.cancel(session_id=session.session_id)
        assert (await asyncio.wait_for(hung, 60)).stop_reason == "cancelled"
        model.delay = 0
        after = await conn.prompt(session_id=session.session_id, prompt=[acp.text_block("still there?")])
        assert after.stop_reason == "end_turn"
    await no_boxes_left(home)


@needs_agent_clis("codex-acp")
async def test_kill_9_of_agentlite_acp_leaves_a_box_the_next_start_sweeps(
    sandbox: SandboxRuntime, home: Path, tmp_path: Path, model: ModelServer
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    argv = acp_argv(home, "codex", model.openai_base_url)
    async with agentlite_acp(argv, EditorClient()) as (conn, proc):
        await open_session(conn, project)
        assert len(await boxes_of(home)) == 1
        proc.kill()
        await proc.wait()
    (orphan,) = await boxes_of(home)
    async with agentlite_acp(argv, EditorClient()) as (conn, _proc):
        # The next start sweeps the orphan before it makes its first session.
        await open_session(conn, project)
        boxes = await boxes_of(home)
        assert len(boxes) == 1 and boxes != [orphan]
    await no_boxes_left(home)


@needs_agent_clis("codex-acp")
async def test_any_acp_command_runs_boxed_the_same_way(
    sandbox: SandboxRuntime, home: Path, tmp_path: Path, model: ModelServer
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    client = EditorClient()
    async with agentlite_acp(acp_argv(home, "acp:codex-acp", model.openai_base_url), client) as (conn, _proc):
        init = await conn.initialize(protocol_version=acp.PROTOCOL_VERSION)
        assert init.agent_info is not None and "acp:codex-acp" in (init.agent_info.title or "")
        session = await conn.new_session(cwd=str(project), mcp_servers=[])
        response = await conn.prompt(
            session_id=session.session_id, prompt=[acp.text_block("go [scenario:tool]")]
        )
        assert response.stop_reason == "end_turn" and (project / "out.txt").read_text() == "probe\n"
    await no_boxes_left(home)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "emacs"], "unknown backend `emacs`"),
        (["--permissions", "maybe"], "--permissions must be ask or allow"),
        (["--workspace", "/nonexistent-agentlite-dir"], "is not a folder"),
        (["--network", "nowhere"], "nowhere"),
    ],
)
def test_bad_options_exit_2_naming_what_was_wrong(home: Path, args: list[str], message: str) -> None:
    import subprocess

    done = subprocess.run([sys.executable, "-m", "agentlite", "acp", "--home", str(home), *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and done.stdout == ""
