"""``agentlite acp``: the host as an Agent Client Protocol agent whose sessions run in boxes.

An ACP client (an editor) starts ``agentlite acp`` and speaks ACP on its stdio. Each session is a
box of its own, made under the usual lifecycle (ownership record before the box, teardown on every
path), with the client's ``cwd`` mounted read-write at ``/workspace/group`` and a persistent agent
home per project folder (so ``session/load`` resumes). Inside the box the pinned ACP adapter runs
(``codex-acp`` for ``codex``, ``claude-agent-acp`` for ``claude_code``, or any ACP command), and
this module is a client to it: both sides use the ``agent-client-protocol`` package.

What passes through, and what does not:

* ``session/update`` notifications go to the client in the order the adapter sent them, all of
  them before the one ``session/prompt`` response (with the adapter's ``stopReason``);
* ``session/cancel`` is passed on; the adapter ends the turn with ``cancelled`` and the box stays;
* the adapter's permission requests go to the client (policy ``ask``, the default) or are allowed
  here (policy ``allow``: the box is the boundary);
* the client's ``fs`` and ``terminal`` capabilities are never used (the box has the files), and
  the client's MCP servers are not started (they name commands of the client's machine).

The boxes go when their session is closed, when the client closes the connection, or (for a
``kill -9``) at the next start's orphan sweep, which removes boxes whose owner is gone.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Literal

import acp
from acp import schema

from agentlite.box.base import BoxRuntime, BoxSpec
from agentlite.box.lifecycle import cleanup_orphans
from agentlite.core.errors import ConfigError
from agentlite.platform.adoption import adoptable_run
from agentlite.platform.mounts import ExtraMount, MountAllowlist, check_extra_mount
from agentlite.run.acp_box import AdapterBox
from agentlite.run.acp_client import NoHostFsClient
from agentlite.run.box_run import GUEST_WORKSPACE
from agentlite.run.protocol import BackendConfig

log = logging.getLogger("agentlite.acp")

#: The box owner's agent id: ``agentlite boxes`` lists these boxes as ``agentlite-acp-...``.
ACP_AGENT_ID = "acp"
PermissionPolicy = Literal["ask", "allow"]
#: Session modes that run tools without asking, most permissive first (policy ``allow``).
_PERMISSIVE_MODES = ("full-access", "bypassPermissions")
#: Modes set under policy ``ask``: codex-acp's own modes below ``full-access`` run commands in
#: codex's sandbox, which cannot start in a box (no nested user namespaces), so its commands would
#: all fail; the box is its boundary. Claude's default mode asks, and its requests go to the client.
_ASK_MODES = ("full-access",)


@dataclass
class AcpServerSettings:
    """How ``agentlite acp`` makes its sessions' boxes."""

    home: Path
    backend: BackendConfig
    backend_label: str = "codex"
    spec: BoxSpec = field(default_factory=BoxSpec)
    permissions: PermissionPolicy = "ask"
    #: Folders a session's cwd may be; ``None``: any folder but the always-blocked ones.
    mount_allowlist: MountAllowlist | None = None
    #: The folder every session mounts, whatever cwd the client sends (``--workspace``).
    workspace: Path | None = None


def check_session_folder(cwd: str, allowlist: MountAllowlist | None) -> Path:
    """The folder a client's ``cwd`` names, or :class:`ConfigError` saying why it is refused."""
    if not cwd or not os.path.isabs(cwd):
        raise ConfigError(f"session cwd `{cwd}` must be an absolute path")
    folder = Path(cwd)
    if not folder.is_dir():
        raise ConfigError(f"session cwd `{cwd}` is not a folder")
    folder = folder.resolve()
    if folder == Path(folder.anchor) or folder == Path.home().resolve():
        raise ConfigError(f"session cwd `{cwd}` is too broad to mount (the root or the home folder)")
    if allowlist is None:
        allowlist = MountAllowlist(allowed_roots=[{"path": "/", "allow_read_write": True}])  # type: ignore[list-item]
    volume = check_extra_mount(ExtraMount(host_path=str(folder), readonly=False), allowlist, is_main=True)
    if volume.read_only:
        raise ConfigError(f"session cwd `{cwd}` is allowed read-only; a session needs it writable")
    return folder


def agent_home_for(home: Path, folder: Path) -> Path:
    """The agent home kept for a project folder, across boxes and ``agentlite acp`` processes."""
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    return home / "agent-homes" / ACP_AGENT_ID / f"{folder.name[:40] or 'root'}-{digest}"


class _BoxClient(NoHostFsClient):
    """The client side towards the adapter in a box: updates and permission requests go out."""

    def __init__(self, session: BoxedSession) -> None:
        self.session = session

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        self.session.updates.put_nowait(update)

    async def request_permission(
        self, session_id: str, tool_call: Any, options: list[Any], **kwargs: Any
    ) -> acp.RequestPermissionResponse:
        return await self.session.on_permission(tool_call, options)


