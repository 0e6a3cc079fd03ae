"""Boxes placed on a Ray cluster: a real cluster (head + 3 nodes on this machine, started once per
session with ``ray.cluster_utils.Cluster``), real sandbox boxes on each node, the real codex CLI
against the scripted model on 127.0.0.1 (every "node" is this machine, so its loopback is ours).

After every test no box actor, box or ownership record is left on any node."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

# The install step always puts in the `ray` extra: without it these tests fail, they do not skip.
import ray

import agentlite
from agentlite.box.ownership import RecordStore
from agentlite.box.sandbox import SandboxRuntime
from agentlite.placement import PlacementConfig
from agentlite.testing import ModelServer
from agentlite.testing.channels import RecordingChannel
from conftest import ScriptedHost, needs_agent_clis, needs_sandbox, until

pytestmark = [needs_sandbox, needs_agent_clis("codex"), pytest.mark.timeout(600)]

NAMESPACE = "agentlite-test"
NODES = 3
SLOTS = 2
REPLY = "hi from the offline model"
CLI = str(Path(sys.executable).parent / "agentlite")


@dataclass
class RayCluster:
    cluster: Any
    nodes: list[Any]
    root: Path

    @property
    def node_root(self) -> Path:
        return self.root / "nodes"

    def node_id(self, node: Any) -> str:
        return node.node_id

    def node_homes(self) -> list[Path]:
        return [p for p in self.node_root.iterdir() if p.is_dir()] if self.node_root.is_dir() else []

    def raylet_pid(self, node: Any) -> int:
        return node.all_processes["raylet"][0].process.pid

    def config(self, **options: Any) -> PlacementConfig:
        return PlacementConfig(kind="ray", ray_address=self.cluster.address, namespace=NAMESPACE,
                               node_root=str(self.node_root), node_runtime="sandbox", **options)  # fmt: skip


def _box_actor_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline and cmdline[0].startswith("ray::BoxActor"):
            found.append(proc)
    return found


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """Head (no box slots) + 3 nodes of 2 ``box_slots`` each, logical CPUs only, bounded object stores,
    fast health checks (a node killed is declared dead within seconds). Ray's files go to a short
    temp folder of our own (its socket paths must be short), so nothing of another cluster is touched."""
    from ray.cluster_utils import Cluster

    root = Path(tempfile.mkdtemp(prefix="alray-", dir="/tmp"))
    os.environ["RAY_TMPDIR"] = str(root)
    store = 80 * 1024 * 1024
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": store, "include_dashboard": False,
        "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000,
                           "health_check_timeout_ms": 2000, "health_check_failure_threshold": 4},
    })  # fmt: skip
    nodes = [
        cluster.add_node(num_cpus=1, resources={"box_slots": SLOTS}, object_store_memory=store)
        for _ in range(NODES)
    ]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
    handle = RayCluster(cluster, nodes, root)
    try:
        yield handle
    finally:
        ray.shutdown()
        cluster.shutdown()
        os.environ.pop("RAY_TMPDIR", None)
        shutil.rmtree(root, ignore_errors=True)


def _leftovers(cluster: RayCluster) -> list[str]:
    """Box actors, boxes and ownership records still anywhere on the cluster."""
    from agentlite.placement.ray_cluster import named_actors

    left = [f"actor {name}" for name in named_actors(NAMESPACE)]
    left += [f"process {p.pid}" for p in _box_actor_processes()]
    for home in cluster.node_homes():
        left += [f"record {name} on {home.name}" for name in RecordStore(home).record_names()]
        boxes = asyncio.run(_boxes(home))
        left += [f"box {name} on {home.name}" for name in boxes]
    return left


async def _boxes(home: Path) -> list[str]:
    async with SandboxRuntime(home) as runtime:
        return [b.name for b in await runtime.list()] + await runtime.untracked()


@pytest.fixture
def cluster(ray_cluster: RayCluster) -> Iterator[RayCluster]:
    """The session's cluster, checked clean after the test (actors, processes, boxes, records)."""
    yield ray_cluster
    deadline = time.monotonic() + 60
    while (left := _leftovers(ray_cluster)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], f"left on the cluster: {left}"


@pytest.fixture
async def model() -> AsyncIterator[ModelServer]:
    async with ModelServer(scenario="text") as server:
        yield server


def codex(model: ModelServer) -> dict[str, Any]:
    return {"type": "codex", "base_url": model.openai_base_url, "max_retries": 0}


