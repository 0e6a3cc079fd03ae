"""What an agent needs of the platform that holds it: the shared box runtime and its home, the
platform's limits and clock, and the registry its settings are persisted in.

:class:`~agentlite.platform.app.AgentLite` provides it; the agent is typed against this interface, so
``_agent`` does not import ``_platform`` (which imports ``_agent``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from agentlite.box.base import BoxRuntime
from agentlite.placement.base import Placement
from agentlite.platform.registry import Registry


class AgentHost(Protocol):
    runtime: BoxRuntime
    box_home: Path
    #: Where the agents' turns run their boxes (``local``: with ``runtime``; ``ray``: on cluster nodes).
    placement: Placement
    registry: Registry
    timezone: str
    max_concurrent: int
    box_timeout: float
    idle_timeout: float
    retry_base: float
    scheduler_poll_interval: float
    ipc_poll_interval: float
