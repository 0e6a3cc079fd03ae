"""``agentlite serve``: agents, channels, groups and backends from a TOML file, run until SIGTERM.

Example ``agentlite.toml``::

    workdir = "./agentlite-data"        # relative to this file
    timezone = "Europe/Berlin"
    max_concurrent = 5
    adopt_runs = true                   # a restart adopts live boxes of unfinished turns (false: reap)

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
A bad file is refused before anything starts, with one error naming the file and the key.
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
    model_config = ConfigDict(extra="forbid")


class ChannelConfig(_Strict):
    type: Literal["telegram", "terminal", "jsonl"]
    #: Telegram: the variable holding the bot token (never put the token itself in the file).
    token_env: str | None = None
    base_url: str | None = None


class GroupConfig(_Strict):
    jid: str
    name: str
    folder: str
    trigger: str | None = None
    is_main: bool = False
    requires_trigger: bool = True

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str) -> str:
        return check_group_folder(value)


class AgentConfig(_Strict):
    name: str
    assistant_name: str = "Andy"
    backend: BackendConfig = Field(default_factory=BackendConfig)
    instructions: str | None = None
    #: The agent's box network (none, egress, allowlist, host); unset keeps what the agent has.
    network: Literal["none", "egress", "allowlist", "host"] | None = None
    allow_net: list[str] = []
    #: Peer ACP agents the agent's boxes may delegate to (see :mod:`agentlite.platform.acp_peers`).
    acp_peers: list[str | dict[str, Any]] = []
    acp_permissions: Literal["deny", "allow"] = "deny"
    channels: list[ChannelConfig] = []
    groups: list[GroupConfig] = []

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_agent_name(value)


class ServiceConfig(_Strict):
    #: Relative paths are taken from the config file's folder; unset means $AGENTLITE_WORKDIR or
    #: ~/.local/share/agentlite/platform, the folder the other CLI commands use.
    workdir: str | None = None
    timezone: str | None = None
    runtime: Literal["auto", "boxlite", "sandbox"] | None = None
    max_concurrent: int = Field(default=5, ge=1)
    box_timeout: float = Field(default=1800.0, gt=0)
    idle_timeout: float = Field(default=1800.0, gt=0)
    #: Adopt the live boxes of turns a crashed earlier service left (unset: $AGENTLITE_ADOPT_RUNS, else on).
    adopt_runs: bool | None = None
    agents: list[AgentConfig] = []


_ENV_OVERRIDES = {
    "TZ": ("timezone", str),
    "MAX_CONCURRENT_CONTAINERS": ("max_concurrent", int),
    "CONTAINER_TIMEOUT": ("box_timeout", lambda v: int(v) / 1000),
    "IDLE_TIMEOUT": ("idle_timeout", lambda v: int(v) / 1000),
    "AGENTLITE_RUNTIME": ("runtime", str),
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
    for var, (key, convert) in _ENV_OVERRIDES.items():
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
                                      idle_timeout=config.idle_timeout, adopt_runs=config.adopt_runs)  # fmt: skip
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