class BoxedSession:
    """One ACP session: a box with the project mounted and the adapter running in it."""

    def __init__(self, server: AcpServer, folder: Path) -> None:
        self.server = server
        self.folder = folder
        self.session_id = ""
        self.adapter: AdapterBox | None = None
        self.updates: asyncio.Queue[Any] = asyncio.Queue()
        self.prompt_lock = asyncio.Lock()

    # -- start and stop ---------------------------------------------------------------------------

    async def start(self) -> Any:
        """Make the box, start the adapter in it and initialize it; returns the adapter's answer."""
        settings = self.server.settings
        self.adapter = AdapterBox(self.server.runtime, settings.home, agent_id=ACP_AGENT_ID,
                                  group=self.folder.name or "root", folder=self.folder,
                                  agent_home=agent_home_for(settings.home, self.folder),
                                  backend=settings.backend, spec=settings.spec, client=_BoxClient(self))  # fmt: skip
        return await self.adapter.start()

    @property
    def box(self) -> str:
        return self.adapter.box if self.adapter is not None else ""

    @property
    def _conn(self) -> Any:
        return self.adapter.conn if self.adapter is not None else None

    async def close(self) -> None:
        if self.adapter is not None:
            await self.adapter.close()
            log.info("session closed session=%s box=%s", self.session_id, self.box)

    def failure(self, what: str, exc: BaseException) -> acp.RequestError:
        detail = self.adapter.failure_text(what, exc) if self.adapter is not None else f"{what}: {exc}"
        log.warning("session=%s box=%s %s", self.session_id, self.box, detail)
        return acp.RequestError.internal_error({"details": detail})

    # -- the session ------------------------------------------------------------------------------

    async def open(self, load_id: str | None) -> Any:
        """``session/new`` (or ``session/load`` of ``load_id``) on the adapter; sets the mode the
        permission policy asks for. Returns the adapter's response."""
        if load_id is None:
            response = await self._conn.new_session(cwd=GUEST_WORKSPACE, mcp_servers=[])
            self.session_id = response.session_id
        else:
            self.session_id = load_id
            response = await self._conn.load_session(cwd=GUEST_WORKSPACE, session_id=load_id, mcp_servers=[])
        modes = getattr(response, "modes", None)
        available = [m.id for m in modes.available_modes] if modes else []
        wanted = _PERMISSIVE_MODES if self.server.settings.permissions == "allow" else _ASK_MODES
        mode = next((m for m in wanted if m in available), None)
        if mode is not None and modes is not None and modes.current_mode_id != mode:
            await self._conn.set_session_mode(session_id=self.session_id, mode_id=mode)
            modes.current_mode_id = mode
        return response

    async def prompt(self, blocks: list[Any]) -> acp.PromptResponse:
        if self.prompt_lock.locked():
            raise acp.RequestError.invalid_request(
                {"details": f"session {self.session_id} already has a prompt running"}
            )
        async with self.prompt_lock:
            forwarder = asyncio.create_task(self._forward_updates())
            try:
                response = await self._conn.prompt(session_id=self.session_id, prompt=blocks)
            except acp.RequestError:
                raise
            except Exception as exc:
                raise self.failure("the boxed agent failed the prompt", exc) from exc
            finally:
                # Every update the adapter sent before its response reaches the client first.
                self.updates.put_nowait(None)
                await forwarder
            return response

    async def _forward_updates(self) -> None:
        while (update := await self.updates.get()) is not None:
            try:
                await self.server.client.session_update(session_id=self.session_id, update=update)
            except Exception as exc:  # a client that left; the turn still ends properly
                log.debug("could not forward an update: %s", exc)

    async def forward_idle_updates(self) -> None:
        """Updates sent outside a prompt (history replay on load, mode changes) go out at once."""
        if not self.prompt_lock.locked():
            self.updates.put_nowait(None)
            await self._forward_updates()

    async def cancel(self) -> None:
        if self._conn is not None:
            await self._conn.cancel(session_id=self.session_id)

    async def set_mode(self, mode_id: str) -> Any:
        return await self._conn.set_session_mode(session_id=self.session_id, mode_id=mode_id)

    async def on_permission(self, tool_call: Any, options: list[Any]) -> acp.RequestPermissionResponse:
        if self.server.settings.permissions == "allow":
            allow = next((o for o in options if o.kind in ("allow_once", "allow_always")), None)
            if allow is not None:
                return acp.RequestPermissionResponse(
                    outcome=schema.AllowedOutcome(outcome="selected", option_id=allow.option_id)
                )
        # The client decides; updates queued before the request reach it first.
        try:
            return await self.server.client.request_permission(
                session_id=self.session_id, tool_call=tool_call, options=options
            )
        except Exception as exc:
            log.info("permission request not answered by the client (%s): denied", exc)
            return acp.RequestPermissionResponse(outcome=schema.DeniedOutcome(outcome="cancelled"))


