"""Joining a Ray cluster and reading what it offers: nodes, their ``box_slots``, the actors of our boxes.

Each node that may run boxes is started with a ``box_slots`` custom resource (``ray start
--resources '{"box_slots": 4}'``): one box takes one slot, so a full node queues further boxes
instead of overcommitting its cores and memory.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentlite.core.errors import ConfigError, RuntimeUnavailable

log = logging.getLogger("agentlite.placement")

#: The custom resource a box takes on its node (one each).
BOX_SLOTS = "box_slots"
#: Every box actor's name starts with this, then ``<agent id>/<group>/<run token>``.
ACTOR_PREFIX = "agentlite/"


def require_ray() -> None:
    """Raise a clear error when the ``ray`` extra is not installed."""
    if importlib.util.find_spec("ray") is None:
        raise RuntimeUnavailable("ray placement", "the `ray` package is not installed",
                                 "pip install 'agentlite[ray]'")  # fmt: skip


def connect(address: str | None, namespace: str) -> None:
    """Join the cluster at ``address`` (``None``: ``auto``) once per process; a process that already
    joined one (a test's driver, an embedding application) keeps it."""
    import ray

    if ray.is_initialized():
        return
    try:
        ray.init(address=address or "auto", namespace=namespace, log_to_driver=False,
                 logging_level=logging.WARNING)  # fmt: skip
    except ConnectionError as exc:
        raise ConfigError(f"cannot join the Ray cluster at `{address or 'auto'}`: {exc}") from None


def actor_name(agent_id: str, group: str, token: str) -> str:
    return f"{ACTOR_PREFIX}{agent_id}/{group}/{token}"


def agent_prefix(agent_id: str) -> str:
    return f"{ACTOR_PREFIX}{agent_id}/"


def named_actors(namespace: str, prefix: str = ACTOR_PREFIX) -> list[str]:
    """Names of the live named actors in ``namespace`` that start with ``prefix``."""
    import ray

    found = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in found if a["namespace"] == namespace and a["name"].startswith(prefix))


@dataclass(frozen=True)
class NodeView:
    """One alive node as the host sees it."""

    node_id: str
    address: str
    slots: int
    slots_free: int

    @property
    def short(self) -> str:
        return self.node_id[:8]


def box_nodes() -> list[NodeView]:
    """Every alive node that offers ``box_slots``, in a stable order."""
    import ray

    total = {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}
    free: dict[str, float] = {}
    for node_id, node in total.items():
        free[node_id] = node.get("Resources", {}).get(BOX_SLOTS, 0.0)
    try:
        available = ray._private.state.state._available_resources_per_node()  # per node, best effort
        for node_id, resources in available.items():
            if node_id in free:
                free[node_id] = resources.get(BOX_SLOTS, 0.0)
    except Exception:  # an internal API: without it the free count is the total
        pass
    views = [
        NodeView(
            node_id,
            node.get("NodeManagerAddress", "?"),
            int(node["Resources"].get(BOX_SLOTS, 0)),
            int(free.get(node_id, 0)),
        )
        for node_id, node in total.items()
        if node.get("Resources", {}).get(BOX_SLOTS, 0) > 0
    ]
    return sorted(views, key=lambda v: v.node_id)


def alive_node_ids() -> set[str]:
    import ray

    return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}


def describe_cluster(
    address: str | None, namespace: str, slots_of: Callable[[str, str, int], int] | None = None
) -> dict[str, Any]:
    """The cluster for ``agentlite doctor``: each box node with its slots (``host_slots``: how many
    this host places there at once, ``slots_of(node_id, address, box_slots)``; default all), and the
    agentlite version a task placed on it imports (a node with another version runs boxes the host
    may not understand)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    connect(address, namespace)

    @ray.remote(num_cpus=0)
    def version_here() -> str:
        return _package_version()

    nodes = box_nodes()
    refs = {
        v.node_id: version_here.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(v.node_id, soft=False)
        ).remote()
        for v in nodes
    }
    rows = []
    for view in nodes:
        try:
            version = ray.get(refs[view.node_id], timeout=60)
        except Exception as exc:  # a node that cannot import agentlite cannot run boxes
            version = f"unavailable ({type(exc).__name__})"
        host_slots = slots_of(view.node_id, view.address, view.slots) if slots_of is not None else view.slots
        rows.append({"node_id": view.node_id, "address": view.address, "box_slots": view.slots,
                     "box_slots_free": view.slots_free, "host_slots": host_slots,
                     "agentlite": version})  # fmt: skip
    return {"placement": "ray", "namespace": namespace, "nodes": rows,
            "box_actors": len(named_actors(namespace))}  # fmt: skip


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("agentlite")
    except PackageNotFoundError:
        return "unknown"
