"""Where a group's box runs: ``local`` (this machine, the default) or ``ray`` (a node of a Ray cluster).

The platform hands every turn, every adoption of a run a dead host left, and the start-up
reconcile to one :class:`Placement`; the turn pipeline, the ledger's fencing and the channels are
the same on both. ``ray`` is an optional extra (``pip install agentlite[ray]``): nothing here imports
Ray until a ``ray`` placement is opened.

Layering: placement sits between the turn pipeline and the agent. It uses the box and run layers
and the platform's ledger and adoption rules (:mod:`agentlite.platform.ledger`,
:mod:`agentlite.platform.adoption`); the agent and the platform app use it.
"""

from __future__ import annotations

from agentlite.placement.base import (
    ENV_PLACEMENT,
    ENV_RAY_ADDRESS,
    PLACEMENT_NAMES,
    Placement,
    PlacementConfig,
)
from agentlite.placement.choice import open_placement

__all__ = [
    "ENV_PLACEMENT",
    "ENV_RAY_ADDRESS",
    "PLACEMENT_NAMES",
    "Placement",
    "PlacementConfig",
    "open_placement",
]