async def started(platform: agentlite.AgentLite, model: ModelServer) -> tuple[Any, RecordingChannel]:
    holder: dict[str, RecordingChannel] = {}

    def factory(config: Any) -> RecordingChannel:
        holder["channel"] = RecordingChannel(config)
        return holder["channel"]

    agent = await platform.get_or_create_agent("main", backend=codex(model), channels={"test": factory})
    await agent.start()
    return agent, holder["channel"]


async def test_six_groups_over_three_nodes_each_answer_once_on_their_node(
    cluster: RayCluster, model: ModelServer, tmp_path: Path
) -> None:
    async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox", timezone="UTC", idle_timeout=60,
                                      max_concurrent=6, placement=cluster.config()) as platform:  # fmt: skip
        agent, channel = await started(platform, model)
        placed: list[Any] = []
        agent.on("placement.placed", placed.append)
        groups = [f"g{i}" for i in range(6)]
        for folder in groups:
            agent.register_group(f"t:{folder}", name=folder, folder=folder, requires_trigger=False)
        await asyncio.gather(*(channel.say(f"t:{folder}", f"hello {folder}") for folder in groups))
        sent = await channel.wait_sent(6, timeout=400)
        assert sorted(jid for jid, _ in sent) == sorted(f"t:{g}" for g in groups), sent
        assert all(text == REPLY for _, text in sent), sent
        placement = platform.placement
        nodes = {folder: placement.node_of(agent.id, folder) for folder in groups}  # type: ignore[attr-defined]
        # Spread evenly: 2 groups per node.
        assert sorted(list(nodes.values()).count(n) for n in set(nodes.values())) == [2, 2, 2], nodes
        for folder in groups:
            [run] = [r for r in agent.store.runs.list(group=folder)]
            assert run.state == "delivered" and run.box is not None, run
            # The box runs on its group's node: that node's own runtime lists it.
            assert run.box in await _box_on_node(cluster, nodes[folder]), (folder, run.box)
        assert {e.data["folder"] for e in placed} == set(groups)


# -- a node lost mid-turn --------------------------------------------------------------------------


def _cluster_node(cluster: RayCluster, node_id: str) -> Any:
    [node] = [n for n in cluster.nodes if n.node_id == node_id]
    return node


def _restore_nodes(cluster: RayCluster) -> None:
    """Put the session's cluster back to its size after a test took a node away."""
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    cluster.nodes = [n for n in cluster.nodes if n.node_id in alive]
    while len(cluster.nodes) < NODES:
        cluster.nodes.append(cluster.cluster.add_node(num_cpus=1, resources={"box_slots": SLOTS},
                                                      object_store_memory=80 * 1024 * 1024))  # fmt: skip
    cluster.cluster.wait_for_nodes()


async def _box_on_node(cluster: RayCluster, node_id: str) -> list[str]:
    from agentlite.placement.ray_actor import node_home

    home = node_home(str(cluster.node_root), node_id)
    return await _boxes(home) if home.is_dir() else []


