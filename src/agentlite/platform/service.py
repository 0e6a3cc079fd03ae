"""``agentlite serve``: agents, channels, groups and backends from a TOML file, run until SIGTERM.

Example ``agentlite.toml``::

    workdir = "./agentlite-data"        # relative to this file
    timezone = "Europe/Berlin"
    max_concurrent = 5
    adopt_runs = true                   # a restart adopts live boxes of unfinished turns (false: reap)
    placement = "local"                 # or "ray": boxes on the nodes of a Ray cluster (the `ray` extra)
    ray_address = "10.0.0.5:6379"       # the cluster's head (placement "ray"; `serve --ray-address`)
    node_slots = 4                      # most boxes this host places on one node (default: its box_slots)

    [[agents]]
    name = "main"
    assistant_name = "Andy"
    backend = { type = "codex", model = "gpt-5" }
    network = "allowlist"               # none, egress (default), allowlist or host
    allow_net = ["api.openai.com", "*.githubusercontent.com"]
    acp_peers = ["codex", { name = "reviewer", command = "claude-agent-acp" }]  # each in its own box
    acp_permissions = "deny"            # or "allow" (the peers' permission requests, in their box)

    [[agents.channels]]
    type = "telegram"
    token_env = "TELEGRAM_BOT_TOKEN"

    [[agents.groups]]
    jid = "tg:123456"
    name = "Me"
    folder = "main"
    is_main = true

Environment overrides (the reference's variables): ``TZ``, ``MAX_CONCURRENT_CONTAINERS``,
``CONTAINER_TIMEOUT`` and ``IDLE_TIMEOUT`` (milliseconds), ``AGENTLITE_RUNTIME``.
A bad file is refused before anything starts, with one error naming the file and the key. Every
key is documented in ``docs/config.md``, generated from these models (:mod:`agentlite.platform.config_doc`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentlite.box.network import parse_allow_net
from agentlite.core.errors import ConfigError, describe_validation_error
from agentlite.core.names import check_agent_name, check_group_folder
from agentlite.platform.acp_peers import resolve_peers
from agentlite.run.protocol import BackendConfig

log = logging.getLogger("agentlite.service")


class _Strict(BaseModel):
    # Each field's docstring is its description: docs/config.md is generated from them
    # (agentlite.platform.config_doc), so the documented keys are the model's keys.
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class ChannelConfig(_Strict):
    """A channel the agent talks through (`[[agents.channels]]`)."""

    type: Literal["telegram", "terminal", "jsonl"]
    """`telegram` (a bot), `terminal` (stdin/stdout of `serve`) or `jsonl` (JSON lines on stdin/stdout)."""
    token_env: str | None = None
    """Telegram: the environment variable holding the bot token, never the token itself (unset: `TELEGRAM_BOT_TOKEN`)."""
    base_url: str | None = None
    """Telegram: the Bot API's base URL (unset: Telegram's own)."""


class GroupConfig(_Strict):
    """A chat the agent answers in (`[[agents.groups]]`); registered at start when new."""

    jid: str
    """The chat's id in its channel, for example `tg:123456`."""
    name: str
    """A display name for the group."""
    folder: str
    """The group's folder under the agent's `groups/` (letters, digits, `_`, `-`; 1 to 64): its files and memory."""
    trigger: str | None = None
    """The word that wakes the agent in this group (unset: `@<assistant_name>`)."""
    is_main: bool = False
    """The main group: needs no trigger and may message any chat, manage every task and register groups."""
    requires_trigger: bool = True
    """Whether a non-main group needs the trigger word to wake the agent."""

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str) -> str:
        return check_group_folder(value)


