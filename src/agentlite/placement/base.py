"""The placement interface and its settings (:mod:`agentlite.placement.choice` opens one)."""

from __future__ import annotations

import abc
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlite.core.errors import ConfigError

if TYPE_CHECKING:
    from agentlite.platform.adoption import RunDecision
    from agentlite.platform.ledger import RunLedger, RunRecord
    from agentlite.run.protocol import Event, RunnerInput
    from agentlite.run.turn import GroupKey, SessionStore, TurnResult

PLACEMENT_NAMES = ("local", "ray")
ENV_PLACEMENT = "AGENTLITE_PLACEMENT"
ENV_RAY_ADDRESS = "AGENTLITE_RAY_ADDRESS"
#: The Ray namespace the boxes' actors are named in (``agentlite/<agent>/<group>/<run>``).
DEFAULT_NAMESPACE = "agentlite"
#: The folder on each node under which that node keeps its boxes and their ownership records.
DEFAULT_NODE_ROOT = "/tmp/agentlite-nodes"


@dataclass(frozen=True)
class PlacementConfig:
    """How boxes are placed. ``kind``: ``local`` or ``ray``; the rest matters for ``ray`` only."""

    kind: str = "local"
    #: The cluster to join (``HOST:PORT`` of its head, or ``auto``); unset: $AGENTLITE_RAY_ADDRESS, else ``auto``.
    ray_address: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    #: Most boxes the host places on one node at once: one number for every node, or a map from a
    #: node's id (or a prefix of it) or its address to that node's number (``*``: the others'). A
    #: node never gets more than its ``box_slots``; unset: as many as the node's ``box_slots``.
    node_slots: int | Mapping[str, int] | None = None
    #: The node-local folder for boxes and ownership records (each node uses ``<node_root>/<node id>``).
    node_root: str = DEFAULT_NODE_ROOT
    #: The box runtime each node uses (``auto``, ``sandbox`` or ``boxlite``); unset: the node's own choice.
    node_runtime: str | None = None
    #: The nodes see the host's paths (the same machine, or a folder shared at the same path): a
    #: group's files stay there. Unset: each group's files live on its node and are copied on a move.
    shared_folder: bool = False

    def __post_init__(self) -> None:
        if self.kind not in PLACEMENT_NAMES:
            raise ConfigError(f"unknown placement `{self.kind}`; choose one of {', '.join(PLACEMENT_NAMES)}")
        mapped = isinstance(self.node_slots, Mapping)
        slots = self.node_slots if isinstance(self.node_slots, Mapping) else {"*": self.node_slots}
        for node, count in slots.items():
            where = f" for `{node}`" if mapped else ""
            if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
                raise ConfigError(f"node_slots must be at least 1{where}, got {count!r}")
            if not str(node).strip():
                raise ConfigError("node_slots names an empty node")
        if not self.namespace.strip():
            raise ConfigError("the Ray namespace must not be empty")
        if not Path(self.node_root).is_absolute():
            raise ConfigError(f"node_root `{self.node_root}` must be an absolute path")
        if self.ray_address is not None and not self.ray_address.strip():
            raise ConfigError("ray_address must not be empty (leave it unset for `auto`)")

    def slots_of(self, node_id: str, address: str, box_slots: int) -> int:
        """How many boxes this host places on the node at once (never more than its ``box_slots``)."""
        if self.node_slots is None:
            return box_slots
        if not isinstance(self.node_slots, Mapping):
            return min(self.node_slots, box_slots)
        named = [count for key, count in self.node_slots.items() if key == address or node_id.startswith(key)]
        chosen = named[0] if named else self.node_slots.get("*")
        return box_slots if chosen is None else min(chosen, box_slots)

    @classmethod
    def choose(
        cls, kind: str | None = None, *, ray_address: str | None = None, **options: Any
    ) -> PlacementConfig:
        """``kind``, else $AGENTLITE_PLACEMENT, else ``ray`` when an address is given, else ``local``."""
        address = ray_address if ray_address is not None else os.environ.get(ENV_RAY_ADDRESS) or None
        chosen = kind or os.environ.get(ENV_PLACEMENT) or ("ray" if ray_address is not None else "local")
        return cls(kind=chosen.strip().lower(), ray_address=address, **options)


class Placement(abc.ABC):
    """Runs a group's turns in a box somewhere, and finds the runs an earlier host left there."""

    #: ``local`` or ``ray``.
    name: str

    @abc.abstractmethod
    async def run_turn(self, key: GroupKey, run_input: RunnerInput, sessions: SessionStore | None,
                       **options: Any) -> TurnResult:  # fmt: skip
        """One turn of ``key``'s group: :func:`agentlite.run.turn.run_turn`'s contract, options included."""

    @abc.abstractmethod
    async def decide_runs(self, ledger: RunLedger, ipc_root: Path, *, agent_id: str,
                          enabled: bool = True) -> list[RunDecision]:  # fmt: skip
        """Judge the agent's unfinished runs at its start (:func:`agentlite.platform.adoption.decide_runs`)."""

    @abc.abstractmethod
    async def follow_adopted(self, decision: RunDecision, *, ledger: RunLedger, ipc_root: Path,
                             deliver: Callable[[str], Awaitable[bool]],
                             on_event: Callable[[Event], None] | None = None,
                             timeout: float = 1800.0) -> RunRecord | None:  # fmt: skip
        """Follow an adopted run to its final, write it (fenced), deliver it once, close its box."""

    def subscribe(self, agent_id: str, emit: Callable[..., Any]) -> Callable[[], None]:
        """Send the agent's placement events (``placement.placed``, ``placement.moved``) to
        ``emit(name, **data)``; returns the unsubscriber. Local boxes have none."""
        return lambda: None

    async def reconcile(self, agent_id: str, decisions: list[RunDecision]) -> list[str]:
        """After :meth:`decide_runs`: remove what runs for ``agent_id`` but is no adopted run's.
        Returns what was removed. Local boxes are the orphan sweep's, so this does nothing here."""
        return []

    async def describe(self) -> dict[str, Any]:
        """What ``agentlite doctor`` shows about where boxes go."""
        return {"placement": self.name}

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Let go of the placement's own resources (boxes of live runs are the agents' to stop)."""