@pytest.mark.parametrize("loss", ["kill_raylet", "remove_node"])
async def test_node_lost_mid_turn_reruns_elsewhere_with_one_reply(
    cluster: RayCluster, model: ModelServer, tmp_path: Path, loss: str
) -> None:
    model.delay = 20.0  # the first turn is still waiting on the model when its node goes
    try:
        async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox", timezone="UTC",
                                          idle_timeout=60, placement=cluster.config()) as platform:  # fmt: skip
            agent, channel = await started(platform, model)
            retries: list[Any] = []
            moves: list[Any] = []
            agent.on("run.retry", retries.append)
            agent.on("placement.moved", moves.append)
            agent.register_group("t:lost", name="lost", folder="lost", requires_trigger=False)
            await channel.say("t:lost", "answer me despite the node")
            runs = agent.store.runs
            await until(
                lambda: any(r.state == "running" for r in runs.list(group="lost")), "the first run running"
            )
            [first] = runs.list(group="lost")
            placement: Any = platform.placement
            lost_node = placement.node_of(agent.id, "lost")
            assert await _box_on_node(cluster, lost_node) == [first.box]
            node = _cluster_node(cluster, lost_node)
            model.delay = 0.0
            if loss == "kill_raylet":
                os.kill(cluster.raylet_pid(node), 9)
            else:
                cluster.cluster.remove_node(node)
            # The node's guard removes the box within seconds (no process of it is left).
            box_gone = asyncio.get_running_loop().time() + 15
            while await _box_on_node(cluster, lost_node):
                assert asyncio.get_running_loop().time() < box_gone, "the lost node's box is still there"
                await asyncio.sleep(0.1)
            sent = await channel.wait_sent(1, timeout=240)
            await until(lambda: not runs.unfinished(), "every run ended")
            assert [text for _, text in channel.sent] == [REPLY], sent
            first_now, second = sorted(runs.list(group="lost"), key=lambda r: r.created_at)
            assert first_now.run_id == first.run_id and first_now.state == "failed"
            assert "box lost" in (first_now.note or ""), first_now.note
            assert [e.data["retry_class"] for e in retries] == ["node_lost"]
            assert "box lost" in retries[0].data["error"]
            assert second.state == "delivered"
            assert placement.node_of(agent.id, "lost") != lost_node
            assert [(e.data["from_node"], e.data["to_node"]) for e in moves] == [
                (lost_node, placement.node_of(agent.id, "lost"))
            ]
            # A late final from the stranded copy (its old token and box) is refused.
            assert not runs.accept_final(first.run_id, first.token, first.box, status="success", text="late")
        if loss == "kill_raylet":
            with contextlib.suppress(Exception):
                cluster.cluster.remove_node(node, allow_graceful=False)
    finally:
        _restore_nodes(cluster)


# -- the host killed mid-turn ----------------------------------------------------------------------

#: One host process on the shared workdir, with a Ray placement on the test's cluster: `send` says one
#: message; every host runs until it sent `expect` replies and the agent has no unfinished run and no
#: box actor of its own is left, then prints its replies as JSON.
HOST_SCRIPT = """
import asyncio, json, logging, sys
sys.path.insert(0, {tests!r})
import agentlite
from agentlite.placement import PlacementConfig
from agentlite.placement.ray_cluster import agent_prefix, named_actors
from agentlite.testing.channels import RecordingChannel

logging.basicConfig(level=logging.INFO, stream=sys.stderr)

async def main():
    mode, expect = sys.argv[1], int(sys.argv[2])
    config = PlacementConfig(kind="ray", ray_address={address!r}, namespace={namespace!r}, node_root={node_root!r},
                             node_runtime="sandbox")
    platform = await agentlite.create(workdir={workdir!r}, runtime="sandbox", idle_timeout=60, placement=config)
    holder = {{}}
    def factory(config):
        holder["c"] = RecordingChannel(config)
        return holder["c"]
    agent = await platform.get_or_create_agent("svc", backend={{"type": "codex", "base_url": {base_url!r},
                                               "max_retries": 0}}, channels={{"test": factory}})
    await agent.start()
    if "t:main" not in agent.registered_groups():
        agent.register_group("t:main", name="main", folder="main", is_main=True)
    if mode == "send":
        await holder["c"].say("t:main", "please answer this")
    print("ready", flush=True)
    while (len(holder["c"].sent) < expect or agent.store.runs.unfinished() or not agent.store.runs.list()
           or named_actors({namespace!r}, agent_prefix(agent.id))):
        await asyncio.sleep(0.1)
    print(json.dumps([text for _, text in holder["c"].sent]), flush=True)
    await platform.close()

asyncio.run(main())
"""


class Host(ScriptedHost):
    """One host process (a Ray driver of its own) on the shared workdir."""

    @classmethod
    async def start(cls, tmp_path: Path, cluster: RayCluster, model: ModelServer, mode: str, expect: int,
                    name: str) -> Host:  # fmt: skip
        script = tmp_path / "host.py"
        if not script.exists():
            script.write_text(HOST_SCRIPT.format(tests=str(Path(__file__).parent), workdir=str(tmp_path / "data"),
                                                 base_url=model.openai_base_url, address=cluster.cluster.address,
                                                 namespace=NAMESPACE, node_root=str(cluster.node_root)))  # fmt: skip
        return await cls.launch(script, mode, str(expect), log=tmp_path / f"{name}.log", ready_timeout=180)

    async def replies(self, timeout: float = 240) -> list[str]:
        return await super().replies(timeout)


