"""``ray`` placement: each box run is a named, detached actor on a node of a Ray cluster.

The host keeps what a turn needs of itself (sessions, usage and budgets, the ledger's fencing, the
chat) and hands only the box run to the node: :func:`agentlite.run.turn.run_turn` runs here with a
runner that starts a :class:`~agentlite.placement.ray_actor.BoxActor` and relays its streamed
events. Placement: a group goes to the alive node with the fewest groups (``box_slots`` reserves
one slot per box, so a full node queues) and sticks to it; when its node is gone it moves and the
agent gets a ``placement.moved`` event.

Fencing: every run carries a fresh token; the group's current token is the host's. A run's end that
carries another token (a copy the host superseded, say one stranded by a partition) is refused.
A node lost mid-run surfaces as :class:`BoxLost` ("box lost ..."), which the agent's retry policy
re-runs (a new run in the ledger, a new token, another node), so the chat still gets one reply.

After a host restart :meth:`RayPlacement.decide_runs` finds the actors of the ledger's unfinished
runs by name, takes each run over (a new ledger token) and :meth:`RayPlacement.follow_adopted`
re-reads its journal from offset 0 to the final, delivered once; :meth:`RayPlacement.reconcile`
kills the agent's actors no run holds.

Files: each node keeps its boxes and ownership records in its own ``<node_root>/<node id>``. By
default a group's workspace, agent home and IPC folder live there too
(:mod:`agentlite.placement.group_files`): the host relays the box's IPC requests from the actor's
stream into its own IPC folder (its watcher handles them as before), pushes its writes into the
group's IPC folder (follow-ups, ``_close``, snapshots, ``budget.json``) to the actor, and keeps a
copy of the group's state after every turn (``<box home>/group-copies``). A group that moves gets
that copy unpacked on its new node first (the first turn ever gets the host's own folders), and the
``placement.moved`` event says how many bytes were copied. With ``shared_folder`` the nodes see the
host's paths instead (the same machine, or a folder shared at the same path) and nothing is copied.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from agentlite.box.base import BoxRuntime
from agentlite.core.atomic import write_atomic
from agentlite.core.errors import RunError
from agentlite.placement.base import Placement, PlacementConfig
from agentlite.placement.group_files import GroupPaths, HostIpcMirror, pack_state, safe_name, write_ipc_file
from agentlite.placement.ray_actor import BoxActor
from agentlite.placement.ray_cluster import (
    BOX_SLOTS,
    actor_name,
    agent_prefix,
    box_nodes,
    connect,
    describe_cluster,
    named_actors,
)
from agentlite.platform.adoption import (
    CLOSE_WAIT_SECONDS,
    AdoptedReplay,
    RunDecision,
    finals_before,
    settle_adopted,
)
from agentlite.platform.ledger import RunLedger, RunRecord
from agentlite.run.box_run import RunOutcome
from agentlite.run.protocol import Event, ResultEvent, RunnerInput
from agentlite.run.turn import GroupKey, SessionStore, TurnResult, run_turn

log = logging.getLogger("agentlite.placement")

GroupId = tuple[str, str]
Emit = Callable[..., Any]
#: How long a host waits for a box actor to stop its run cleanly before killing it.
CANCEL_SECONDS = 20.0
#: How often the host pushes its writes into a running group's IPC folder to the node.
MIRROR_POLL_SECONDS = 0.2


class BoxLost(RunError):
    """The box's actor (and so the box) is gone: its node died, was removed, or cannot be reached."""


class SupersededRun(RunError):
    """A run's end came from a copy the host no longer holds (another token is current)."""


@dataclass(frozen=True)
class Placed:
    """Where one box run went (for tests, benchmarks and the doctor)."""

    agent_id: str
    group: str
    node_id: str
    token: str
    actor: str