class AgentConfig(_Strict):
    """One agent (`[[agents]]`): created at the first start, updated to match the file at each."""

    name: str
    """The agent's name (letters, digits, `_`, `-`, `.`; 1 to 64)."""
    assistant_name: str = "Andy"
    """The assistant's name in chats, and its trigger word (`@Andy`)."""
    backend: BackendConfig = Field(default_factory=BackendConfig)
    """Which agent CLI runs its turns and how it reaches its model (the table below)."""
    instructions: str | None = None
    """Instructions every box of the agent gets (its `CLAUDE.md` / `AGENTS.md`)."""
    network: Literal["none", "egress", "allowlist", "host"] | None = None
    """The agent's box network (unset: what the agent has, `egress` for a new one)."""
    allow_net: list[str] = []
    """With `network = "allowlist"`: `example.com`, `*.example.com` or `HOST:PORT` entries."""
    acp_peers: list[str | dict[str, Any]] = []
    """Peer ACP agents its boxes may delegate to, each run in its own box: `"codex"`, `"claude-code"`, `"auto"` or `{name, command, args, env, description, base_url, model}`."""
    acp_permissions: Literal["deny", "allow"] = "deny"
    """Whether the peers' permission requests are denied or allowed (inside their box)."""
    channels: list[ChannelConfig] = []
    """The agent's channels (`[[agents.channels]]`)."""
    groups: list[GroupConfig] = []
    """The agent's groups (`[[agents.groups]]`)."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_agent_name(value)


class ServiceConfig(_Strict):
    """The file's top level."""

    workdir: str | None = None
    """The platform's folder, relative to the config file's (unset: `$AGENTLITE_WORKDIR`, else `~/.local/share/agentlite/platform`, the folder the other commands use)."""
    timezone: str | None = None
    """The IANA time zone of cron tasks and budget days (unset: `$TZ`, else the machine's, else UTC)."""
    runtime: Literal["auto", "boxlite", "sandbox"] | None = None
    """The box runtime (unset: `$AGENTLITE_RUNTIME`, else `auto`)."""
    max_concurrent: int = Field(default=5, ge=1)
    """Boxes running at once, over all groups."""
    box_timeout: float = Field(default=1800.0, gt=0)
    """Seconds a box may run before it is stopped."""
    idle_timeout: float = Field(default=1800.0, gt=0)
    """Seconds a box waits for a follow-up message after a turn before it ends."""
    adopt_runs: bool | None = None
    """Adopt the live boxes of turns a crashed earlier service left (unset: `$AGENTLITE_ADOPT_RUNS`, else on); `false` reaps them and runs the message again."""
    placement: Literal["local", "ray"] | None = None
    """Where boxes run: `local` (this machine) or `ray` (the nodes of a Ray cluster; the `ray` extra). Unset: `$AGENTLITE_PLACEMENT`, else `ray` when `ray_address` is set, else `local`."""
    ray_address: str | None = None
    """The Ray cluster's head, `HOST:PORT` or `auto` (placement `ray`; `serve --ray-address` overrides it)."""
    node_slots: int | dict[str, int] | None = None
    """Most boxes this host places on one Ray node at once: a number for every node, or a table from a node's id (or its prefix) or address to its number (`"*"`: the others); never more than the node's `box_slots` (unset: its `box_slots`)."""
    shared_folder: bool = False
    """The Ray nodes see this host's paths (one machine, or a folder shared at the same path), so a group's files stay there; off: each group's files live on its node and are copied through the host when it moves."""
    agents: list[AgentConfig] = []
    """The agents (`[[agents]]`)."""

    def placement_config(self) -> Any:
        """The :class:`~agentlite.placement.PlacementConfig` these settings ask for."""
        from agentlite.placement import PlacementConfig

        return PlacementConfig.choose(self.placement, ray_address=self.ray_address, node_slots=self.node_slots,
                                      shared_folder=self.shared_folder)  # fmt: skip


#: Environment variables (the reference's names) that win over the file: ``{variable: (key, convert,
#: what the value is)}``.
ENV_OVERRIDES: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "TZ": ("timezone", str, "an IANA time zone name"),
    "MAX_CONCURRENT_CONTAINERS": ("max_concurrent", int, "a count"),
    "CONTAINER_TIMEOUT": ("box_timeout", lambda v: int(v) / 1000, "milliseconds"),
    "IDLE_TIMEOUT": ("idle_timeout", lambda v: int(v) / 1000, "milliseconds"),
    "AGENTLITE_RUNTIME": ("runtime", str, "`auto`, `boxlite` or `sandbox`"),
}