async def test_host_killed_mid_turn_a_new_host_reattaches_and_delivers_once(
    cluster: RayCluster, model: ModelServer, tmp_path: Path
) -> None:
    from agentlite.placement.ray_cluster import named_actors
    from agentlite.platform.store import AgentStore

    model.delay = 8.0  # the turn is still waiting on the model when its host dies
    first = await Host.start(tmp_path, cluster, model, "send", 1, "host1")
    db = tmp_path / "data" / "agents" / "svc" / "store" / "messages.db"

    def running() -> bool:
        if not db.exists():
            return False
        store = AgentStore(db)
        try:
            return any(r.state == "running" for r in store.runs.list())
        finally:
            store.close()

    await until(running, "the first host's run running", timeout=180)
    [actor] = named_actors(NAMESPACE)
    await first.kill()
    # The detached actor (and its box) outlives its host.
    assert named_actors(NAMESPACE) == [actor]
    second = await Host.start(tmp_path, cluster, model, "follow", 1, "host2")
    assert await second.replies() == [REPLY]
    store = AgentStore(db)
    try:
        [run] = store.runs.list()
        assert run.state == "delivered", run
    finally:
        store.close()


# -- fencing, reconcile, settings, doctor ----------------------------------------------------------


async def test_a_superseded_copy_is_refused_and_the_current_run_answers(
    cluster: RayCluster, model: ModelServer, tmp_path: Path
) -> None:
    """The host stops holding a running copy (as after a partition): what its actor still streams
    back, the real result included, is refused; the turn is run again and answered once."""
    model.delay = 6.0
    async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox", timezone="UTC",
                                      idle_timeout=60, placement=cluster.config()) as platform:  # fmt: skip
        platform.retry_base = 0.2
        agent, _ = await started(platform, model)
        agent.register_group("t:fence", name="fence", folder="fence", requires_trigger=False)
        placement: Any = platform.placement
        answer = asyncio.ensure_future(agent.ask("t:fence", "answer once"))
        runs = agent.store.runs
        await until(lambda: any(r.state == "running" for r in runs.list(group="fence")), "the run running")
        stale = placement.current_token(agent.id, "fence")
        placement.supersede(agent.id, "fence")
        model.delay = 0.0
        result = await asyncio.wait_for(answer, 240)
        assert result.status == "success" and result.result == REPLY, result
        first, second = sorted(runs.list(group="fence"), key=lambda r: r.created_at)
        assert first.state == "failed" and "superseded" in (first.note or "") and stale in (first.note or "")
        assert second.state == "delivered", second


async def test_reconcile_at_start_kills_box_actors_no_run_holds(
    cluster: RayCluster, model: ModelServer, tmp_path: Path
) -> None:
    from agentlite.placement.ray_actor import BoxActor
    from agentlite.placement.ray_cluster import actor_name, named_actors

    async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox", timezone="UTC",
                                      placement=cluster.config()) as platform:  # fmt: skip
        agent = await platform.get_or_create_agent("main", backend=codex(model))
        # Two actors of this agent that its ledger knows nothing of (a crashed host's leftovers), and
        # one of another agent, which is not this agent's to kill.
        config = cluster.config()
        strays = [
            BoxActor.options(name=actor_name(agent_id, "g", token), namespace=NAMESPACE, lifetime="detached",
                             resources={"box_slots": 1}).remote(config.node_root, agent_id, "g", token, "sandbox")
            for agent_id, token in ((agent.id, "stray1"), (agent.id, "stray2"), ("otheragent", "keep"))
        ]  # fmt: skip
        await asyncio.gather(*(a.describe.remote() for a in strays))
        assert len(named_actors(NAMESPACE)) == 3
        await agent.start()
        await until(
            lambda: named_actors(NAMESPACE) == [actor_name("otheragent", "g", "keep")], "the strays killed"
        )
        ray.kill(strays[2])