class AcpServer:
    """The ACP agent ``agentlite acp`` serves: every session a box (see the module docstring)."""

    def __init__(self, runtime: BoxRuntime, settings: AcpServerSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.client: Any = None
        self.sessions: dict[str, BoxedSession] = {}
        #: The start-up orphan sweep; sessions are made after it.
        self.sweep: asyncio.Task[None] | None = None

    def on_connect(self, conn: Any) -> None:
        self.client = conn

    async def initialize(self, protocol_version: int, client_capabilities: Any = None,
                         client_info: Any = None, **kwargs: Any) -> schema.InitializeResponse:  # fmt: skip
        return schema.InitializeResponse(
            protocol_version=acp.PROTOCOL_VERSION,
            agent_capabilities=schema.AgentCapabilities(
                load_session=True,
                prompt_capabilities=schema.PromptCapabilities(image=True, embedded_context=True),
            ),
            agent_info=schema.Implementation(
                name="agentlite",
                title=f"AgentLite: {self.settings.backend_label} in a box",
                version=package_version("agentlite"),
            ),
            auth_methods=[],
        )

    async def _open(self, cwd: str, load_id: str | None) -> tuple[BoxedSession, Any]:
        try:
            folder = self.settings.workspace or check_session_folder(cwd, self.settings.mount_allowlist)
        except ConfigError as exc:
            raise acp.RequestError.invalid_params({"cwd": cwd, "details": str(exc)}) from None
        if self.sweep is not None:
            await self.sweep
        session = BoxedSession(self, folder)
        try:
            await session.start()
            response = await session.open(load_id)
        except acp.RequestError:
            await session.close()
            raise
        except BaseException as exc:
            await session.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise session.failure("could not start the boxed agent", exc) from exc
        self.sessions[session.session_id] = session
        log.info("session %s session=%s box=%s folder=%s", "loaded" if load_id else "new",
                 session.session_id, session.box, folder)  # fmt: skip
        return session, response

    async def new_session(self, cwd: str, mcp_servers: list[Any] | None = None,
                          **kwargs: Any) -> schema.NewSessionResponse:  # fmt: skip
        session, response = await self._open(cwd, None)
        await session.forward_idle_updates()
        return schema.NewSessionResponse(
            session_id=session.session_id, modes=getattr(response, "modes", None)
        )

    async def load_session(self, cwd: str, session_id: str, mcp_servers: list[Any] | None = None,
                           **kwargs: Any) -> schema.LoadSessionResponse:  # fmt: skip
        live = self.sessions.get(session_id)
        if live is not None:
            return schema.LoadSessionResponse()
        session, response = await self._open(cwd, session_id)
        await session.forward_idle_updates()  # the adapter's replay of the history
        return schema.LoadSessionResponse(modes=getattr(response, "modes", None))

    def _session(self, session_id: str) -> BoxedSession:
        session = self.sessions.get(session_id)
        if session is None:
            raise acp.RequestError.invalid_params({"sessionId": session_id, "details": "unknown session"})
        return session

    async def prompt(self, session_id: str, prompt: list[Any], **kwargs: Any) -> acp.PromptResponse:
        return await self._session(session_id).prompt(prompt)

    async def cancel(self, session_id: str, **kwargs: Any) -> None:
        session = self.sessions.get(session_id)
        if session is not None:
            await session.cancel()

    async def set_session_mode(self, session_id: str, mode_id: str, **kwargs: Any) -> Any:
        await self._session(session_id).set_mode(mode_id)
        return schema.SetSessionModeResponse()

    async def close_session(self, session_id: str, **kwargs: Any) -> schema.CloseSessionResponse:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            await session.close()
        return schema.CloseSessionResponse()

    async def ext_method(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        raise acp.RequestError.method_not_found(method)

    async def ext_notification(self, method: str, params: dict[str, Any]) -> None:
        return None

    async def shutdown(self) -> None:
        """Remove every session's box (the client is gone)."""
        if self.sweep is not None and not self.sweep.done():
            await self.sweep
        sessions, self.sessions = list(self.sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


async def serve_stdio(runtime: BoxRuntime, settings: AcpServerSettings) -> None:
    """Serve ACP on this process's stdin/stdout until the client closes it; then remove the boxes."""
    server = AcpServer(runtime, settings)
    # Boxes of an earlier `agentlite acp` that died (kill -9) have no live owner: reaped while the
    # client initializes; the first session waits for it.
    server.sweep = asyncio.create_task(_sweep(runtime, settings.home))
    try:
        await acp.run_agent(server)  # type: ignore[arg-type]
    finally:
        await server.shutdown()


async def _sweep(runtime: BoxRuntime, home: Path) -> None:
    report = await cleanup_orphans(runtime, home, ACP_AGENT_ID, adoptable=adoptable_run)
    if removed := [d for d in report if d.removed]:
        log.info("removed %d orphaned ACP session box(es)", len(removed))
    if report.failed:
        log.warning("startup sweep: %d failed: %s", report.failed, report.failures())