class RayPlacement(Placement):
    name = "ray"

    def __init__(self, config: PlacementConfig, runtime: BoxRuntime, box_home: Path) -> None:
        connect(config.ray_address, config.namespace)
        self.config = config
        #: The host's own runtime and box home (the turn pipeline's signature; boxes go to the nodes).
        self.runtime = runtime
        self.box_home = box_home
        self._homes: dict[GroupId, str] = {}  # the node each group sticks to
        self._fences: dict[GroupId, str] = {}  # each group's current run token
        self._files_on: dict[GroupId, str] = {}  # the node that holds each group's files (node-local files)
        self._copy_locks: dict[GroupId, asyncio.Lock] = {}
        self._emitters: dict[str, Emit] = {}
        self._place_lock = asyncio.Lock()
        self._draining: set[str] = set()  # nodes no group is placed on any more (they stay alive)
        #: Every box run placed by this host, in order.
        self.placed: list[Placed] = []

    # -- the seam ------------------------------------------------------------------------------

    def subscribe(self, agent_id: str, emit: Emit) -> Callable[[], None]:
        self._emitters[agent_id] = emit

        def unsubscribe() -> None:
            if self._emitters.get(agent_id) is emit:
                del self._emitters[agent_id]

        return unsubscribe

    def node_of(self, agent_id: str, group: str) -> str | None:
        return self._homes.get((agent_id, group))

    def current_token(self, agent_id: str, group: str) -> str | None:
        return self._fences.get((agent_id, group))

    def supersede(self, agent_id: str, group: str) -> str:
        """Stop holding the group's running copy (an operator's or a partition handler's call): its
        end is refused from now on. Returns the group's new token."""
        token = secrets.token_hex(8)
        self._fences[(agent_id, group)] = token
        return token

    async def run_turn(self, key: GroupKey, run_input: RunnerInput, sessions: SessionStore | None,
                       **options: Any) -> TurnResult:  # fmt: skip
        return await run_turn(self.runtime, self.box_home, key, run_input, sessions, runner=self._run_remote,
                              **options)  # fmt: skip

    async def describe(self) -> dict[str, Any]:
        described = await asyncio.to_thread(
            describe_cluster, self.config.ray_address, self.config.namespace, self.config.slots_of
        )
        for row in described["nodes"]:  # the groups that stick to each node now
            row["groups"] = sum(1 for node in self._homes.values() if node == row["node_id"])
        described["shared_folder"] = self.config.shared_folder
        return described

    # -- placing and running -------------------------------------------------------------------

    def _emit(self, agent_id: str, name: str, **data: Any) -> None:
        emit = self._emitters.get(agent_id)
        if emit is not None:
            emit(name, **data)

    async def _place(self, group: GroupId) -> tuple[str, str | None]:
        """The group's node, and the node it had before when it moves (``None``: it stays or is new)."""
        async with self._place_lock:  # two groups placed at once must see each other's choice
            nodes = {n.node_id: n for n in await asyncio.to_thread(box_nodes)}
            if not nodes:
                raise RunError(f"no alive Ray node offers `{BOX_SLOTS}`; start nodes with "
                               f"ray start --resources '{{\"{BOX_SLOTS}\": 4}}'")  # fmt: skip
            current = self._homes.get(group)
            if current in nodes and current not in self._draining:
                return current, None
            open_nodes = {n: v for n, v in nodes.items() if n not in self._draining}
            if not open_nodes:
                raise RunError(
                    f"every alive Ray node with `{BOX_SLOTS}` is being drained; undrain one or add one"
                )
            load = Counter(node for node in self._homes.values() if node in open_nodes)
            caps = {n: self.config.slots_of(v.node_id, v.address, v.slots) for n, v in open_nodes.items()}
            candidates = [n for n in open_nodes if load[n] < caps[n]] or list(open_nodes)
            pick = min(candidates, key=lambda n: (load[n] / max(caps[n], 1), load[n], n))
            self._homes[group] = pick
        if current is None:
            self._emit(group[0], "placement.placed", folder=group[1], node=pick)
        else:
            log.warning("group %s/%s moves from node %s (%s) to %s", *group, current[:8],
                        "drained" if current in nodes else "gone", pick[:8])  # fmt: skip
        return pick, current

    def drain(self, node_id: str) -> list[str]:
        """Place nothing more on ``node_id`` (it stays in the cluster): each group that sticks to it
        moves at its next turn, its state copied from that node through the host. Returns those groups
        (``agent/group``); a turn running there now finishes where it is."""
        self._draining.add(node_id)
        return sorted(f"{a}/{g}" for (a, g), node in self._homes.items() if node == node_id)

    def undrain(self, node_id: str) -> None:
        """Place groups on ``node_id`` again (those that moved away stay where they are)."""
        self._draining.discard(node_id)

    # -- the group's files on its node -------------------------------------------------------------

    def copy_path(self, agent_id: str, group: str) -> Path:
        """The host's last copy of a group's state (node-local files), renewed after every turn."""
        return self.box_home / "group-copies" / safe_name(agent_id) / f"{safe_name(group)}.tar"

    def _seed(self, gid: GroupId, options: dict[str, Any]) -> bytes:
        """The state a node that does not hold the group's files starts from: the host's last copy,
        else (the group's first turn on a node) the host's own folders."""
        last = self.copy_path(*gid)
        if last.is_file():
            return last.read_bytes()
        host = GroupPaths(Path(options["workspace"]), Path(options["agent_home"]), Path(options["ipc_dir"]))
        return pack_state(host).data

    async def _copy_from(self, node: str, gid: GroupId) -> bytes | None:
        """A fresh copy of the group's state from ``node`` (alive), kept as the host's last copy;
        ``None`` when the node cannot give one (the host's last copy is used then)."""
        from agentlite.placement.ray_actor import pack_on_node

        try:
            task = pack_on_node.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
            data, files, skipped = await asyncio.wait_for(task.remote(self.config.node_root, *gid), 120)
        except Exception as exc:
            log.warning("group %s/%s: no fresh copy from node %s: %s", *gid, node[:8], exc)
            return None
        path = self.copy_path(*gid)
        path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(write_atomic, path, data)
        log.info("group %s/%s: copied its state off node %s (%d files, %d bytes, %d entries left out)", *gid,
                 node[:8], files, len(data), len(skipped))  # fmt: skip
        return bytes(data)

    async def _keep_copy(self, actor: Any, gid: GroupId, node: str) -> None:
        # One copy at a time per group: a slow earlier copy never replaces a later one.
        async with self._copy_locks.setdefault(gid, asyncio.Lock()):
            try:
                data, files, skipped = await actor.pack.remote()
            except Exception as exc:  # the state stays on the node; the next move uses the older copy
                log.warning("group %s/%s: no copy of its state from node %s: %s", *gid, node[:8], exc)
                return
            path = self.copy_path(*gid)
            path.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(write_atomic, path, data)
        log.info("group %s/%s: kept a copy of its state (%d files, %d bytes, %d entries left out)", *gid, files,
                 len(data), len(skipped))  # fmt: skip

    async def _mirror(self, actor: Any, mirror: HostIpcMirror) -> None:
        """Push the host's writes into the group's IPC folder to the node while the run lasts."""
        while True:
            try:
                files = await asyncio.to_thread(mirror.pending)
                if files:
                    await actor.put_ipc.remote(files)
            except ray.exceptions.RayError:
                return  # the actor is gone: the stream says so
            except OSError as exc:
                log.warning("IPC mirror: %s", exc)
            await asyncio.sleep(MIRROR_POLL_SECONDS)  # the host's writes come without notice: polled

    async def _run_remote(self, runtime: BoxRuntime, home: Path, run_input: RunnerInput, *,
                          on_event: Callable[[Event], Awaitable[None] | None], agent_id: str, group: str,
                          on_box: Callable[[str], None] | None = None, **options: Any) -> RunOutcome:  # fmt: skip
        """:func:`agentlite.run.box_run.run_agent`'s contract, with the box on a Ray node."""
        gid = (agent_id, group)
        node, previous = await self._place(gid)
        node_files = not self.config.shared_folder
        copy: bytes | None = None
        drained = previous is not None and previous in self._draining
        if node_files and drained and self._files_on.get(gid) == previous:
            copy = await self._copy_from(previous, gid)  # the old node is alive: its state, fresh
        if node_files and copy is None and self._files_on.get(gid) != node:
            copy = await asyncio.to_thread(self._seed, gid, options)
        if previous is not None:
            self._emit(agent_id, "placement.moved", folder=group, from_node=previous, to_node=node,
                       reason="its node is drained" if drained else "its node is gone",
                       files="copied" if node_files else "shared", copied_bytes=len(copy or b""),
                       **{"from": previous, "to": node})  # fmt: skip
        token = secrets.token_hex(8)
        self._fences[gid] = token  # from now on only this run's end is accepted for the group
        name = actor_name(agent_id, group, token)
        actor = BoxActor.options(  # type: ignore[attr-defined]
            name=name, namespace=self.config.namespace, lifetime="detached", resources={BOX_SLOTS: 1},
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        ).remote(self.config.node_root, agent_id, group, token, self.config.node_runtime)  # fmt: skip
        self.placed.append(Placed(agent_id, group, node, token, name))
        key_env = run_input.backend.key_env()
        env = {key_env: os.environ[key_env]} if os.environ.get(key_env) else {}
        finished = False
        host_ipc = Path(options["ipc_dir"])
        mirror_task: asyncio.Task[None] | None = None
        copies: set[asyncio.Task[None]] = set()

        def after_turn() -> None:  # a box that answers follow-ups is copied after each of its turns
            copies.add(asyncio.create_task(self._keep_copy(actor, gid, node)))

        try:
            try:
                if node_files:
                    mirror = HostIpcMirror(host_ipc)
                    await actor.put_ipc.remote(await asyncio.to_thread(mirror.pending))
                await actor.start.remote(run_input, options, env, node_files, copy)
            except ray.exceptions.RayError as exc:
                raise _lost(node, exc) from None
            if node_files:
                self._files_on[gid] = node
                mirror_task = asyncio.create_task(self._mirror(actor, mirror))
            outcome = await self._follow(actor, gid, token, node, on_event, on_box,
                                         host_ipc=host_ipc if node_files else None,
                                         after_turn=after_turn if node_files else None)  # fmt: skip
            finished = True
            if node_files:
                await asyncio.gather(*copies, return_exceptions=True)
                await self._keep_copy(actor, gid, node)
            return outcome
        finally:
            if mirror_task is not None:
                mirror_task.cancel()
            for copying in copies:
                copying.cancel()
            await _release(actor, graceful=not finished)

    async def _follow(self, actor: Any, gid: GroupId, token: str, node: str,
                      on_event: Callable[[Event], Awaitable[None] | None],
                      on_box: Callable[[str], None] | None, offset: int = 0,
                      host_ipc: Path | None = None,
                      after_turn: Callable[[], None] | None = None) -> RunOutcome:  # fmt: skip
        """``host_ipc``: the host's IPC folder for the group, where the box's relayed requests go;
        ``after_turn``: called at each turn's result (the box may wait for follow-ups)."""
        try:
            async for ref in actor.stream.remote(offset, 0 if host_ipc is not None else None):
                item = await ref
                if item[1] != token:
                    raise SupersededRun(
                        f"an item of run {item[1]} reached the stream of run {token}; refused"
                    )
                if (current := self._fences.get(gid)) != token:  # nothing of a superseded copy counts
                    raise SupersededRun(f"run {token} on node {node[:8]} is superseded (the group's current run "
                                        f"is {current}): its {item[0]} is refused")  # fmt: skip
                if item[0] == "box":
                    if on_box is not None:
                        on_box(item[2])
                elif item[0] == "ipc" and host_ipc is not None:
                    await _take_request(actor, host_ipc, item)
                elif item[0] == "event":
                    outcome = on_event(item[3])
                    if inspect.isawaitable(outcome):
                        await outcome
                    if after_turn is not None and isinstance(item[3], ResultEvent):
                        after_turn()
                elif item[0] == "end":
                    outcome, failure = item[2], item[3]
                    if outcome is None:
                        raise RunError(f"box run on node {node[:8]} failed: {failure}")
                    return outcome
        except ray.exceptions.RayTaskError as exc:  # the actor's method raised: a bug, not a lost node
            raise RunError(f"box actor on node {node[:8]} failed: {exc.cause!r}") from None
        except ray.exceptions.RayError as exc:
            raise _lost(node, exc) from None
        raise _lost(node, None)

    # -- after a host restart --------------------------------------------------------------------

    async def _actors_of(self, agent_id: str) -> dict[str, tuple[Any, dict[str, Any]]]:
        """The agent's live box actors by box name (``None`` box: not created yet), with each one's state."""
        found: dict[str, tuple[Any, dict[str, Any]]] = {}
        names = await asyncio.to_thread(named_actors, self.config.namespace, agent_prefix(agent_id))
        for name in names:
            try:
                actor = ray.get_actor(name, namespace=self.config.namespace)
                state = await asyncio.wait_for(actor.describe.remote(), 30)
            except (ValueError, ray.exceptions.RayError, TimeoutError) as exc:
                log.warning("box actor %s unreachable: %s", name, exc)
                continue
            found[state["box"] or f"?{name}"] = (actor, {**state, "name": name})
        return found

    async def decide_runs(self, ledger: RunLedger, ipc_root: Path, *, agent_id: str,
                          enabled: bool = True) -> list[RunDecision]:  # fmt: skip
        actors = await self._actors_of(agent_id)
        decisions: list[RunDecision] = []
        for run in ledger.unfinished():
            action, reason = self._judge(run, actors)
            if action == "adopt" and not enabled:
                action, reason = "abandon", f"adoption is turned off; {reason}"
            if action in ("deliver", "adopt") and run.deliver_to != "chat":
                ledger.end(
                    run.run_id,
                    "failed" if action == "deliver" else "abandoned",
                    "the caller that asked is gone",
                )
                decisions.append(RunDecision(run, "abandon", "the caller that asked is gone"))
                continue
            token = None
            if action == "adopt":
                token = ledger.take_over(run.run_id, run.token)
                if token is None:
                    decisions.append(RunDecision(run, "leave", "another host adopted it first"))
                    continue
                state = actors[run.box or ""][1]
                self._fences[(agent_id, run.group_folder)] = state["token"]
                self._homes[(agent_id, run.group_folder)] = state["node_id"]
            elif action == "abandon":
                ledger.end(run.run_id, "abandoned", reason)
            log.info("run=%s box=%s %s: %s", run.run_id, run.box, action, reason)
            decisions.append(RunDecision(run, action, reason, token))
        return decisions

    @staticmethod
    def _judge(run: RunRecord, actors: dict[str, tuple[Any, dict[str, Any]]]) -> tuple[str, str]:
        if run.state == "final_ready":
            return "deliver", "final written, not delivered"
        if run.box is None:
            return "abandon", "the host died before its box existed"
        held = actors.get(run.box)
        if held is None:
            return "abandon", f"no box actor holds box `{run.box}`"
        state = held[1]
        if state["done"] and state["failure"]:
            return "abandon", f"box `{run.box}` failed: {state['failure']}"
        return "adopt", f"box `{run.box}` runs on in actor {state['name']} on node {state['node_id'][:8]}"

    async def follow_adopted(self, decision: RunDecision, *, ledger: RunLedger, ipc_root: Path,
                             deliver: Callable[[str], Awaitable[bool]],
                             on_event: Callable[[Event], None] | None = None,
                             timeout: float = 1800.0) -> RunRecord | None:  # fmt: skip
        run, token = decision.run, decision.token
        assert run.box is not None and token is not None
        actors = await self._actors_of(run.agent_id)
        held = actors.get(run.box)
        if held is None:
            ledger.end(
                run.run_id, "failed", f"adopted run: the actor of box `{run.box}` is gone", token=token
            )
            return ledger.get(run.run_id)
        actor, state = held
        replay = AdoptedReplay(
            earlier=finals_before(ledger, run), session_id=run.session_id, on_event=on_event
        )
        offset = 0
        node_files = not self.config.shared_folder
        host_ipc = ipc_root / run.group_folder
        try:
            async with asyncio.timeout(timeout):
                async for ref in actor.stream.remote(
                    0, state.get("requests_acked", 0) if node_files else None
                ):
                    item = await ref
                    if item[0] == "ipc":  # the box's requests the dead host had not taken
                        await _take_request(actor, host_ipc, item)
                    elif item[0] == "event":
                        offset = item[2] + 1
                        if replay.take(item[3]):
                            break
                    elif item[0] == "end":
                        break
        except (TimeoutError, ray.exceptions.RayError) as exc:
            log.warning("adopted run=%s: lost its box actor: %s", run.run_id, exc)
        try:
            fenced_out = self._fences.get((run.agent_id, run.group_folder)) != state["token"]
            await settle_adopted(ledger, run, token, replay, offset, deliver, fenced_out=fenced_out)
        finally:
            await self._close_adopted(actor, ipc_root / run.group_folder)
        return ledger.get(run.run_id)

    async def _close_adopted(self, actor: Any, ipc_dir: Path) -> None:
        """Ask the adopted runner to end, give it a moment, then end its actor (and so its box)."""
        from agentlite.run.runner_input import request_close

        with contextlib.suppress(OSError):
            request_close(ipc_dir)
        if not self.config.shared_folder:  # the runner's input folder is the node's
            with contextlib.suppress(Exception):
                await asyncio.wait_for(actor.request_close.remote(), 30)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_WAIT_SECONDS):
                async for ref in actor.stream.remote(0):
                    if (await ref)[0] == "end":
                        break
        await _release(actor, graceful=True)

    async def reconcile(self, agent_id: str, decisions: list[RunDecision]) -> list[str]:
        """Kill every box actor of the agent that no adopted run holds (their guards remove the boxes)."""
        adopted = {d.run.box for d in decisions if d.action == "adopt"}
        killed = []
        for box, (actor, state) in (await self._actors_of(agent_id)).items():
            if box in adopted:
                continue
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
            killed.append(state["name"])
        if killed:
            log.info("agent=%s killed box actors no run holds: %s", agent_id, killed)
        return killed