def test_doctor_reports_the_cluster(cluster: RayCluster) -> None:
    import json

    done = subprocess.run([CLI, "doctor", "--json", "--ray-address", cluster.cluster.address],
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    report = json.loads(done.stdout)
    nodes = report["cluster"]["nodes"]
    assert len(nodes) == NODES, report
    assert all(n["box_slots"] == SLOTS and n["agentlite"] == agentlite_version() for n in nodes), nodes


def agentlite_version() -> str:
    from importlib.metadata import version

    return version("agentlite")


async def test_a_box_dies_with_its_actor(cluster: RayCluster, model: ModelServer, tmp_path: Path) -> None:
    """The actor's process killed with SIGKILL mid-turn (its node stays): its guard removes the box
    within seconds, and the turn is run again, answered once."""
    model.delay = 20.0
    async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox", timezone="UTC",
                                      idle_timeout=60, placement=cluster.config()) as platform:  # fmt: skip
        agent, channel = await started(platform, model)
        agent.register_group("t:actor", name="actor", folder="actor", requires_trigger=False)
        await channel.say("t:actor", "answer me despite the actor")
        runs = agent.store.runs
        await until(
            lambda: any(r.state == "running" for r in runs.list(group="actor")), "the first run running"
        )
        placement: Any = platform.placement
        node = placement.node_of(agent.id, "actor")
        [first] = runs.list(group="actor")
        assert await _box_on_node(cluster, node) == [first.box]
        state = await ray.get_actor(placement.placed[-1].actor, namespace=NAMESPACE).describe.remote()
        model.delay = 0.0
        os.kill(state["pid"], 9)
        box_gone = asyncio.get_running_loop().time() + 15
        while first.box in await _box_on_node(cluster, node):
            assert asyncio.get_running_loop().time() < box_gone, "the killed actor's box is still there"
            await asyncio.sleep(0.1)
        # Its guard ends once the box is swept (nothing of the run is left on the node).
        await until(lambda: _ended(state["guard_pid"]), "the guard to end", timeout=30)
        await channel.wait_sent(1, timeout=240)
        await until(lambda: not runs.unfinished(), "every run ended")
        assert [text for _, text in channel.sent] == [REPLY]
        first_now, second = sorted(runs.list(group="actor"), key=lambda r: r.created_at)
        assert first_now.state == "failed" and "box lost" in (first_now.note or "")
        assert second.state == "delivered"


def _ended(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- a group's files on its node -------------------------------------------------------------------


def _node_files(cluster: RayCluster, node_id: str, agent_id: str, group: str) -> Any:
    from agentlite.placement.group_files import node_group_paths
    from agentlite.placement.ray_actor import node_home

    return node_group_paths(node_home(str(cluster.node_root), node_id), agent_id, group)


async def test_group_files_live_on_their_node_and_are_copied_when_it_moves(
    cluster: RayCluster, model: ModelServer, tmp_path: Path
) -> None:
    """The turn's writes land on its node, not the host; the box's symlinks are not followed when
    its state is copied; after ``remove_node`` the next turn, on another node, sees the file."""
    model.scenario = "shell"
    secret = tmp_path / "host-secret.txt"
    secret.write_text("the host's own file")
    model.command = f"echo carried > note.txt && ln -s {secret} planted-file && ln -s / planted-root"
    try:
        async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox", timezone="UTC",
                                          idle_timeout=60, placement=cluster.config()) as platform:  # fmt: skip
            agent, _ = await started(platform, model)
            moves: list[Any] = []
            agent.on("placement.moved", moves.append)
            agent.register_group("t:files", name="files", folder="files", requires_trigger=False)
            placement: Any = platform.placement
            first = await agent.ask("t:files", "write a note")
            assert first.status == "success", first
            home = placement.node_of(agent.id, "files")
            on_node = _node_files(cluster, home, agent.id, "files")
            assert (on_node.workspace / "note.txt").read_text() == "carried\n"
            assert (on_node.workspace / "planted-file").is_symlink()
            assert not (agent.groups_dir / "files" / "note.txt").exists()  # not on the host's paths
            assert placement.copy_path(agent.id, "files").is_file()  # the host's copy after the turn

            cluster.cluster.remove_node(_cluster_node(cluster, home))
            from agentlite.placement.ray_cluster import alive_node_ids

            await until(lambda: home not in alive_node_ids(), "the removed node seen dead", timeout=60)
            model.command = "cat note.txt > seen.txt; ls -a > listing.txt"
            second = await agent.ask("t:files", "read the note")
            assert second.status == "success", second.error
            new_home = placement.node_of(agent.id, "files")
            assert new_home != home
            moved = _node_files(cluster, new_home, agent.id, "files")
            assert (moved.workspace / "seen.txt").read_text() == "carried\n"
            listing = (moved.workspace / "listing.txt").read_text().split()
            assert "planted-file" not in listing and "planted-root" not in listing, listing
            assert secret.read_text() == "the host's own file"
            [event] = moves
            assert (event.data["from"], event.data["to"], event.data["files"]) == (home, new_home, "copied")
            assert event.data["copied_bytes"] > 0
    finally:
        _restore_nodes(cluster)


