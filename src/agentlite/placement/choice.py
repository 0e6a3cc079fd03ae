"""Opening the placement the settings ask for: ``local``, or ``ray`` (imported only then)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from agentlite.placement.base import Placement, PlacementConfig

if TYPE_CHECKING:
    from agentlite.box.base import BoxRuntime


def open_placement(config: PlacementConfig, runtime: BoxRuntime, box_home: Path) -> Placement:
    """The placement ``config`` asks for; ``ray`` imports Ray here (an optional extra) and joins the cluster."""
    if config.kind == "local":
        from agentlite.placement.local import LocalPlacement

        return LocalPlacement(runtime, box_home)
    from agentlite.placement.ray_cluster import require_ray

    require_ray()
    from agentlite.placement.ray_placement import RayPlacement

    return RayPlacement(config, runtime, box_home)
