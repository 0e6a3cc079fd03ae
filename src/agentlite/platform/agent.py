"""An agent: its channels, groups, settings, tasks and events, and the turns of its groups.

One agent owns one SQLite store (``<workdir>/store/messages.db``) and runs one box per active group.
Its collaborators each live in their own module: the message loop (:mod:`agentlite.platform.message_loop`),
the turn bookkeeping of cursors and sessions (:mod:`agentlite.platform.turn_book`), the IPC bridge
(:mod:`agentlite.platform.ipc_bridge`), the backend event parsing (:mod:`agentlite.run.sdk_events`), and the
turn pipeline (:mod:`agentlite.run.turn`) that runs each turn. The agent wires them together.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agentlite.box.base import BoxSpec
from agentlite.box.lifecycle import cleanup_orphans
from agentlite.channels.base import ChannelConfig, ChannelManager
from agentlite.channels.message import strip_internal
from agentlite.core.box_env import (
    ENV_ACTIONS_TOKEN,
    ENV_ACTIONS_URL,
    ENV_CHAT_JID,
    ENV_GROUP_FOLDER,
    ENV_IPC_DIR,
    ENV_IS_MAIN,
)
from agentlite.core.errors import AgentliteError, ConfigError
from agentlite.core.safefs import BoxDir, UnsafePath
from agentlite.core.supervisor import Supervisor
from agentlite.platform.actions import ActionRegistry, ActionsServer
from agentlite.platform.adoption import RunDecision, adoptable_run
from agentlite.platform.agent_host import AgentHost
from agentlite.platform.events import AgentEvent, EventHub
from agentlite.platform.handoff import handoff_block, with_handoff
from agentlite.platform.ipc import IpcWatcher
from agentlite.platform.ipc_bridge import IpcBridge
from agentlite.platform.layout import AgentPaths
from agentlite.platform.ledger_turn import LedgerTurn, delivering
from agentlite.platform.message_loop import MessageLoop
from agentlite.platform.mounts import MountAllowlist, ensure_memory_alias, group_volumes, seed_memory
from agentlite.platform.queue import GroupQueue
from agentlite.platform.registry import AgentRecord, normalize_backend
from agentlite.platform.router import ACP_NOTICE_SENDER, SenderAllowlist
from agentlite.platform.scheduler import Scheduler
from agentlite.platform.store import AgentStore, Message, RegisteredGroup, Task, check_group_folder, now_iso
from agentlite.platform.turn_book import Cursor, TurnBook
from agentlite.run.protocol import (
    BackendConfig,
    Event,
    McpServer,
    ResultEvent,
    RunnerInput,
    SdkMessageEvent,
    StateEvent,
    UsageEvent,
    session_id_of,
)
from agentlite.run.retry import retry_class
from agentlite.run.sdk_events import agent_events
from agentlite.run.turn import GroupKey, TurnEventHandler, TurnResult

if TYPE_CHECKING:
    from agentlite.channels.base import ChannelFactory
    from agentlite.platform.acp_peers import AcpDelegation

log = logging.getLogger("agentlite.agent")

TASK_CLOSE_DELAY = 10.0


class Agent:
    """An assistant with its own state; created by :class:`agentlite.AgentLite`, not directly."""

    def __init__(self, platform: AgentHost, record: AgentRecord, *, channels: dict[str, ChannelFactory] | None = None,
                 credentials: Callable[[], Any] | None = None) -> None:  # fmt: skip
        self._platform = platform
        self._record = record
        self.id = record.agent_id
        self.name = record.name
        self.workdir = Path(record.workdir)
        #: Where its store, groups and IPC folders are in its work folder.
        self.paths = AgentPaths(self.workdir)
        self.backend_revision = 0
        self._hub = EventHub(self.id)
        self._initial_channels = dict(channels or {})
        self._credentials = credentials
        self._started = False
        self._placement_events: Callable[[], None] | None = None
        self._store: AgentStore | None = None
        self._groups: dict[str, RegisteredGroup] = {}
        self._book: TurnBook | None = None
        self._loop: MessageLoop | None = None
        self._snapshots: dict[str, str] = {}
        #: The answers :meth:`ask` still waits for; settled with :attr:`_stop_reason` at stop.
        self._asked: set[asyncio.Future[TurnResult]] = set()
        self._stop_reason = "agent stopped"
        self._loop_task: asyncio.Task[None] | None = None
        self._supervisor: Supervisor | None = None
        self._channels: ChannelManager | None = None
        self._queue: GroupQueue | None = None
        self._scheduler: Scheduler | None = None
        self._ipc: IpcWatcher | None = None
        self._actions_server: ActionsServer | None = None
        self._actions = ActionRegistry()
        self._allowlist = SenderAllowlist.load(self.workdir / "sender-allowlist.json")
        #: A model endpoint for this process only (never persisted): the CLI's offline demo model.
        self.endpoint_override: str | None = None
        self._acp: AcpDelegation | None = None
        self._spending_state: Any = None
        #: How failed turns are retried (rate limits, transient server errors); tests shorten it.
        from agentlite.run.retry import RetryPolicy

        self.retry_policy = RetryPolicy()
        #: The clock budgets read (their daily reset); tests inject one.
        self.clock: Callable[[], Any] | None = None

    # -- plain properties ----------------------------------------------------------------------

    @property
    def assistant_name(self) -> str:
        return self._record.assistant_name

    @property
    def record(self) -> AgentRecord:
        """The agent's persisted settings (a copy is not needed: records are replaced, not changed)."""
        return self._record

    def set_credentials(self, credentials: Callable[[], Any] | None) -> None:
        """The callable whose mapping becomes each box's extra environment (API keys and the like)."""
        self._credentials = credentials

    def session(self, folder: str) -> str | None:
        """The native session the group's next turn resumes with the current backend, if any."""
        return None if self._book is None else self._book.get_session(folder, self._record.backend.type)

    def busy(self, jid: str) -> bool:
        """Whether the group has messages not yet answered or a run that is not just waiting for
        input (a chat front waits for this to end before it stops the agent)."""
        if self._loop is None or self._queue is None:
            return False
        return self._loop.has_unanswered(jid) or (self._queue.is_active(jid) and not self._queue.is_idle(jid))

    def queued_turns(self, jid: str) -> int:
        """How many turns (asked for or scheduled) wait in the group's queue behind its live run."""
        return 0 if self._queue is None else self._queue.queued_tasks(jid)

    @property
    def started(self) -> bool:
        return self._started

    @property
    def store(self) -> AgentStore:
        if self._store is None:
            raise AgentliteError(f"agent `{self.name}` is not started")
        return self._store

    @property
    def message_loop(self) -> MessageLoop:
        """The started agent's message loop (observed by benchmarks: its ``poll_once``)."""
        if self._loop is None:
            raise AgentliteError(f"agent `{self.name}` is not started")
        return self._loop

    @property
    def group_queue(self) -> GroupQueue:
        """The started agent's group queue (benchmarks wait on ``is_active`` and close runs)."""
        if self._queue is None:
            raise AgentliteError(f"agent `{self.name}` is not started")
        return self._queue

    @property
    def groups_dir(self) -> Path:
        return self.paths.groups_dir

    @property
    def ipc_root(self) -> Path:
        return self.paths.ipc_root

    # -- events --------------------------------------------------------------------------------

    def on(self, name: str, callback: Callable[[AgentEvent], Any]) -> Callable[[], None]:
        """Call ``callback(event)`` for each event ``name`` (``"*"``: all). Returns an unsubscriber."""
        return self._hub.on(name, callback)

    def events(self) -> AsyncIterator[AgentEvent]:
        """Every event from now on: ``async for event in agent.events(): ...``."""
        return self._hub.events()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, reap orphaned boxes, connect channels, and start the loops."""
        if self._started:
            raise AgentliteError(f"agent `{self.name}` already running")
        for folder in self.paths.top_dirs():
            folder.mkdir(parents=True, exist_ok=True)
        seed_memory(self.groups_dir, self.assistant_name, lambda exc: self._refused(exc, "seed_memory"))
        self._sync_instructions()
        self._sync_skills()
        self._store = AgentStore(self.paths.store)
        self._book = TurnBook(self._store, self._record.backend.type)
        self._groups = self.store.get_registered_groups()
        # Before the sweep: runs an earlier host of ours left unfinished are delivered, adopted
        # (their boxes become ours) or abandoned (agentlite.platform.adoption).
        placement = self._platform.placement
        runs = await placement.decide_runs(self.store.runs, self.ipc_root, agent_id=self.id,
                                           enabled=self._platform.adopt_runs)  # fmt: skip
        # Boxes elsewhere (a Ray cluster's nodes) that no adopted run holds are removed now.
        if killed := await placement.reconcile(self.id, runs):
            log.info("agent=%s removed %d box(es) no run holds: %s", self.id, len(killed), killed)
        self._placement_events = placement.subscribe(self.id, self._hub.emit)
        # The startup sweep: boxes of this agent whose owner died (a crashed earlier run of us).
        decisions = await cleanup_orphans(
            self._platform.runtime, self._platform.box_home, self.id, adoptable=adoptable_run
        )
        if removed := [d.name for d in decisions if d.action == "remove" and d.error is None]:
            log.info("agent=%s removed orphaned boxes %s", self.id, removed)
        if decisions.failed:  # swallowed so the agent still starts, but never silently
            log.warning(
                "agent=%s startup sweep: %d failed: %s", self.id, decisions.failed, decisions.failures()
            )
        # Every long-lived task of the agent runs under one supervisor (loops, queue runs, events).
        self._supervisor = Supervisor(f"agent-{self.id}")
        await self._supervisor.start()
        self._hub.spawn = self._supervisor.spawn
        self._queue = GroupQueue(max_concurrent=self._platform.max_concurrent, ipc_root=self.ipc_root,
                                 retry_base=self._platform.retry_base, spawn=self._supervisor.spawn,
                                 on_refused=lambda exc: self._refused(exc, "ipc_input"))  # fmt: skip
        self._channels = ChannelManager(self._channel_config())
        self._loop = MessageLoop(book=self._book, queue=self._queue, channels=self._channels,
                                 groups=lambda: self._groups, assistant_name=lambda: self.assistant_name,
                                 timezone=self._platform.timezone, allowlist=self._allowlist,
                                 run_turn=self._run_message_turn,
                                 send_message=self.send_message, agent_id=self.id)  # fmt: skip
        self._queue.set_process_messages(self._loop.process_group)
        self._started = True
        for key, factory in self._initial_channels.items():
            await self.add_channel(key, factory)
        self._actions_server = ActionsServer(self._actions)
        await self._actions_server.start(host="127.0.0.1", port=0)
        self._scheduler = Scheduler(self.store, self._queue, self._run_task, self._hub.emit,
                                    tz=self._platform.timezone, agent_id=self.id, groups=lambda: self._groups,
                                    poll_interval=self._platform.scheduler_poll_interval,
                                    blocked=self._task_blocked)  # fmt: skip
        await self._scheduler.start(self._supervisor.spawn)
        self._ipc = IpcWatcher(
            self.ipc_root, lambda: self._groups, IpcBridge(self), task_owner=self._task_owner,
            poll_interval=self._platform.ipc_poll_interval, on_refused=lambda exc: self._refused(exc, "ipc_request"),
        )  # fmt: skip
        await self._ipc.start(self._supervisor.spawn)
        if self._acp is not None:
            self._acp.start(self._supervisor.spawn)
        carried = [d for d in runs if d.action in ("deliver", "adopt") and d.run.chat_id in self._groups]
        held = self._loop.recover(settled=[d.run.chat_id for d in carried if d.run.chat_id])
        for decision in carried:
            jid, previous = decision.run.chat_id or "", held.get(decision.run.chat_id or "")
            if decision.action == "deliver":
                self._supervisor.spawn(
                    self._carry_on(decision, previous), name=f"agentlite-deliver-{decision.run.run_id}"
                )
                continue

            # An adopted box is the group's live run: it takes the queue's slot, so the group's next
            # message waits for it instead of starting a second box beside it.
            async def follow(decision: RunDecision = decision, previous: Cursor | None = previous) -> None:
                self._queue.register_box(decision.run.chat_id or "", decision.run.group_folder, is_task=True)
                await self._carry_on(decision, previous)

            if not self._queue.enqueue_task(jid, f"adopted-{decision.run.run_id}", follow):
                self.store.runs.end(decision.run.run_id, "abandoned", "the queue refused the adopted run",
                                    token=decision.token)  # fmt: skip
        self._loop_task = self._supervisor.spawn(self._loop.run(), name=f"agentlite-loop-{self.id}")
        self._hub.emit("started")

    async def _carry_on(self, decision: RunDecision, previous: Cursor | None) -> None:
        """Deliver a run's written final, or follow an adopted run to its final and deliver that;
        an adopted run that ends without an answer hands its messages back to the queue."""
        run = decision.run
        jid = run.chat_id or ""

        async def deliver(text: str) -> bool:
            if strip_internal(text):
                with delivering(run.run_id):
                    await self.send_message(jid, text)
            return True

        if decision.action == "deliver":
            await deliver(run.final_text or "")
            self.store.runs.mark_delivered(run.run_id)
            self._spending.record_from_ledger(run)  # keyed by the run id: never counted twice
            return

        # The adopted run's usage, from its journal: recorded under its run id, so it counts once
        # (the host that died never recorded it; no budget stops a box it did not start).
        tally = self._spending.plain_tally()

        def on_event(event: Event) -> None:
            if (session := session_id_of(event)) is not None:
                self._book.set_session(run.group_folder, run.backend, session)
            if isinstance(event, UsageEvent):
                tally.observe(event)

        try:
            ended = await self._platform.placement.follow_adopted(decision, ledger=self.store.runs,
                                                                  ipc_root=self.ipc_root, deliver=deliver,
                                                                  on_event=on_event,
                                                                  timeout=self._platform.box_timeout)  # fmt: skip
        except asyncio.CancelledError:
            self.store.runs.end(run.run_id, "abandoned", "the adopting host stopped", token=decision.token)
            raise
        self._spending.record_adopted(run, tally)
        if ended is not None and ended.state == "failed" and previous is not None:
            self._book.rewind(jid, previous)  # nothing reached the chat: a new run answers
            self._queue.enqueue_message_check(jid)

    async def stop(self, *, reason: str = "agent stopped", grace: float = 10.0) -> None:
        """Stop the loops and disconnect.

        Running boxes get ``grace`` seconds to end; then they are stopped and removed (bounded:
        TERM, a wait, KILL). Every :meth:`ask` still waiting gets a result with status ``error``
        and ``reason`` as its error. Nothing the agent started runs on after this returns.
        """
        if not self._started:
            return
        self._stop_reason = reason
        if self._ipc is not None:
            await self._ipc.stop()
        if self._scheduler is not None:
            await self._scheduler.stop()
        if self._actions_server is not None:
            await self._actions_server.stop()
        if self._acp is not None:
            await self._acp.shutdown()  # the peers' boxes go with their agent
        if self._loop is not None:
            self._loop.stop()
        if self._loop_task is not None:
            await self._loop_task
        if self._queue is not None:
            for jid in self._groups:
                self._queue.close_stdin(jid)  # idle boxes end now instead of at their idle timeout
            await self._queue.shutdown(grace, cancel=True)
        for answer in list(self._asked):  # queued, never started: the queue dropped them
            if not answer.done():
                answer.set_result(TurnResult.failed(reason))
        if self._supervisor is not None:
            await self._supervisor.aclose()  # what is left (event callbacks) ends here
            self._supervisor = None
            self._hub.spawn = None
        if self._channels is not None:
            await self._channels.disconnect_all()
        if self._store is not None:
            self._store.close()
            self._store = None
        self._started = False
        if self._placement_events is not None:
            self._placement_events()
            self._placement_events = None
        self._hub.emit("stopped")
        self._hub.close()

    # -- channels and groups ---------------------------------------------------------------------

    def _channel_config(self) -> Any:
        return ChannelConfig(
            on_message=self._on_message,
            on_chat_metadata=self._on_chat_metadata,
            registered_groups=lambda: dict(self._groups),
        )

    async def add_channel(self, key: str, factory: ChannelFactory) -> None:
        """Connect a channel driver made by ``factory`` under ``key``."""
        if not self._started:
            self._initial_channels[key] = factory
            return
        await self._channels.add(key, factory)
        self._hub.emit("channel.connected", key=key)

    async def remove_channel(self, key: str) -> None:
        await self._channels.remove(key)
        self._hub.emit("channel.disconnected", key=key)

    def register_group(self, jid: str, *, name: str, folder: str, trigger: str | None = None,
                       requires_trigger: bool = True, is_main: bool = False,
                       container_config: dict[str, Any] | None = None) -> RegisteredGroup:  # fmt: skip
        """Register a chat as a group the agent answers in; its files live in ``groups/<folder>``."""
        if not self._started:
            raise AgentliteError("Call start() before register_group()")
        check_group_folder(folder)
        group = RegisteredGroup(jid=jid, name=name, folder=folder, trigger=trigger or f"@{self.assistant_name}",
                                added_at=now_iso(), container_config=container_config,
                                requires_trigger=requires_trigger, is_main=is_main)  # fmt: skip
        self.store.register_group(group)
        self._groups[jid] = group
        try:
            # The folder is the group's box's to write: never follow what it planted there.
            BoxDir.open(self.groups_dir, folder, "logs", create=True).close()
            ensure_memory_alias(self.groups_dir / folder)
        except UnsafePath as exc:
            self._refused(exc, "register_group", jid=jid, folder=folder)
        self._hub.emit("group.registered", jid=jid, name=name, folder=folder)
        return group

    def _refused(self, exc: UnsafePath, action: str, **data: Any) -> None:
        """A path a box controls was refused: logged and reported as a ``path.refused`` event."""
        log.warning("agent=%s %s: %s", self.id, action, exc)
        self._hub.emit("path.refused", action=action, path=exc.path, reason=exc.reason, **data)

    def registered_groups(self) -> dict[str, RegisteredGroup]:
        return dict(self._groups)

    async def send_message(self, jid: str, text: str, *, sender: str | None = None) -> None:
        """Send ``text`` to a chat through the channel that owns it; ``sender`` is an optional display
        name for it (a driver whose ``send_message`` takes ``sender`` gets it; events carry it)."""
        if not await self._channels.send(jid, text, sender=sender):
            return
        visible = strip_internal(text)
        if self._store is not None:  # the agent's side of the chat, for a later backend's handoff
            self._store.store_message(Message(id=f"out-{time.time_ns()}-{secrets.token_hex(3)}", chat_id=jid,
                                              sender=sender or self.assistant_name,
                                              sender_name=sender or self.assistant_name, content=visible,
                                              timestamp=now_iso(), is_from_me=True, is_bot_message=True))  # fmt: skip
        self._hub.emit("message.out", jid=jid, text=visible, sender=sender)

    async def _on_message(self, chat_id: str, message: Message) -> None:
        if chat_id in self._groups and not message.is_from_me:
            rule = self._allowlist.rule(chat_id)
            if rule.mode == "drop" and not rule.allows(message.sender):
                if self._allowlist.log_denied:
                    log.info("dropped message from %s in %s (sender allowlist)", message.sender, chat_id)
                return
        self.store.store_message(message)
        self.store.store_chat_metadata(chat_id, message.timestamp)
        self._hub.emit("message.in", jid=chat_id, sender=message.sender, text=message.content,
                       timestamp=message.timestamp)  # fmt: skip
        if self._loop is not None:
            self._loop.wake()

    def _on_chat_metadata(self, chat_id: str, timestamp: str, name: str | None = None, channel: str | None = None,
                          is_group: bool | None = None) -> None:  # fmt: skip
        self.store.store_chat_metadata(chat_id, timestamp, name=name, channel=channel, is_group=is_group)
        self._hub.emit("chat.metadata", jid=chat_id, name=name, channel=channel, is_group=is_group)

    # -- backend -------------------------------------------------------------------------------

    def get_backend(self) -> BackendConfig:
        return self._record.backend.model_copy()

    async def set_backend(self, backend: BackendConfig | dict[str, Any], *,
                          context: Literal["handoff", "fresh"] = "handoff") -> dict[str, Any]:  # fmt: skip
        """Switch backend for the next turn; a type change hands the group context over (or starts fresh)."""
        new = normalize_backend(backend)
        old = self._record.backend
        if (new.type, new.model, new.base_url) == (old.type, old.model, old.base_url):
            return {"previous": old, "current": old, "applies": "nextTurn", "handoff": "notNeeded"}
        self._record = self._platform.registry.update(self.name, backend=new)
        handoff = "notNeeded"
        if new.type != old.type:
            self.backend_revision += 1
            handoff = "skipped"
            if self._started and self._groups:
                for group in self._groups.values():
                    self.store.delete_session(group.folder, new.type)
                    if context == "handoff":
                        self.store.set_handoff(group.folder, old.type, new.type)
                handoff = "pending" if context == "handoff" else "skipped"
            if self._book is not None:
                self._book.switch_backend(new.type)
        if self._started:
            for jid in self._groups:
                self._queue.close_stdin(jid)
        self._hub.emit(
            "backend.changed", previous=old.model_dump(), current=new.model_dump(), handoff=handoff
        )
        return {"previous": old, "current": new, "applies": "nextTurn", "handoff": handoff}

    # -- network -------------------------------------------------------------------------------

    def get_network(self) -> dict[str, Any]:
        """This agent's box network: ``{"mode": none|egress|allowlist|host, "allow_net": [...]}``."""
        from agentlite.box.network import NETWORK_SETTINGS_FILE, load_network_settings

        return load_network_settings(self.workdir / NETWORK_SETTINGS_FILE)

    def set_network(self, mode: str, allow_net: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
        """Set the network of this agent's boxes from the next turn on (see :mod:`agentlite.box.network`)."""
        from agentlite.box.network import HOST_MODE_WARNING, NETWORK_SETTINGS_FILE, save_network_settings

        settings = save_network_settings(self.workdir / NETWORK_SETTINGS_FILE, mode, list(allow_net))
        if settings["mode"] == "host":
            log.warning("agent=%s %s", self.id, HOST_MODE_WARNING)
        return settings

    # -- customization -------------------------------------------------------------------------

    def get_instructions(self) -> str | None:
        return self._record.instructions

    def set_instructions(self, text: str | None) -> None:
        self._record = self._platform.registry.update(self.name, instructions=text or None)
        self._sync_instructions()

    def _sync_instructions(self) -> None:
        agent_dir = self.paths.agent_dir
        if self._record.instructions:
            agent_dir.mkdir(parents=True, exist_ok=True)
            (agent_dir / "CLAUDE.md").write_text(self._record.instructions)
            ensure_memory_alias(agent_dir)
        elif (agent_dir / "CLAUDE.md").exists():
            (agent_dir / "CLAUDE.md").unlink()
            (agent_dir / "AGENTS.md").unlink(missing_ok=True)

    def get_skills(self) -> list[str]:
        return list(self._record.skills or [])

    def set_skills(self, paths: list[str | Path] | None) -> None:
        """Skill folders (each with a ``SKILL.md``), copied into ``agent/skills/`` for every box."""
        resolved = [str(_check_skill(Path(p))) for p in paths or []]
        self._record = self._platform.registry.update(self.name, skills=resolved or None)
        self._sync_skills()

    def add_skill(self, path: str | Path) -> None:
        skill = str(_check_skill(Path(path)))
        if skill not in self.get_skills():
            self.set_skills([*self.get_skills(), skill])

    def remove_skill(self, name: str) -> None:
        self.set_skills([p for p in self.get_skills() if Path(p).name != name])

    def _sync_skills(self) -> None:
        import shutil

        target = self.paths.agent_dir / "skills"
        wanted = {Path(p).name: Path(p) for p in self.get_skills()}
        if target.is_dir():
            for stale in target.iterdir():
                if stale.name not in wanted:
                    shutil.rmtree(stale, ignore_errors=True)
        for name, source in wanted.items():
            if source.is_dir():
                shutil.copytree(source, target / name, dirs_exist_ok=True)

    def get_mcp_servers(self) -> dict[str, dict[str, Any]]:
        return dict(self._record.mcp_servers or {})

    def set_mcp_servers(self, servers: dict[str, dict[str, Any]] | None) -> None:
        for name, server in (servers or {}).items():
            McpServer.model_validate({k: v for k, v in server.items() if k != "source"})
            if name == "agentlite":
                raise ConfigError("MCP server name `agentlite` is reserved")
        self._record = self._platform.registry.update(self.name, mcp_servers=servers or None)

    def action(self, name: str, handler: Callable[..., Any], *, description: str | None = None,
               schema: Any = None) -> None:  # fmt: skip
        """Register a custom action the agent can call from inside its box (``call_action``)."""
        self._actions.register(name, handler, description=description, schema=schema)

    def set_acp_peers(
        self, peers: list[Any], *, permissions: str = "deny", idle_timeout: float = 300.0
    ) -> None:
        """Peer ACP agents this agent's boxes may delegate to, each run in a box of its own
        (entries: ``"codex"``, ``"claude-code"``, ``"auto"`` or ``{name, command, args, env}``;
        see :mod:`agentlite.platform.acp_peers`). Registers the six ``acp_*`` / ``agent_delegate`` actions.
        ``permissions``: ``deny`` (default) or ``allow`` the peers' permission requests; a peer's box
        without sessions for ``idle_timeout`` seconds is removed."""
        if self._acp is not None:
            raise AgentliteError(f"agent `{self.name}` already has ACP peers")
        # Imported here: the ACP library takes ~0.4 s to import, which no agent without peers needs.
        from agentlite.platform.acp_peers import AcpDelegation, resolve_peers

        delegation = AcpDelegation(
            peers=resolve_peers(peers), runtime=lambda: self._platform.runtime,
            box_home=lambda: self._platform.box_home, agent_id=self.id, groups_dir=self.groups_dir,
            ipc_root=self.ipc_root, data_dir=self.paths.data_dir, backend=self._effective_backend,
            box_spec=lambda: BoxSpec(network_mode=self.get_network()["mode"],
                                     allow_net=self.get_network()["allow_net"]),
            resolve_jid=self._acp_notice_target, notify=self._acp_notice,
            permissions=permissions, idle_timeout=idle_timeout,  # type: ignore[arg-type]
        )  # fmt: skip
        delegation.register(self._actions)
        self._acp = delegation
        if self._started and self._supervisor is not None:
            delegation.start(self._supervisor.spawn)

    def _effective_backend(self) -> BackendConfig:
        backend = self._record.backend.model_copy()
        if self.endpoint_override and backend.base_url is None:
            backend.base_url = self.endpoint_override
        return backend

    def _acp_notice_target(self, folder: str, chat_id: str | None) -> str | None:
        group = self._groups.get(chat_id) if chat_id else None
        if group is not None and group.folder == folder:
            return group.jid
        matches = [g.jid for g in self._groups.values() if g.folder == folder]
        return matches[0] if len(matches) == 1 else None

    async def _acp_notice(self, jid: str, text: str) -> None:
        # Stored as a chat message (not from the assistant) and the loop woken: it is the trigger.
        message = Message(id=f"acp-notice-{int(time.time() * 1000)}-{secrets.token_hex(3)}", chat_id=jid,
                          sender=ACP_NOTICE_SENDER, sender_name="AgentLite ACP", content=text,
                          timestamp=now_iso())  # fmt: skip
        if self._store is None:
            return
        self.store.store_message(message)
        self._hub.emit("message.in", jid=jid, sender=message.sender, text=text, timestamp=message.timestamp)
        if self._loop is not None:
            self._loop.wake()

    # -- tasks ---------------------------------------------------------------------------------

    def _need_scheduler(self) -> Any:
        if self._scheduler is None:
            raise AgentliteError(f"agent `{self.name}` is not started")
        return self._scheduler

    async def schedule_task(self, *, jid: str, prompt: str, schedule_type: str, schedule_value: str,
                            context_mode: str = "isolated", task_id: str | None = None) -> Task:  # fmt: skip
        """A new task for the group ``jid``; ``task_id`` keeps an id already given out (else a new one)."""
        group = self._groups.get(jid)
        if group is None:
            raise ConfigError(f"unknown group `{jid}`: register it before scheduling tasks for it")
        return await self._need_scheduler().create_task(group_folder=group.folder, chat_id=jid, prompt=prompt,
                                                        schedule_type=schedule_type, schedule_value=schedule_value,
                                                        context_mode=context_mode, task_id=task_id)  # fmt: skip

    def list_tasks(self, group_folder: str | None = None) -> list[Task]:
        return self.store.list_tasks(group_folder)

    def get_task(self, task_id: str) -> Any:
        return self._need_scheduler().get_task(task_id)

    async def update_task(self, task_id: str, **changes: Any) -> Task | None:
        return await self._need_scheduler().update_task(task_id, **changes)

    async def pause_task(self, task_id: str) -> Task | None:
        return await self._need_scheduler().pause_task(task_id)

    async def resume_task(self, task_id: str) -> Task | None:
        return await self._need_scheduler().resume_task(task_id)

    async def cancel_task(self, task_id: str) -> bool:
        return await self._need_scheduler().cancel_task(task_id)

    def _task_owner(self, task_id: str) -> str | None:
        task = self.store.get_task(task_id)
        return None if task is None else task.group_folder

    # -- the message loop ------------------------------------------------------------------------

    # -- one turn ------------------------------------------------------------------------------

    def _mcp_servers(self, group: RegisteredGroup, auth: Any) -> dict[str, McpServer]:
        env = {
            ENV_CHAT_JID: group.jid,
            ENV_GROUP_FOLDER: group.folder,
            ENV_IS_MAIN: "1" if group.is_main else "0",
            ENV_IPC_DIR: "/workspace/ipc",
        }
        if auth is not None:
            env |= {ENV_ACTIONS_URL: auth.url, ENV_ACTIONS_TOKEN: auth.token}
        servers = {
            "agentlite": McpServer(command=sys.executable, args=["-m", "agentlite.guest.mcp_server"], env=env)
        }
        for name, server in self.get_mcp_servers().items():
            servers[name] = McpServer.model_validate({k: v for k, v in server.items() if k != "source"})
        return servers

    async def ask(self, jid: str, prompt: str, *, backend: BackendConfig | None = None,
                  on_event: TurnEventHandler | None = None, request_id: str | int | None = None,
                  workspace: Path | None = None, network: dict[str, Any] | None = None) -> TurnResult:  # fmt: skip
        """Run one turn on ``prompt`` in the group ``jid`` through the group queue; its one result.

        The turn waits for the group's earlier turns and for a free slot under the platform's cap,
        resumes the group's session for the backend (``backend`` overrides the agent's for this
        turn), has the agent's MCP tools and actions, and ends its box after the turn. Nothing is
        sent to a chat: the answer is the result. If the agent stops first, the result is an error
        naming why (see :meth:`stop`). A turn that could not run at all (the box layer raised, e.g.
        a box that failed to start) is retried like the queue retries message runs, after
        ``retry_base * 2**(n-1)`` seconds for n = 1..max retries; a turn's own error is its result.

        ``workspace`` is the host folder the box works in for this turn (default: the group's
        folder, ``groups/<folder>``); ``network`` (``{"mode", "allow_net"}``) replaces the agent's
        network for this turn. The group's session is the same either way.
        """
        group = self._groups.get(jid)
        if group is None:
            raise ConfigError(f"unknown group `{jid}`: register it before asking in it")
        accepted_at = time.time()
        answer: asyncio.Future[TurnResult] = asyncio.get_running_loop().create_future()

        def settle(result: TurnResult) -> None:
            if not answer.done():
                answer.set_result(result)

        async def turn() -> None:
            retries = 0
            try:
                while True:
                    try:
                        result = await self._run_turn(group, prompt, None, backend=backend, observer=on_event,
                                                      single_turn=True, request_id=request_id,
                                                      accepted_at=accepted_at, errors_as_results=False,
                                                      workspace=workspace, network=network)  # fmt: skip
                    except Exception as exc:
                        queue = self._queue
                        if queue is None or queue.shutting_down or retries >= queue.max_retries:
                            log.exception("turn in %s failed agent=%s", group.folder, self.id)
                            settle(TurnResult.failed(f"{type(exc).__name__}: {exc}", request_id=request_id))
                            return
                        retries += 1
                        delay = self._platform.retry_base * 2 ** (retries - 1)
                        log.warning("turn in %s could not run (%s: %s); retry %d in %gs", group.folder,
                                    type(exc).__name__, exc, retries, delay)  # fmt: skip
                        await asyncio.sleep(delay)  # a backoff, holding the group's turn in order
                        continue
                    settle(result)
                    return
            except asyncio.CancelledError:
                settle(TurnResult.failed(self._stop_reason, request_id=request_id))
                raise

        self._asked.add(answer)
        try:
            if not self._queue.enqueue_task(jid, f"ask-{id(answer):x}", turn):
                return TurnResult.failed(self._stop_reason, request_id=request_id)
            result = await answer
        finally:
            self._asked.discard(answer)
        return result if result.id == request_id else result.model_copy(update={"id": request_id})

    @property
    def _spending(self) -> Any:
        """Usage and budgets around each turn (:class:`agentlite.platform.spending.Spending`)."""
        if (
            self._spending_state is None or self._spending_state.store is not self.store
        ):  # reopened at a restart
            from agentlite.platform.spending import Spending
            from agentlite.run.prices import load_prices

            self._spending_state = Spending(self.store, self._hub.emit, self.send_message,
                                            timezone=self._platform.timezone,
                                            prices=load_prices(self._platform.workdir),
                                            clock=lambda: self.clock() if self.clock else datetime.now(UTC))  # fmt: skip
        return self._spending_state

    def usage(self, *, jid: str | None = None, since: Any = None, by: str = "model") -> list[dict[str, Any]]:
        """Usage summed ``by`` model, group or day (the platform's days), optionally of one group and
        from ``since`` (a datetime); ``cost_usd`` ``None`` where a part is unknown."""
        from agentlite.platform.usage import usage_summary

        if by not in ("model", "group", "day"):
            raise ConfigError(f"usage by `{by}`: choose model, group or day")
        return usage_summary(self.store, timezone=self._platform.timezone, by=by, chat_id=jid, since=since)  # type: ignore[arg-type]

    def _task_blocked(self, task: Task) -> str | None:
        paused = self._spending.budgets.paused(task.chat_id)
        return None if paused is None else f"the group's budget is paused ({paused.paused})"

    def set_budget(self, jid: str = "*", *, daily: float | None = None, total: float | None = None,
                   unit: str = "usd", reset_hour: int = 0) -> dict[str, Any]:  # fmt: skip
        """Set the budget of one group (``jid``) or of the whole agent (``"*"``)."""
        from agentlite.platform.budgets import Budget

        if daily is None and total is None:
            raise ConfigError("a budget needs a daily and/or a total limit")
        budgets = self._spending.budgets
        return budgets.status(budgets.set(Budget(jid, unit, daily, total, reset_hour))).as_dict()  # type: ignore[arg-type]

    def budgets(self) -> list[dict[str, Any]]:
        budgets = self._spending.budgets
        return [budgets.status(b).as_dict() for b in budgets.all()]

    def resume_budget(self, jid: str = "*") -> bool:
        """Lift a budget pause: the group runs again, its limits counting from what is spent now."""
        resumed = self._spending.budgets.resume(jid)
        if resumed:
            self._hub.emit("budget.resumed", jid=jid)
        return resumed

    async def _run_message_turn(self, group: RegisteredGroup, prompt: str, deliver: Callable[[str], Any], *,
                                answering: Sequence[Message] = ()) -> TurnResult:  # fmt: skip
        """The message loop's turn: the prompt is made of the stored messages ``answering``."""
        return await self._run_turn(group, prompt, deliver, answering=answering)

    async def _run_turn(self, group: RegisteredGroup, prompt: str, deliver: Callable[[str], Any] | None, *,
                        task: Task | None = None, backend: BackendConfig | None = None,
                        observer: TurnEventHandler | None = None, single_turn: bool = False,
                        request_id: str | int | None = None, accepted_at: float | None = None,
                        errors_as_results: bool = True, answering: Sequence[Message] = (),
                        workspace: Path | None = None, network: dict[str, Any] | None = None) -> TurnResult:  # fmt: skip
        """One run of the group's box through the turn pipeline (:func:`agentlite.run.turn.run_turn`).

        ``deliver`` gets each answer for the chat (``None``: the answer is only the result);
        ``observer`` sees every runner event; ``answering`` are the stored messages the prompt is
        made of (a handoff block leaves them out: they follow it as the prompt).
        """
        backend = (backend or self._record.backend).model_copy()
        if self.endpoint_override and backend.base_url is None:
            backend.base_url = self.endpoint_override
        revision = self.backend_revision
        use_session = task is None or task.context_mode == "group"
        pending_handoff = self.store.get_handoff(group.folder) if use_session else None
        session_mode: Literal["resume", "fresh", "none"] = "resume" if use_session else "none"
        if pending_handoff and pending_handoff.get("to_backend_type") == backend.type:
            block = handoff_block(self.store, self.groups_dir / group.folder, group.jid,
                                  pending_handoff["from_backend_type"], backend.type, self.assistant_name,
                                  current_ids=[m.id for m in answering],
                                  on_refused=lambda exc: self._refused(exc, "handoff", jid=group.jid,
                                                                       folder=group.folder))  # fmt: skip
            prompt = with_handoff(block, prompt, scheduled=task is not None)
            session_mode = "fresh"
        else:
            pending_handoff = None
        try:
            self._write_snapshots(group)
        except UnsafePath as exc:  # the run goes on without fresh snapshots
            self._refused(exc, "ipc_snapshot", jid=group.jid, folder=group.folder)
        spending = self._spending
        notice = spending.blocked(group.jid)
        if notice is not None:  # paused by a budget: no box, one notice
            if deliver is not None:
                await self.send_message(group.jid, notice)
            return TurnResult.failed(notice, request_id=request_id)
        try:
            spending.write_snapshot(self.ipc_root, group.folder, group.jid)
        except UnsafePath as exc:  # the run goes on; the box cannot read its budget this time
            self._refused(exc, "budget_snapshot", jid=group.jid, folder=group.folder)

        # The run id exists before the box does (the ledger: agentlite.platform.ledger).
        def begin_run() -> LedgerTurn:
            return LedgerTurn.begin(self.store.runs, agent_id=self.id, group_folder=group.folder, backend=backend.type,
                                    chat_id=group.jid, deliver_to="chat" if deliver is not None else "result",
                                    request_id=request_id)  # fmt: skip

        turn = begin_run()
        auth = self._actions_server.mint_token(group.folder, group.is_main) if self._actions_server else None
        run_input = RunnerInput(prompt=prompt, group_folder=group.folder, chat_id=group.jid, is_main=group.is_main,
                                is_scheduled_task=task is not None, assistant_name=self.assistant_name,
                                backend=backend, mcp_servers=self._mcp_servers(group, auth),
                                actions_auth=auth)  # fmt: skip

        async def on_event(event: Event) -> None:
            if isinstance(event, SdkMessageEvent | UsageEvent | ResultEvent):  # a turn's own events
                turn.on_event(session_id_of(event))
            if isinstance(event, UsageEvent):
                turn.count_usage(event)
            if isinstance(event, StateEvent):
                self._hub.emit("run.state", jid=group.jid, name=group.name, folder=group.folder, state=event.state,
                               reason=event.reason, exit_code=event.exit_code)  # fmt: skip
                if event.state == "idle":
                    self._queue.notify_idle(group.jid)
                    if task is not None:
                        self._queue.schedule_close(group.jid, TASK_CLOSE_DELAY)
            elif isinstance(event, ResultEvent):
                # The messages the agent sent with its send_message tool during this turn are in its
                # IPC folder already (the tool wrote them before the turn could end): they go first.
                if self._ipc is not None:
                    await self._ipc.drain_messages(group.folder)
                if pending_handoff and revision == self.backend_revision:
                    # The new backend answered with the handoff in hand and has its own session now.
                    self.store.clear_handoff(group.folder)
                # Written to the ledger before it reaches the chat; a superseded copy's is refused.
                if deliver is not None and turn.final(status="success", text=event.result,
                                                      session_id=event.new_session_id):  # fmt: skip
                    if event.result:
                        with delivering(turn.run_id):
                            await deliver(event.result)
                    turn.delivered()
            elif isinstance(event, SdkMessageEvent):
                self._emit_sdk(group, event)
            if observer is not None:
                seen = observer(event)
                if inspect.isawaitable(seen):
                    await seen

        extra = group_volumes(
            self.workdir, group.folder, is_main=group.is_main, extra=self._extra_mounts(group)
        )
        network = network if network is not None else self.get_network()
        spec = BoxSpec(env={**await self._credential_env(), **turn.journal_env}, volumes=extra, network_mode=network["mode"],
                       allow_net=network["allow_net"])  # fmt: skip
        self._queue.register_box(group.jid, group.folder, is_task=task is not None or single_turn)
        tally = spending.tally(group.jid)
        emitted_result = False

        async def watch(event: Event) -> None:
            nonlocal emitted_result
            emitted_result = emitted_result or isinstance(event, ResultEvent)
            await on_event(event)

        try:
            attempt = 0
            while True:
                result = await self._run_turn_once(group, run_input, watch, session_mode, revision, request_id,
                                                   accepted_at, spec, single_turn, tally, errors_as_results,
                                                   turn.on_box, workspace)  # fmt: skip
                retry = retry_class(result, emitted_result)
                if retry is None or attempt >= self.retry_policy.max_retries:
                    break
                attempt += 1
                delay = self.retry_policy.delay(attempt)
                self._hub.emit("run.retry", jid=group.jid, folder=group.folder, attempt=attempt, retry_class=retry,
                               delay_s=round(delay, 3), error=result.error)  # fmt: skip
                await asyncio.sleep(delay)  # the back-off itself, not synchronisation
                # Each attempt is a run of its own in the run ledger (a new box, a new journal).
                turn.failed(f"retried after {retry}: {result.error}")
                turn = begin_run()
                spec = dataclasses.replace(spec, env={**spec.env, **turn.journal_env})
        except UnsafePath as exc:
            self._refused(exc, "run", jid=group.jid, folder=group.folder)
            turn.failed(str(exc))
            self._hub.emit(
                "run.error", jid=group.jid, folder=group.folder, run_id=turn.run_id, error=str(exc)
            )
            return TurnResult.failed(str(exc), request_id=request_id)
        except BaseException as exc:
            turn.failed(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if auth is not None:
                self._actions_server.revoke_token(auth.token)
        # Keyed by the run that holds the final (the last attempt's): recorded again, it replaces.
        await spending.after(group.jid, group.folder, turn.run_id, tally, result, backend.type)
        if result.status == "success" and pending_handoff and revision == self.backend_revision:
            self.store.clear_handoff(group.folder)
        self._settle_run(turn, result, chat=deliver is not None)
        if result.status == "error":  # the turn's failure, after its retries, with the reason
            self._hub.emit("run.error", jid=group.jid, folder=group.folder, run_id=turn.run_id,
                           error=result.error or "the run ended without an answer")  # fmt: skip
        return result

    @staticmethod
    def _settle_run(turn: LedgerTurn, result: TurnResult, *, chat: bool) -> None:
        """The ledger's end of a turn whose final did not already go to a chat: a caller's result is
        delivered by returning it; an error is the run's failure."""
        if turn.has_final:
            return
        usage = result.usage.model_dump() if result.usage is not None else None
        if result.status == "success" and not chat:
            if turn.final(status="success", text=result.result, usage=usage, session_id=result.session_id):
                turn.delivered()
        else:
            turn.failed(result.error or "the run ended without an answer")

    async def _run_turn_once(self, group: RegisteredGroup, run_input: RunnerInput, on_event: TurnEventHandler,
                             session_mode: str, revision: int, request_id: str | int | None,
                             accepted_at: float | None, spec: BoxSpec, single_turn: bool, tally: Any,
                             errors_as_results: bool, on_box: Callable[[str], None],
                             workspace: Path | None = None) -> TurnResult:  # fmt: skip
        return await self._platform.placement.run_turn(
            GroupKey(self.id, group.folder), run_input,
            self._book if session_mode != "none" else None, on_event=on_event,
            resume=session_mode == "resume", keep_session=lambda: revision == self.backend_revision,
            request_id=request_id, accepted_at=accepted_at,
            workspace=workspace or self.groups_dir / group.folder, ipc_dir=self.ipc_root / group.folder,
            agent_home=self.paths.sessions_dir(group.folder),
            timeout=self._platform.box_timeout, idle_timeout=self._platform.idle_timeout, spec=spec,
            single_turn=single_turn, errors_as_results=errors_as_results, on_box=on_box, tally=tally,
        )  # fmt: skip

    def _extra_mounts(self, group: RegisteredGroup) -> list[Any]:
        """The group's additional mounts that the agent's allowlist permits; the rest are logged."""
        from agentlite.platform.mounts import ExtraMount, check_extra_mount

        allowlist = (
            MountAllowlist.model_validate(self._record.mount_allowlist)
            if self._record.mount_allowlist
            else None
        )
        volumes = []
        for raw in (group.container_config or {}).get("additional_mounts", []):
            try:
                volumes.append(
                    check_extra_mount(ExtraMount.model_validate(raw), allowlist, is_main=group.is_main)
                )
            except (ConfigError, ValueError) as exc:
                log.warning("group %s: %s", group.folder, exc)
        return volumes

    async def _credential_env(self) -> dict[str, str]:
        if self._credentials is None:
            return {}
        values = self._credentials()
        if asyncio.iscoroutine(values):
            values = await values
        return {str(k): str(v) for k, v in dict(values).items()}

    def _emit_sdk(self, group: RegisteredGroup, event: SdkMessageEvent) -> None:
        for name, data in agent_events(event, group.jid):
            self._hub.emit(name, **data)

    def _write_snapshots(self, group: RegisteredGroup) -> None:
        from agentlite.platform.ipc import write_snapshots

        registered = set(self._groups)
        chats = [
            {"jid": c["jid"], "name": c.get("name") or c["jid"], "last_activity": c.get("last_message_time"),
             "is_registered": c["jid"] in registered}
            for c in self.store.list_chats()
            if c.get("is_group") and c["jid"] != "__group_sync__"
        ]  # fmt: skip
        tasks = self.store.list_tasks()
        key = json.dumps([[t.model_dump() for t in tasks], chats, group.is_main], sort_keys=True, default=str)
        if (
            self._snapshots.get(group.folder) == key
            and (self.ipc_root / group.folder / "current_tasks.json").exists()
        ):
            return  # unchanged since the last run of this group
        write_snapshots(self.ipc_root, group.folder, group.is_main, tasks, chats)
        self._snapshots[group.folder] = key

    async def _run_task(self, task: Task) -> str | None:
        """The scheduler's runner: one task run in the group's box; the result text, or raises."""
        group = next((g for g in self._groups.values() if g.folder == task.group_folder), None)
        if group is None:
            raise AgentliteError(f"group `{task.group_folder}` not found")
        results: list[str] = []

        async def deliver(text: str) -> None:
            results.append(text)
            if strip_internal(text):
                await self.send_message(group.jid, text)

        outcome = await self._run_turn(group, task.prompt, deliver, task=task)
        if outcome.status == "error":
            raise AgentliteError("the task's run failed")
        return results[-1] if results else None


def _check_skill(path: Path) -> Path:
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"Skill source `{path}` is not a directory")
    if not (path / "SKILL.md").is_file():
        raise ConfigError(f"Skill directory `{path}` is missing SKILL.md")
    return path


__all__ = ["Agent", "MountAllowlist"]