def load_config(path: Path, env: dict[str, str] | None = None) -> ServiceConfig:
    """Read and validate ``path`` plus environment overrides; :class:`ConfigError` names file and key."""
    env = dict(os.environ) if env is None else env
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file `{path}` does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file `{path}` is not valid TOML: {exc}") from None
    for var, (key, convert, _what) in ENV_OVERRIDES.items():
        if env.get(var):
            try:
                data[key] = convert(env[var])
            except ValueError:
                raise ConfigError(f"environment variable `{var}` has a bad value `{env[var]}`") from None
    try:
        config = ServiceConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"config file `{path}`: {describe_validation_error(exc, first_only=True)}"
        ) from None
    for i, agent_config in enumerate(config.agents):
        if agent_config.allow_net and agent_config.network not in (None, "allowlist"):
            raise ConfigError(f'config file `{path}`: `agents[{i}].allow_net` needs network = "allowlist"')
        try:
            parse_allow_net(agent_config.allow_net)
        except ConfigError as exc:
            raise ConfigError(f"config file `{path}`: `agents[{i}].allow_net`: {exc}") from None
        try:
            resolve_peers(agent_config.acp_peers)
        except ConfigError as exc:
            raise ConfigError(f"config file `{path}`: `agents[{i}].acp_peers`: {exc}") from None
    names = [a.name for a in config.agents]
    if len(set(names)) != len(names):
        raise ConfigError(f"config file `{path}`: `agents`: agent names must be unique, got {names}")
    if config.workdir is None:
        from agentlite.core.config import default_workdir

        config.workdir = str(default_workdir())
    elif not Path(config.workdir).is_absolute():
        config.workdir = str((path.parent / config.workdir).resolve())
    return config


def channel_factory(channel: ChannelConfig, assistant_name: str) -> Any:
    if channel.type == "telegram":
        from agentlite.channels.telegram import telegram

        var = channel.token_env or "TELEGRAM_BOT_TOKEN"
        token = os.environ.get(var)
        if not token:
            raise ConfigError(f"telegram channel: environment variable `{var}` (token_env) is not set")
        return telegram(token, assistant_name=assistant_name, base_url=channel.base_url)
    if channel.type == "terminal":
        from agentlite.channels.terminal import TerminalChannel

        return lambda config: TerminalChannel(config, assistant_name=assistant_name)
    from agentlite.channels.jsonl import JsonlChannel

    return lambda config: JsonlChannel(config)


async def serve(config: ServiceConfig, *, stop: asyncio.Event | None = None,
                beside: Callable[[Any, asyncio.Event], Awaitable[None]] | None = None) -> None:  # fmt: skip
    """Start every configured agent and run until ``stop`` is set (or SIGTERM/SIGINT).

    ``beside(platform, stop)`` runs next to the agents once they are started (a front such as the
    dashboard) and must return soon after ``stop`` is set; if it fails, the service stops too."""
    import agentlite

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    platform = await agentlite.create(workdir=config.workdir, timezone=config.timezone, runtime=config.runtime,
                                      max_concurrent=config.max_concurrent, box_timeout=config.box_timeout,
                                      idle_timeout=config.idle_timeout, adopt_runs=config.adopt_runs,
                                      placement=config.placement_config())  # fmt: skip
    async with platform:
        for spec in config.agents:
            channels = {
                f"{c.type}{i}": channel_factory(c, spec.assistant_name) for i, c in enumerate(spec.channels)
            }
            agent = await platform.get_or_create_agent(spec.name, assistant_name=spec.assistant_name,
                                                       backend=spec.backend, channels=channels)  # fmt: skip
            if spec.instructions is not None and spec.instructions != agent.get_instructions():
                agent.set_instructions(spec.instructions)
            if spec.network is not None or spec.allow_net:
                wanted = {"mode": spec.network or "allowlist", "allow_net": list(spec.allow_net)}
                if agent.get_network() != wanted:
                    agent.set_network(wanted["mode"], wanted["allow_net"])
            if agent.get_backend() != spec.backend:
                await agent.set_backend(spec.backend)
            if spec.acp_peers:
                agent.set_acp_peers(spec.acp_peers, permissions=spec.acp_permissions)
            await agent.start()
            known = agent.registered_groups()
            for group in spec.groups:
                if group.jid not in known:
                    agent.register_group(group.jid, name=group.name, folder=group.folder, trigger=group.trigger,
                                         is_main=group.is_main, requires_trigger=group.requires_trigger)  # fmt: skip
            log.info("agent %s started (id %s, backend %s)", spec.name, agent.id, agent.get_backend().type)
        front = None if beside is None else asyncio.create_task(beside(platform, stop))
        if front is not None:
            front.add_done_callback(lambda _: stop.set())
        await stop.wait()
        log.info("shutting down")
        if front is not None:
            await front  # its error, if any, is the service's
