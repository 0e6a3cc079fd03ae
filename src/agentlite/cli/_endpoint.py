"""Which model a CLI run talks to: the user's endpoint, or the embedded offline demo model."""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import AsyncIterator

from agentlite.core.errors import ConfigError, UnknownBackend
from agentlite.run.protocol import BACKEND_TYPES, BackendConfig

DEMO_NOTICE = "no API key or base URL set: answers come from the offline demo model, not a real one"


def backend_config(
    kind: str, model: str | None, base_url: str | None, acp_command: str | None
) -> BackendConfig:
    """Validate the backend options of ``run`` and ``host`` into a :class:`BackendConfig`."""
    if kind not in BACKEND_TYPES:
        raise UnknownBackend(kind, BACKEND_TYPES)
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"base URL `{base_url}` must start with http:// or https://")
    command = shlex.split(acp_command) if acp_command else None
    if kind == "acp" and not command:
        command = ["codex-acp"]
    return BackendConfig(type=kind, model=model, base_url=base_url, command=command)  # type: ignore[arg-type]


def needs_demo(config: BackendConfig) -> bool:
    return config.base_url is None and not os.environ.get(config.key_env())


@contextlib.asynccontextmanager
async def demo_model_if_needed(config: BackendConfig) -> AsyncIterator[str | None]:
    """Yield the demo model's base URL (and serve it meanwhile) when no endpoint is configured."""
    if not needs_demo(config):
        yield None
        return
    from agentlite.offline.model_server import ModelServer

    async with ModelServer(scenario="demo") as server:
        yield server.openai_base_url


def with_base_url(config: BackendConfig, base_url: str | None) -> BackendConfig:
    return config if base_url is None else config.model_copy(update={"base_url": base_url})