async def test_the_boxs_ipc_requests_reach_the_host_from_its_node(
    cluster: RayCluster, model: ModelServer, tmp_path: Path
) -> None:
    """A message and a task the box asks for through its node-local IPC folder reach the host."""
    model.scenario = "tool_call"
    model.tool = ("mcp__agentlite__send_message", {"text": "hello from the node"})
    async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox", timezone="UTC",
                                      idle_timeout=60, placement=cluster.config()) as platform:  # fmt: skip
        agent, channel = await started(platform, model)
        agent.register_group("t:ipc", name="ipc", folder="ipc", is_main=True)
        assert (await agent.ask("t:ipc", "say something")).status == "success"
        await channel.wait_sent(1, timeout=60)
        assert ("t:ipc", "hello from the node") in channel.sent
        model.tool = ("mcp__agentlite__schedule_task",
                      {"prompt": "check in", "schedule_type": "interval", "schedule_value": "3600000"})  # fmt: skip
        assert (await agent.ask("t:ipc", "schedule something")).status == "success"
        await until(agent.list_tasks, "the task the box scheduled", 60)
        assert [(t.prompt, t.group_folder) for t in agent.list_tasks()] == [("check in", "ipc")]
        assert not (agent.ipc_root / "errors").exists()  # nothing refused


async def test_a_group_moves_off_a_drained_node_with_a_fresh_copy_of_its_state(
    cluster: RayCluster, model: ModelServer, tmp_path: Path
) -> None:
    """The node stays alive: the group's state is copied from it (not the host's older copy)."""
    model.scenario = "shell"
    model.command = "echo first > note.txt"
    async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox", timezone="UTC",
                                      idle_timeout=60, placement=cluster.config()) as platform:  # fmt: skip
        agent, _ = await started(platform, model)
        moves: list[Any] = []
        agent.on("placement.moved", moves.append)
        agent.register_group("t:drain", name="drain", folder="drain", requires_trigger=False)
        placement: Any = platform.placement
        assert (await agent.ask("t:drain", "write a note")).status == "success"
        home = placement.node_of(agent.id, "drain")
        # Written on the node after the host's last copy: only a fresh copy carries it.
        (_node_files(cluster, home, agent.id, "drain").workspace / "later.txt").write_text("after the copy")
        try:
            assert placement.drain(home) == [f"{agent.id}/drain"]
            model.command = "cat note.txt later.txt > seen.txt"
            assert (await agent.ask("t:drain", "read it")).status == "success"
        finally:
            placement.undrain(home)
        new_home = placement.node_of(agent.id, "drain")
        assert new_home != home
        seen = _node_files(cluster, new_home, agent.id, "drain").workspace / "seen.txt"
        assert seen.read_text() == "first\nafter the copy"
        [event] = moves
        assert (event.data["from"], event.data["to"], event.data["reason"]) == (
            home,
            new_home,
            "its node is drained",
        )
        assert event.data["copied_bytes"] > 0


async def test_a_host_that_reattaches_relays_the_boxs_requests_once(
    cluster: RayCluster, model: ModelServer, tmp_path: Path
) -> None:
    """The box sends a message after its first host died: the host that re-attaches relays it from
    the node to its own IPC folder, and the chat gets it once, and the final once."""
    model.scenario = "tool_call"
    model.tool = ("mcp__agentlite__send_message", {"text": "sent after the host died"})
    model.delay = 8.0
    first = await Host.start(tmp_path, cluster, model, "send", 1, "host1")
    db = tmp_path / "data" / "agents" / "svc" / "store" / "messages.db"
    from agentlite.placement.ray_cluster import named_actors
    from agentlite.platform.store import AgentStore

    def running() -> bool:
        if not db.exists():
            return False
        store = AgentStore(db)
        try:
            return any(r.state == "running" for r in store.runs.list())
        finally:
            store.close()

    await until(running, "the first host's run running", timeout=180)
    await until(lambda: named_actors(NAMESPACE), "the box actor", timeout=60)
    await first.kill()
    model.delay = 0.0
    second = await Host.start(tmp_path, cluster, model, "follow", 2, "host2")
    assert sorted(await second.replies()) == sorted(["sent after the host died", "Called the tool."])
