"""The node-local guard of one box actor: when the actor or its raylet is gone, its boxes go too.

A box runs in a session of its own (it must outlive a host restart), so nothing kills it when the
Ray worker that made it dies: a raylet killed with ``kill -9`` or a node removed would leave it
running as an orphan. Each actor starts this guard in a session of its own; the guard polls the
actor's and the raylet's processes, and when either ends it kills the actor (a worker whose raylet
is gone must not go on) and then sweeps the node's box home: every box of the agent whose owner
(the actor) is dead is removed, with its ownership record.

    python -m agentlite.placement.node_guard --actor PID --raylet PID --home DIR --agent ID
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

import psutil

log = logging.getLogger("agentlite.placement.guard")

POLL_SECONDS = 0.1


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid) if pid > 1 else None
    except psutil.NoSuchProcess:
        return None


def _gone(proc: psutil.Process | None) -> bool:
    if proc is None:
        return False  # not watched
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def watch(actor_pid: int, raylet_pid: int, *, poll: float = POLL_SECONDS) -> str:
    """Block until the actor or the raylet ends; returns which (the actor is killed in the second case)."""
    actor, raylet = _process(actor_pid), _process(raylet_pid)
    if actor is None:
        return "actor"
    while True:
        if _gone(actor):
            return "actor"
        if _gone(raylet):
            try:
                actor.send_signal(signal.SIGKILL)
                actor.wait(10)
            except (psutil.NoSuchProcess, psutil.TimeoutExpired):
                pass
            return "raylet"
        time.sleep(poll)  # a foreign process's end has no portable wake-up; polled every 100 ms


async def sweep(home: Path, agent_id: str, runtime_name: str | None) -> list[str]:
    """Remove the agent's boxes on this node whose owner is gone; returns their names."""
    from agentlite.box import open_runtime
    from agentlite.box.lifecycle import cleanup_orphans

    runtime, _ = open_runtime(home, runtime_name, boot=False)
    async with runtime:
        decisions = await cleanup_orphans(runtime, home, agent_id)
    return [d.name for d in decisions if d.action == "remove"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentlite.placement.node_guard")
    parser.add_argument("--actor", type=int, required=True)
    parser.add_argument("--raylet", type=int, default=0)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--agent", required=True)
    parser.add_argument("--runtime", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s guard %(message)s")
    why = watch(args.actor, args.raylet)
    removed = asyncio.run(sweep(args.home, args.agent, args.runtime))
    log.info("pid=%d %s gone; removed boxes %s", os.getpid(), why, removed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
