"""Ray placement against local placement: time to first event, per-turn overhead, and throughput.

What is measured, on real platforms (``agentlite.create(runtime="sandbox")``, one agent with the
codex backend against an in-process ``ModelServer(scenario="text")`` answering at once, the real
codex CLI in real sandbox boxes):

* **latency**: rounds of one ``agent.ask`` each, alternating a ``local`` platform and a ``ray``
  platform (a ``ray.cluster_utils.Cluster`` of a head and one box node on this machine). *First
  event*: from the ask to the first runner event its ``on_event`` sees; *turn*: from the ask to its
  result. *Overhead* is ray minus local, p50 and p95 of each.
* **throughput**: ``N`` groups asked at once (one turn each) with 1, 2 and 3 box nodes (each node
  offers ``--slots`` box slots, one logical CPU), wall time to the last answer and turns per second.
  Every node is this machine, so this measures the placement's cost and how slots spread the queue,
  not more hardware: with all nodes on one machine, the boxes share its cores.

Every answer must be the model's reply, else the round fails. Timing is reported, never asserted.

Run: ``.venv/bin/python bench/ray_placement.py [--rounds 10] [--groups 6] [--slots 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import agentlite
from agentlite.placement import PlacementConfig
from agentlite.testing import ModelServer

REPLY = "hi from the offline model"
NAMESPACE = "agentlite-bench"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def one_turn(agent: Any, jid: str) -> tuple[float, float]:
    """(seconds to the first event, seconds to the result) of one ask."""
    start = time.perf_counter()
    first: list[float] = []

    def on_event(event: Any) -> None:
        if not first:
            first.append(time.perf_counter() - start)

    result = await agent.ask(jid, "hello", on_event=on_event)
    if result.status != "success" or result.result != REPLY:
        raise SystemExit(f"a turn failed: {result}")
    return (first[0] if first else float("nan")), time.perf_counter() - start


async def platform_for(workdir: Path, model: ModelServer, groups: int, placement: Any) -> tuple[Any, Any]:
    platform = await agentlite.create(workdir=workdir, runtime="sandbox", timezone="UTC", idle_timeout=60,
                                      max_concurrent=max(groups, 1), placement=placement)  # fmt: skip
    agent = await platform.get_or_create_agent("bench", backend={"type": "codex", "base_url": model.openai_base_url,
                                                                 "max_retries": 0})  # fmt: skip
    await agent.start()
    for i in range(groups):
        agent.register_group(f"b:g{i}", name=f"g{i}", folder=f"g{i}", requires_trigger=False)
    return platform, agent


async def latency(model: ModelServer, root: Path, cluster: Any, rounds: int) -> dict[str, list[float]]:
    ray_config = PlacementConfig(kind="ray", ray_address=cluster.address, namespace=NAMESPACE,
                                 node_root=str(root / "nodes"), node_runtime="sandbox")  # fmt: skip
    local_p, local_a = await platform_for(root / "local", model, 1, None)
    ray_p, ray_a = await platform_for(root / "ray", model, 1, ray_config)
    samples: dict[str, list[float]] = {"local_first": [], "local_turn": [], "ray_first": [], "ray_turn": []}
    try:
        for warm in range(2):
            await one_turn(local_a, "b:g0")
            await one_turn(ray_a, "b:g0")
            del warm
        for i in range(rounds):
            order = [("local", local_a), ("ray", ray_a)]
            if i % 2:
                order.reverse()
            for name, agent in order:
                first, turn = await one_turn(agent, "b:g0")
                samples[f"{name}_first"].append(first)
                samples[f"{name}_turn"].append(turn)
            print(f"  round {i + 1}/{rounds}", file=sys.stderr)
    finally:
        await local_p.close()
        await ray_p.close()
    return samples


async def throughput(model: ModelServer, root: Path, cluster: Any, groups: int, nodes: int) -> float:
    config = PlacementConfig(kind="ray", ray_address=cluster.address, namespace=NAMESPACE,
                             node_root=str(root / "nodes"), node_runtime="sandbox")  # fmt: skip
    platform, agent = await platform_for(root / f"tp{nodes}", model, groups, config)
    try:
        start = time.perf_counter()
        await asyncio.gather(*(one_turn(agent, f"b:g{i}") for i in range(groups)))
        return time.perf_counter() - start
    finally:
        await platform.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--groups", type=int, default=6)
    parser.add_argument("--slots", type=int, default=2)
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    root = Path(tempfile.mkdtemp(prefix="alrb-", dir="/tmp"))  # short: Ray's socket paths live under it
    os.environ["RAY_TMPDIR"] = str(root)
    store = 80 * 1024 * 1024
    started = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": store,
                                                           "include_dashboard": False})  # fmt: skip
    cluster.add_node(num_cpus=1, resources={"box_slots": args.slots}, object_store_memory=store)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
    print(f"cluster (head + 1 node) up in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    async def run() -> None:
        async with ModelServer(scenario="text") as model:
            samples = await latency(model, root, cluster, args.rounds)
            print(f"\nlatency, {args.rounds} rounds (seconds)")
            print(f"{'':<22}{'p50':>8}{'p95':>8}")
            for label, key in (("first event, local", "local_first"), ("first event, ray", "ray_first"),
                               ("turn, local", "local_turn"), ("turn, ray", "ray_turn")):  # fmt: skip
                print(f"{label:<22}{pct(samples[key], 50):>8.3f}{pct(samples[key], 95):>8.3f}")
            for what in ("first", "turn"):
                diffs = [
                    r - lo for r, lo in zip(samples[f"ray_{what}"], samples[f"local_{what}"], strict=True)
                ]
                print(f"{'overhead, ' + what:<22}{pct(diffs, 50):>8.3f}{pct(diffs, 95):>8.3f}"
                      f"   (median local {statistics.median(samples[f'local_{what}']):.3f})")  # fmt: skip
            rows = []
            for nodes in (1, 2, 3):
                while len([n for n in ray.nodes() if n["Alive"] and n["Resources"].get("box_slots")]) < nodes:
                    cluster.add_node(
                        num_cpus=1, resources={"box_slots": args.slots}, object_store_memory=store
                    )
                    cluster.wait_for_nodes()
                wall = await throughput(model, root, cluster, args.groups, nodes)
                rows.append((nodes, wall))
            print(f"\nthroughput, {args.groups} groups at once, {args.slots} box slots per node")
            print(f"{'nodes':>6}{'slots':>7}{'wall s':>9}{'turns/s':>9}")
            for nodes, wall in rows:
                print(f"{nodes:>6}{nodes * args.slots:>7}{wall:>9.2f}{args.groups / wall:>9.2f}")

    try:
        asyncio.run(run())
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
