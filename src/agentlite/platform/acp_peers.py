"""Outbound ACP delegation: a boxed agent hands work to peer ACP agents, each in a box of its own.

An agent with peers configured (:class:`AcpPeer`: a command, or the presets ``codex`` and
``claude-code`` that use the pinned adapters, or ``auto`` for the installed ones) gets six actions:
``acp_list_remote_agents``, ``acp_new_session``, ``acp_prompt`` (fire and forget; a completion notice
lands in the caller's chat and wakes it), ``agent_delegate`` (synchronous, with a timeout, in a fresh
session removed afterwards), ``acp_cancel`` and ``acp_close_session``.

Unlike the reference, a peer never runs on the host: each (peer, calling group) pair is one box,
spawned lazily on first use (single-flight), reused by that group's sessions, made under the same
lifecycle as every box (ownership record, bounded teardown, network mode, the orphan sweep), with the
caller's group folder mounted at ``/workspace/group``. The peer's ``fs/*`` requests are confined to
that folder (no-follow, :mod:`agentlite.core.safefs`), and its permission requests follow a policy:
``deny`` (the default, as the reference) or ``allow`` (within the box).

Run artifacts: ``<ipc>/<caller folder>/acp/runs/acp-run-<uuid>.json``, written ``running`` first and
rewritten at the end; at start every ``running`` one is marked ``failed`` (``abandoned``), and
artifacts older than 7 days are deleted at start and hourly. Non-main groups act only on sessions
they created.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import acp
from acp import schema

from agentlite.box.base import BoxRuntime, BoxSpec
from agentlite.core.agent_clis import agent_clis_bin
from agentlite.core.box_env import ANTHROPIC_KEY_ENV
from agentlite.core.clock import now_iso as iso_utc
from agentlite.core.errors import ConfigError
from agentlite.core.safefs import BoxDir, UnsafePath
from agentlite.platform.actions import ActionContext, ActionRefused, ActionRegistry
from agentlite.run.acp_box import AdapterBox
from agentlite.run.acp_client import AcpClientBase
from agentlite.run.box_run import GUEST_WORKSPACE
from agentlite.run.protocol import BackendConfig

log = logging.getLogger("agentlite.acp.peers")

PRESETS: dict[str, list[str]] = {"codex": ["codex-acp"], "claude-code": ["claude-agent-acp"]}
NOTICE_SENDER_NAME = "AgentLite ACP"
ARTIFACT_MAX_AGE = 7 * 24 * 3600.0
SWEEP_INTERVAL = 3600.0
DEFAULT_DELEGATE_TIMEOUT_MS = 300_000
#: A peer box without sessions this long is removed (the next use starts a new one).
DEFAULT_PEER_IDLE_TIMEOUT = 300.0
PermissionPolicy = Literal["deny", "allow"]
_READ_LIMIT = 10 * 1024 * 1024


@dataclass(frozen=True)
class AcpPeer:
    """A peer ACP agent: ``command`` (with ``args``) runs in the peer's box, ``env`` added."""

    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    description: str = ""
    #: The peer's model endpoint and model; default: the calling agent's.
    base_url: str | None = None
    model: str | None = None


