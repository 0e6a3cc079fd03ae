"""The platform: a registry of agents under one work folder, and the box runtime they share.

    async with await agentlite.create(workdir="./data") as platform:
        agent = await platform.get_or_create_agent("main", assistant_name="Andy", backend={"type": "codex"})
        await agent.start()

Layout (:class:`agentlite.platform.layout.PlatformPaths`): ``<workdir>/store/agentlite.db`` (the
registry), ``<workdir>/.boxlite`` (box home: boxes and their ownership records),
``<workdir>/agents/<name>`` (each agent's default work folder).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agentlite.box import BoxRuntime
from agentlite.box.lifecycle import cleanup_orphans
from agentlite.core.errors import AgentliteError, ConfigError
from agentlite.core.names import AGENT_NAME, check_agent_name, child_path
from agentlite.image.guest_root import open_configured_runtime
from agentlite.placement.base import Placement, PlacementConfig
from agentlite.placement.choice import open_placement
from agentlite.platform.adoption import adoption_enabled
from agentlite.platform.agent import Agent
from agentlite.platform.layout import PlatformPaths
from agentlite.platform.registry import AgentRecord, Registry, normalize_backend

log = logging.getLogger("agentlite.platform")

_PERSISTED = ("assistant_name", "backend", "workdir", "mount_allowlist")


def resolve_timezone(name: str | None) -> str:
    """``name``, else ``$TZ``, else the system zone, else UTC; an invalid name falls back to UTC."""
    candidates = [name, os.environ.get("TZ")]
    try:
        candidates.append(Path("/etc/timezone").read_text().strip())
    except OSError:
        pass
    for candidate in candidates:
        if not candidate:
            continue
        try:
            ZoneInfo(candidate)
            return candidate
        except (ZoneInfoNotFoundError, ValueError):
            log.warning("time zone %r is not a valid IANA name; ignoring it", candidate)
    return "UTC"


class AgentLite:
    """The platform; get one with :func:`agentlite.create`."""

    def __init__(self, workdir: Path, *, timezone: str, runtime: BoxRuntime, max_concurrent: int,
                 box_timeout: float, idle_timeout: float, scheduler_poll_interval: float = 60.0,
                 box_home: Path | None = None, adopt_runs: bool = True, ipc_poll_interval: float = 1.0,
                 placement: Placement | None = None) -> None:  # fmt: skip
        self.workdir = workdir
        #: Where its registry, box home and agents' folders are.
        self.paths = PlatformPaths(workdir)
        #: Whether a starting agent adopts the live boxes of runs its crashed host left (else reaps them).
        self.adopt_runs = adopt_runs
        #: Where boxes and their ownership records live (``<workdir>/.boxlite`` unless given).
        self.box_home = box_home or self.paths.box_home
        self.timezone = timezone
        self.runtime = runtime
        #: Where turns run their boxes: this machine (``local``, the default) or a Ray cluster's nodes.
        self.placement = placement or open_placement(PlacementConfig(), runtime, self.box_home)
        self.max_concurrent = max(1, max_concurrent)
        self.box_timeout = box_timeout
        self.idle_timeout = idle_timeout
        self.scheduler_poll_interval = scheduler_poll_interval
        #: Seconds between looks at the boxes' IPC folders (a turn's own messages are also taken
        #: when its final arrives, before the final is delivered).
        self.ipc_poll_interval = ipc_poll_interval
        #: First retry delay of a failed group run (doubles up to 5 retries); the reference's 5 s.
        self.retry_base = 5.0
        self.registry = Registry(self.paths.registry)
        self._agents: dict[str, Agent] = {}
        for record in self.registry.list():  # restored, not started
            self._agents[record.name] = Agent(self, record)

    @property
    def agents(self) -> dict[str, Agent]:
        return dict(self._agents)

    def get_agent(self, name: str) -> Agent | None:
        return self._agents.get(name)

    async def create_agent(self, name: str, *, assistant_name: str = "Andy", backend: Any = None,
                           workdir: str | Path | None = None, mount_allowlist: dict[str, Any] | None = None,
                           instructions: str | None = None, mcp_servers: dict[str, dict[str, Any]] | None = None,
                           channels: dict[str, Any] | None = None,
                           credentials: Callable[[], Any] | None = None, agent_id: str | None = None) -> Agent:  # fmt: skip
        """Create and persist a new agent (not started). Raises if the name exists or is invalid.

        ``agent_id`` (what its boxes are named by) is drawn at random unless given."""
        check_agent_name(name)  # before anything is created: the name becomes `agents/<name>`
        if name in self._agents or self.registry.get(name) is not None:
            raise ConfigError(f"Agent `{name}` already exists")
        folder = Path(workdir).resolve() if workdir else child_path(self.paths.agents_dir, name, AGENT_NAME)
        record = self.registry.create(name, workdir=str(folder), assistant_name=assistant_name,
                                      backend=normalize_backend(backend), mount_allowlist=mount_allowlist,
                                      instructions=instructions, mcp_servers=mcp_servers or None,
                                      agent_id=agent_id)  # fmt: skip
        try:
            agent = Agent(self, record, channels=channels, credentials=credentials)
        except Exception:
            self.registry.delete(name)
            raise
        self._agents[name] = agent
        return agent

    async def get_or_create_agent(self, name: str, **options: Any) -> Agent:
        """The agent ``name``, created if needed; persisted options that differ are an error."""
        agent = self._agents.get(name)
        if agent is None:
            return await self.create_agent(name, **options)
        self._check_conflicts(agent.record, options)
        for key, factory in (options.get("channels") or {}).items():
            await agent.add_channel(key, factory)
        if options.get("credentials") is not None:
            agent.set_credentials(options["credentials"])
        if "instructions" in options:
            agent.set_instructions(options["instructions"])
        if "mcp_servers" in options:
            agent.set_mcp_servers(options["mcp_servers"])
        return agent

    @staticmethod
    def _check_conflicts(record: AgentRecord, options: dict[str, Any]) -> None:
        name = record.name
        if "assistant_name" in options and options["assistant_name"] != record.assistant_name:
            raise ConfigError(f"Agent `{name}` already exists with assistant name `{record.assistant_name}`")
        if "backend" in options:
            wanted = normalize_backend(options["backend"])
            if (wanted.type, wanted.model) != (record.backend.type, record.backend.model):
                raise ConfigError(f"Agent `{name}` already exists with backend `{record.backend.type}`"
                                  + (f" model `{record.backend.model}`" if record.backend.model else ""))  # fmt: skip
        if options.get("workdir") is not None and str(Path(options["workdir"]).resolve()) != record.workdir:
            raise ConfigError(f"Agent `{name}` already exists with workdir `{record.workdir}`")
        if "mount_allowlist" in options and options["mount_allowlist"] != record.mount_allowlist:
            raise ConfigError(f"Agent `{name}` already exists with a different mount allowlist")

    async def delete_agent(self, name: str) -> bool:
        """Stop the agent, force-remove all its boxes (live ones too), delete its folder and row.

        An invalid name raises :class:`~agentlite.core.names.InvalidName` and nothing is removed.
        """
        check_agent_name(name)
        agent = self._agents.get(name)
        record = self.registry.get(name)
        if agent is None and record is None:
            return False
        folder = Path(agent.workdir if agent else record.workdir)  # type: ignore[union-attr]
        registry_file = self.paths.registry.resolve()
        if folder.resolve() in registry_file.parents:
            raise AgentliteError(
                f"Refusing to delete agent workdir `{folder}` because it contains the shared registry"
            )
        if agent is not None:
            await agent.stop()
        agent_id = agent.id if agent else record.agent_id  # type: ignore[union-attr]
        decisions = await cleanup_orphans(self.runtime, self.box_home, agent_id, include_live=True)
        failed = [d for d in decisions if d.error]
        if failed:
            log.warning(
                "agent %s deleted, but boxes could not all be removed: %s", name, [d.name for d in failed]
            )
        shutil.rmtree(folder, ignore_errors=True)
        self._agents.pop(name, None)
        self.registry.delete(name)
        return True

    async def close(self, *, reason: str = "agent stopped", grace: float = 10.0) -> None:
        """Stop every agent, then close the registry. Running boxes get ``grace`` seconds, then are
        stopped and removed; turns cut short end with ``reason`` (see :meth:`Agent.stop`)."""
        for agent in list(self._agents.values()):
            await agent.stop(reason=reason, grace=grace)
        self._agents.clear()
        self.registry.close()
        await self.placement.aclose()
        await self.runtime.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        await self.close()


async def create(*, workdir: str | Path = ".", timezone: str | None = None, runtime: str | None = None,
                 max_concurrent: int = 5, box_timeout: float = 1800.0, idle_timeout: float = 1800.0,
                 scheduler_poll_interval: float = 60.0, adopt_runs: bool | None = None,
                 ipc_poll_interval: float = 1.0, placement: str | PlacementConfig | None = None,
                 ray_address: str | None = None) -> AgentLite:  # fmt: skip
    """Open (or start) a platform in ``workdir``: its registry, box home and restored agents.

    ``placement``: ``local`` (boxes on this machine) or ``ray`` (boxes on the nodes of the Ray
    cluster at ``ray_address``; the ``ray`` extra), or a :class:`PlacementConfig`; unset:
    $AGENTLITE_PLACEMENT, else ``ray`` when an address is given, else ``local``.

    ``adopt_runs``: a starting agent adopts the live boxes of turns its crashed host left running
    (default; env ``AGENTLITE_ADOPT_RUNS=0`` turns it off) instead of reaping them and running the
    message again."""
    folder = Path(workdir).resolve()
    paths = PlatformPaths(folder)
    try:
        paths.store_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"workdir `{folder}` cannot be created: {exc.strerror or exc}") from None
    if max_concurrent < 1:
        raise ConfigError(f"max_concurrent must be at least 1, got {max_concurrent}")
    config = (
        placement
        if isinstance(placement, PlacementConfig)
        else PlacementConfig.choose(placement, ray_address=ray_address)
    )
    box_runtime, choice = open_configured_runtime(paths.box_home, runtime)
    log.info("platform workdir=%s runtime=%s reason=%r placement=%s", folder, choice.name, choice.reason,
             config.kind)  # fmt: skip
    try:
        placed = open_placement(config, box_runtime, paths.box_home)
    except BaseException:
        await box_runtime.aclose()
        raise
    return AgentLite(folder, timezone=resolve_timezone(timezone), runtime=box_runtime, max_concurrent=max_concurrent,
                     box_timeout=box_timeout, idle_timeout=idle_timeout,
                     scheduler_poll_interval=scheduler_poll_interval, ipc_poll_interval=ipc_poll_interval,
                     adopt_runs=adoption_enabled(adopt_runs), placement=placed)  # fmt: skip