async def _take_request(actor: Any, host_ipc: Path, item: tuple[Any, ...]) -> None:
    """Write a relayed request where the host's watcher looks (it checks it as ever), then tell the
    actor, so a host that re-attaches later does not take it twice."""
    await asyncio.to_thread(write_ipc_file, host_ipc, item[2], item[3], item[4])
    actor.ack_requests.remote(item[5])  # no wait: a lost acknowledgement only repeats a request


def _lost(node: str, exc: BaseException | None) -> BoxLost:
    why = f"{type(exc).__name__}" if exc is not None else "its stream ended without the run's end"
    return BoxLost(f"box lost with its Ray actor on node {node[:8]} (the node died, was removed or cannot be "
                   f"reached: {why}); the box went with it")  # fmt: skip


async def _release(actor: Any, *, graceful: bool) -> None:
    """End a box actor: ``graceful`` first lets the run tear its box down; then the actor is killed
    (its guard removes whatever box is left)."""
    if graceful:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(actor.cancel.remote(), CANCEL_SECONDS)
    with contextlib.suppress(Exception):
        ray.kill(actor, no_restart=True)


def wait_for_no_actors(namespace: str, prefix: str, timeout: float = 60.0) -> list[str]:
    """Poll until no named actor with ``prefix`` is left; returns what is still there at the deadline."""
    deadline = time.monotonic() + timeout
    while (left := named_actors(namespace, prefix)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left