def resolve_peers(config: list[dict[str, Any] | str | AcpPeer]) -> list[AcpPeer]:
    """Peers from config entries: a preset name (``codex``, ``claude-code``, ``auto``), or a dict
    ``{name, command | preset, args?, env?, description?, base_url?, model?}``."""
    peers: dict[str, AcpPeer] = {}
    for entry in config:
        if isinstance(entry, AcpPeer):
            peers[entry.name] = entry
            continue
        if isinstance(entry, str):
            entry = {"name": entry, "preset": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ConfigError(f"acp peer {entry!r}: needs a name")
        name, preset = entry["name"], entry.get("preset")
        if preset == "auto":
            installed = agent_clis_bin()
            for key, command in PRESETS.items():
                if installed is not None and (installed / command[0]).exists():
                    peers[key] = AcpPeer(key, command, description=f"{key} (pinned ACP adapter)")
            continue
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(
                    f"acp peer `{name}`: unknown preset `{preset}`; choose codex, claude-code or auto"
                )
            command = list(PRESETS[preset])
        else:
            command = entry.get("command")
            command = [command] if isinstance(command, str) else command
            if not command or not all(isinstance(c, str) and c for c in command):
                raise ConfigError(f"acp peer `{name}`: needs `command` or `preset`")
            command = list(command)
        args = entry.get("args") or []
        env = entry.get("env") or {}
        if not all(isinstance(a, str) for a in args) or not all(isinstance(v, str) for v in env.values()):
            raise ConfigError(f"acp peer `{name}`: args and env values must be strings")
        peers[name] = AcpPeer(name, [*command, *args], dict(env), str(entry.get("description") or ""),
                              entry.get("base_url"), entry.get("model"))  # fmt: skip
    return list(peers.values())


@dataclass
class _Session:
    id: str
    peer: str
    owner: str  # the caller's group folder
    owner_jid: str | None
    runner: _PeerBox
    ephemeral: bool = False
    in_flight: asyncio.Task[Any] | None = None
    text: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


class _PeerClient(AcpClientBase):
    """Our side towards one peer box: text and tool calls to their session, fs confined, policy."""

    def __init__(self, box: _PeerBox) -> None:
        self.box = box

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        session = self.box.owner.sessions.get(session_id)
        if session is None:
            return
        if isinstance(update, schema.AgentMessageChunk) and isinstance(
            update.content, schema.TextContentBlock
        ):
            session.text.append(update.content.text)
        elif isinstance(update, schema.ToolCallStart | schema.ToolCallProgress):
            session.tool_calls.append(update.model_dump(by_alias=True, mode="json", exclude_none=True))

    async def request_permission(self, session_id: str, tool_call: Any, options: list[Any],
                                 **kwargs: Any) -> acp.RequestPermissionResponse:  # fmt: skip
        if self.box.owner.permissions == "allow":
            allow = next((o for o in options if o.kind in ("allow_once", "allow_always")), None)
            if allow is not None:
                return acp.RequestPermissionResponse(
                    outcome=schema.AllowedOutcome(outcome="selected", option_id=allow.option_id)
                )
        return acp.RequestPermissionResponse(outcome=schema.DeniedOutcome(outcome="cancelled"))

    def _place(self, path: str) -> tuple[list[str], str]:
        # Paths are the peer's: inside its box the group folder is /workspace/group.
        normalized = os.path.normpath(path)
        if not os.path.isabs(normalized):
            raise acp.RequestError.invalid_params({"path": path, "details": "path outside sandbox"})
        rel = os.path.relpath(normalized, GUEST_WORKSPACE)
        if rel == "." or rel.startswith(".."):
            raise acp.RequestError.invalid_params({"path": path, "details": "path outside sandbox"})
        parts = rel.split(os.sep)
        return parts[:-1], parts[-1]

    async def read_text_file(self, path: str, session_id: str, limit: int | None = None,
                             line: int | None = None, **kwargs: Any) -> schema.ReadTextFileResponse:  # fmt: skip
        parents, name = self._place(path)
        try:
            with BoxDir.open(self.box.folder, *parents) as folder:
                text = folder.read_text(name, limit=_READ_LIMIT)
        except (UnsafePath, OSError) as exc:
            raise acp.RequestError.invalid_params({"path": path, "details": str(exc)}) from None
        if line is not None or limit is not None:
            lines = text.splitlines(keepends=True)
            start = max((line or 1) - 1, 0)
            text = "".join(lines[start : start + limit if limit is not None else None])
        return schema.ReadTextFileResponse(content=text)

    async def write_text_file(self, content: str, path: str, session_id: str,
                              **kwargs: Any) -> schema.WriteTextFileResponse:  # fmt: skip
        parents, name = self._place(path)
        try:
            with BoxDir.open(self.box.folder, *parents, create=True) as folder:
                folder.write_text(name, content)
        except (UnsafePath, OSError) as exc:
            raise acp.RequestError.invalid_params({"path": path, "details": str(exc)}) from None
        return schema.WriteTextFileResponse()


class _PeerBox:
    """One peer's box for one calling group: started once (single-flight), shared by sessions."""

    def __init__(self, owner: AcpDelegation, peer: AcpPeer, folder_name: str) -> None:
        self.owner = owner
        self.peer = peer
        self.folder_name = folder_name
        self.folder = owner.groups_dir / folder_name
        self.adapter: AdapterBox | None = None
        self.agent_info: dict[str, Any] | None = None
        #: When its last session went (monotonic); None while it has sessions.
        self.idle_since: float | None = None
        self._lock = asyncio.Lock()

    async def connection(self) -> Any:
        async with self._lock:
            if self.adapter is not None and not self.adapter.ended.is_set():
                return self.adapter.conn
            if self.adapter is not None:  # it died: its sessions go with it
                await self.drop()
            backend = self.owner.backend_for(self.peer)
            self.folder.mkdir(parents=True, exist_ok=True)
            adapter = AdapterBox(self.owner.runtime, self.owner.box_home, agent_id=self.owner.agent_id,
                                 group=f"acp-{self.peer.name}-{self.folder_name}", folder=self.folder,
                                 agent_home=self.owner.peer_home(self.peer.name, self.folder_name),
                                 backend=backend, spec=self.owner.spec(self.peer), client=_PeerClient(self))  # fmt: skip
            caps = schema.ClientCapabilities(fs=schema.FileSystemCapabilities(read_text_file=True, write_text_file=True),
                                             terminal=False)  # fmt: skip
            try:
                init = await adapter.start(caps)
            except BaseException:
                await adapter.close()
                raise
            self.adapter = adapter
            info = getattr(init, "agent_info", None)
            self.agent_info = info.model_dump(mode="json", exclude_none=True) if info is not None else None
            log.info("peer %s started for group %s in box %s", self.peer.name, self.folder_name, adapter.box)
            return adapter.conn

    async def drop(self) -> None:
        adapter, self.adapter = self.adapter, None
        for sid in [s.id for s in self.owner.sessions.values() if s.runner is self]:
            self.owner.sessions.pop(sid, None)
        if adapter is not None:
            await adapter.close()


class AcpDelegation:
    """The peers of one agent and their sessions; registers the six actions."""

    def __init__(self, *, peers: list[AcpPeer], runtime: Callable[[], BoxRuntime], box_home: Callable[[], Path],
                 agent_id: str, groups_dir: Path, ipc_root: Path, data_dir: Path,
                 backend: Callable[[], BackendConfig], box_spec: Callable[[], BoxSpec],
                 resolve_jid: Callable[[str, str | None], str | None],
                 notify: Callable[[str, str], Awaitable[None]],
                 permissions: PermissionPolicy = "deny",
                 idle_timeout: float = DEFAULT_PEER_IDLE_TIMEOUT) -> None:  # fmt: skip
        if permissions not in ("deny", "allow"):
            raise ConfigError(f"acp permission policy must be deny or allow, not `{permissions}`")
        self.peers = {p.name: p for p in peers}
        self._runtime, self._box_home = runtime, box_home
        self.agent_id = agent_id
        self.groups_dir = groups_dir
        self.ipc_root = ipc_root
        self.data_dir = data_dir
        self._backend = backend
        self._box_spec = box_spec
        self._resolve_jid = resolve_jid
        self._notify = notify
        self.permissions: PermissionPolicy = permissions
        if idle_timeout <= 0:
            raise ConfigError(f"acp peer idle timeout must be > 0 seconds, got {idle_timeout:g}")
        self.idle_timeout = idle_timeout
        self.sessions: dict[str, _Session] = {}
        self._boxes: dict[tuple[str, str], _PeerBox] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def runtime(self) -> BoxRuntime:
        return self._runtime()

    @property
    def box_home(self) -> Path:
        return self._box_home()

    def backend_for(self, peer: AcpPeer) -> BackendConfig:
        own = self._backend()
        return BackendConfig(type="acp", command=peer.command, base_url=peer.base_url or own.base_url,
                             model=peer.model or own.model, max_retries=own.max_retries,
                             api_key_env=ANTHROPIC_KEY_ENV if peer.command[:1] == ["claude-agent-acp"] else None)  # fmt: skip

    def spec(self, peer: AcpPeer) -> BoxSpec:
        base = self._box_spec()
        return BoxSpec(env={**base.env, **peer.env}, network_mode=base.network_mode, allow_net=base.allow_net,
                       memory_mib=base.memory_mib, cpus=base.cpus, pids=base.pids)  # fmt: skip

    def peer_home(self, peer: str, folder: str) -> Path:
        return self.data_dir / "acp-peers" / peer / folder

    # -- start and stop ---------------------------------------------------------------------------

    def register(self, actions: ActionRegistry) -> None:
        for name, handler, description in (
            (
                "acp_list_remote_agents",
                self.list_remote_agents,
                "List the peer ACP agents you can delegate to.",
            ),
            ("acp_new_session", self.new_session, "Open a session with a peer ACP agent: {peer, cwd?}."),
            (
                "acp_prompt",
                self.prompt,
                "Send a prompt to an ACP session; returns at once, a notice follows.",
            ),
            ("agent_delegate", self.delegate, "Delegate a prompt to a peer and wait for its answer."),
            ("acp_cancel", self.cancel, "Cancel the running prompt of an ACP session."),
            ("acp_close_session", self.close_session, "Close an ACP session."),
        ):
            actions.register(name, handler, description=description, schema=_SCHEMAS[name])

    def start(self, spawn: Callable[..., asyncio.Task[Any]] | None = None) -> None:
        """The restart rule and the first sweep now, then the hourly sweep."""
        self.recover_artifacts()
        self.sweep_artifacts()
        runner = spawn or asyncio.create_task
        self._sweeper = runner(self._sweep_loop(), name=f"agentlite-acp-sweep-{self.agent_id}")

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.sweep_artifacts()

    async def shutdown(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        boxes, self._boxes = list(self._boxes.values()), {}
        await asyncio.gather(*(b.drop() for b in boxes), return_exceptions=True)
        self.sessions.clear()

    # -- artifacts ---------------------------------------------------------------------------------

    def _runs_dir(self, folder: str, create: bool = False) -> BoxDir:
        return BoxDir.open(self.ipc_root, folder, "acp", "runs", create=create)

    def _write_artifact(self, folder: str, name: str, data: dict[str, Any]) -> None:
        try:
            with self._runs_dir(folder, create=True) as runs:
                runs.write_atomic(name, (json.dumps(data, indent=2) + "\n").encode())
        except (UnsafePath, OSError) as exc:
            log.warning("could not write ACP artifact %s/%s: %s", folder, name, exc)

    def _artifact_files(self) -> list[tuple[str, str, BoxDir]]:
        found = []
        try:
            folders = [p.name for p in os.scandir(self.ipc_root) if p.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return []
        for folder in folders:
            try:
                runs = self._runs_dir(folder)
            except (UnsafePath, OSError):
                continue
            found.extend(
                (folder, n, runs) for n in runs.names() if n.startswith("acp-run-") and n.endswith(".json")
            )
        return found

    def recover_artifacts(self) -> None:
        """Artifacts still ``running`` belong to a host that stopped: mark them failed."""
        for folder, name, runs in self._artifact_files():
            try:
                data = json.loads(runs.read_text(name, limit=_READ_LIMIT))
            except (UnsafePath, OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("status") == "running":
                data.update(status="failed", stop_reason="abandoned", completed_at=iso_utc(),
                            error="Host restarted before ACP prompt completed")  # fmt: skip
                runs.write_atomic(name, (json.dumps(data, indent=2) + "\n").encode())
                log.info("ACP run %s/%s marked abandoned", folder, name)

    def sweep_artifacts(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        removed = 0
        for _folder, name, runs in self._artifact_files():
            stat = runs.lstat(name)
            if stat is not None and now - stat.st_mtime > ARTIFACT_MAX_AGE and runs.unlink(name):
                removed += 1
        return removed

    # -- the actions -------------------------------------------------------------------------------

    def _peer(self, name: str) -> AcpPeer:
        peer = self.peers.get(name)
        if peer is None:
            raise ActionRefused(
                f"unknown acp peer: {name}. Call acp_list_remote_agents to see the configured peers"
            )
        return peer

    def _owned(self, session_id: str, ctx: ActionContext) -> _Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise ActionRefused(f"unknown acp session: {session_id}")
        if not ctx.is_main and session.owner != ctx.source_group:
            raise ActionRefused(f"acp session {session_id} is owned by a different group")
        return session

    async def list_remote_agents(self, payload: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        agents = []
        for peer in self.peers.values():
            box = self._boxes.get((peer.name, ctx.source_group))
            agents.append({"name": peer.name, "description": peer.description,
                           "agent_info": box.agent_info if box is not None else None})  # fmt: skip
        return {"agents": agents}

    async def _open(self, peer_name: str, ctx: ActionContext, *, ephemeral: bool = False,
                    cwd: str | None = None) -> _Session:  # fmt: skip
        peer = self._peer(peer_name)
        # The peer's box has only the caller's group folder: a cwd is a folder inside it.
        cwd = os.path.normpath(cwd or GUEST_WORKSPACE)
        if cwd != GUEST_WORKSPACE and not cwd.startswith(GUEST_WORKSPACE + "/"):
            raise ActionRefused(
                f"acp session cwd `{cwd}` must be inside {GUEST_WORKSPACE} (the group folder)"
            )
        key = (peer.name, ctx.source_group)
        box = self._boxes.get(key)
        if box is None:
            box = self._boxes[key] = _PeerBox(self, peer, ctx.source_group)
        box.idle_since = None
        try:
            conn = await box.connection()
        except BaseException:
            self._release(box)
            raise
        response = await conn.new_session(cwd=cwd, mcp_servers=[])
        modes = getattr(response, "modes", None)
        available = [m.id for m in modes.available_modes] if modes else []
        if "full-access" in available:  # codex's own sandbox cannot start in a box
            await conn.set_session_mode(session_id=response.session_id, mode_id="full-access")
        elif self.permissions == "allow" and "bypassPermissions" in available:
            await conn.set_session_mode(session_id=response.session_id, mode_id="bypassPermissions")
        session = _Session(response.session_id, peer.name, ctx.source_group, None, box, ephemeral)
        self.sessions[session.id] = session
        return session

    async def new_session(self, payload: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        jid = self._resolve_jid(ctx.source_group, ctx.chat_id)
        if jid is None:
            raise ActionRefused(
                f'cannot resolve ACP completion notice target for group folder "{ctx.source_group}"'
            )
        session = await self._open(payload["peer"], ctx, cwd=payload.get("cwd"))
        session.owner_jid = jid
        return {"session_id": session.id}

    async def _run(self, session: _Session, blocks: list[Any]) -> tuple[str, str | None]:
        session.text, session.tool_calls = [], []
        conn = await session.runner.connection()
        response = await conn.prompt(session_id=session.id, prompt=blocks)
        return "".join(session.text), response.stop_reason

    async def prompt(self, payload: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        session = self._owned(payload["session_id"], ctx)
        if session.in_flight is not None and not session.in_flight.done():
            raise ActionRefused(f"acp session {session.id} already has an in-flight prompt")
        blocks = [_block(b) for b in payload["prompt"]]
        name = f"acp-run-{uuid.uuid4()}.json"
        started = iso_utc()
        base = {"session_id": session.id, "peer": session.peer, "started_at": started}
        self._write_artifact(session.owner, name, {**base, "status": "running"})
        session.in_flight = asyncio.create_task(self._background_prompt(session, blocks, name, base))
        self._background.add(session.in_flight)
        session.in_flight.add_done_callback(self._background.discard)
        return {"ok": True}

    async def _background_prompt(self, session: _Session, blocks: list[Any], name: str,
                                 base: dict[str, Any]) -> None:  # fmt: skip
        error: str | None = None
        stop_reason: str | None = None
        try:
            text, stop_reason = await self._run(session, blocks)
            status = "cancelled" if stop_reason == "cancelled" else "completed"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            text, status, error = "".join(session.text), "failed", _describe(exc)
        record = {**base, "status": status, "stop_reason": stop_reason, "completed_at": iso_utc(), "text": text,
                  "tool_calls": session.tool_calls, "text_bytes": len(text.encode()),
                  "tool_call_count": len(session.tool_calls)}  # fmt: skip
        if error is not None:
            record["error"] = error
        self._write_artifact(session.owner, name, record)
        where = f"/workspace/ipc/acp/runs/{name}"
        if status == "failed":
            notice = f"ACP prompt finished for session {session.id}: failed. Result file: {where}"
        else:
            notice = f"ACP prompt finished for session {session.id}: {status} ({stop_reason}). Result file: {where}"
        if session.owner_jid is not None:
            await self._notify(session.owner_jid, notice)

    async def delegate(self, payload: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        timeout_ms = int(payload.get("timeout_ms") or DEFAULT_DELEGATE_TIMEOUT_MS)
        session: _Session | None = None
        try:
            session = await self._open(payload["target_group_jid"], ctx, ephemeral=True)
            text, stop_reason = await asyncio.wait_for(
                self._run(session, [acp.text_block(payload["prompt"])]), timeout_ms / 1000
            )
            status = "cancelled" if stop_reason == "cancelled" else "completed"
            return {"text": text, "status": status, "stop_reason": stop_reason}
        except TimeoutError:
            if session is not None and session.runner.adapter is not None:
                try:
                    await session.runner.adapter.conn.cancel(session_id=session.id)
                except Exception as exc:
                    log.debug("cancel after the delegate timeout failed: %s", exc)
            text = "".join(session.text) if session is not None else ""
            return {
                "text": text,
                "status": "failed",
                "error": f"agent_delegate timed out after {timeout_ms}ms",
            }
        except ValueError:
            raise
        except Exception as exc:
            text = "".join(session.text) if session is not None else ""
            return {"text": text, "status": "failed", "error": _describe(exc)}
        finally:
            if session is not None:
                self.sessions.pop(session.id, None)
                self._release(session.runner)

    async def cancel(self, payload: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        session = self._owned(payload["session_id"], ctx)
        if (
            session.in_flight is not None
            and not session.in_flight.done()
            and session.runner.adapter is not None
        ):
            await session.runner.adapter.conn.cancel(session_id=session.id)
        return {"ok": True}

    async def close_session(self, payload: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        session = self._owned(payload["session_id"], ctx)
        if session.in_flight is not None and not session.in_flight.done():
            raise ActionRefused(f"acp session {session.id} has an in-flight prompt; cancel it first")
        self.sessions.pop(session.id, None)
        self._release(session.runner)
        return {"ok": True}

    def _release(self, box: _PeerBox) -> None:
        """A session of ``box`` went: with none left, the box goes after the idle timeout."""
        if any(s.runner is box for s in self.sessions.values()):
            return
        since = box.idle_since = time.monotonic()
        task = asyncio.create_task(self._drop_when_idle(box, since))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _drop_when_idle(self, box: _PeerBox, since: float) -> None:
        await asyncio.sleep(self.idle_timeout)
        if box.idle_since != since or any(s.runner is box for s in self.sessions.values()):
            return  # used again meanwhile
        key = (box.peer.name, box.folder_name)
        if self._boxes.get(key) is box:
            del self._boxes[key]
        log.info("peer %s for group %s idle for %.0f s: removing its box", box.peer.name, box.folder_name,
                 self.idle_timeout)  # fmt: skip
        await box.drop()


def _describe(exc: BaseException) -> str:
    data = getattr(exc, "data", None)
    return f"{exc} {data}".strip() if data else str(exc) or type(exc).__name__


def _block(data: Any) -> Any:
    if isinstance(data, str):
        return acp.text_block(data)
    kind = data.get("type")
    models = {"text": schema.TextContentBlock, "image": schema.ImageContentBlock,
              "audio": schema.AudioContentBlock, "resource_link": schema.ResourceContentBlock}  # fmt: skip
    if kind not in models:
        raise ActionRefused(f"prompt block type must be text, image, audio or resource_link, not {kind!r}")
    return models[kind].model_validate(data)


_SESSION = {"type": "object", "properties": {"session_id": {"type": "string", "minLength": 1}},
            "required": ["session_id"]}  # fmt: skip
_SCHEMAS: dict[str, dict[str, Any]] = {
    "acp_list_remote_agents": {"type": "object", "properties": {}},
    "acp_new_session": {"type": "object", "properties": {"peer": {"type": "string", "minLength": 1},
                                                          "cwd": {"type": "string"}}, "required": ["peer"]},
    "acp_prompt": {"type": "object", "properties": {
        "session_id": {"type": "string", "minLength": 1},
        "prompt": {"type": "array", "minItems": 1, "items": {"type": ["object", "string"]}}},
        "required": ["session_id", "prompt"]},
    "agent_delegate": {"type": "object", "properties": {
        "target_group_jid": {"type": "string", "minLength": 1}, "prompt": {"type": "string", "minLength": 1},
        "timeout_ms": {"type": "integer", "minimum": 1}}, "required": ["target_group_jid", "prompt"]},
    "acp_cancel": _SESSION,
    "acp_close_session": _SESSION,
}  # fmt: skip
