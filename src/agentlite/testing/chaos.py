"""Chaos harness for the box lifecycle: ``python -m agentlite.testing.chaos --trials N``.

Each trial starts 2 to 4 real host processes on one home. Each host runs its startup cleanup, then
one command in a fresh box. Some hosts are killed with SIGKILL at a random point (before create,
between create and exec, during exec, during removal), some records are corrupted, some removals
fail on purpose, and in some trials a "tmp cleaner" deletes every lease file under the running
hosts. While the surviving hosts still run, a fresh host cleans up; the survivors must
then finish normally (no live box was removed). After they finish, one more cleanup runs and no box
or record of the trial may be left (no orphan).

The same module is the host process (``python -m agentlite.testing.chaos host ...``), which the fault tests
use too. It prints one JSON line per phase on stdout so a harness knows when to strike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agentlite.box.base import BoxInfo, BoxProcess, BoxRuntime, BoxSpec
from agentlite.box.lifecycle import CleanupDecision, box_prefix, cleanup_orphans, run_in_box
from agentlite.box.ownership import RecordStore
from agentlite.core.errors import BoxRemoveFailed

PHASES = ("before_create", "before_exec", "during_exec", "before_remove", "after_remove")


def _say(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class _ScriptedRuntime(BoxRuntime):
    """Delegates to a real runtime, announcing each phase, pausing at one, failing removals on request."""

    def __init__(self, inner: BoxRuntime, pause_at: str | None, fail_remove: bool) -> None:
        self.inner = inner
        self.name = inner.name
        self.pause_at = pause_at
        self.fail_remove = fail_remove

    async def _phase(self, phase: str, box: str) -> None:
        _say(event="phase", phase=phase, box=box)
        if phase == self.pause_at:
            await asyncio.sleep(3600)  # the harness kills us here

    async def create(self, name: str, spec: BoxSpec) -> BoxInfo:
        await self._phase("before_create", name)
        return await self.inner.create(name, spec)

    async def get(self, name: str) -> BoxInfo | None:
        return await self.inner.get(name)

    async def list(self) -> list[BoxInfo]:
        return await self.inner.list()

    async def untracked(self) -> list[str]:
        return await self.inner.untracked()

    async def sweep_other_homes(
        self, prefix: str, *, include_live: bool = False, dry_run: bool = False
    ) -> list[CleanupDecision]:
        return await self.inner.sweep_other_homes(prefix, include_live=include_live, dry_run=dry_run)

    async def exec(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None
    ) -> BoxProcess:
        await self._phase("before_exec", name)
        proc = await self.inner.exec(name, argv, env=env, cwd=cwd)
        _say(event="phase", phase="during_exec", box=name)
        return proc

    async def stop(self, name: str) -> None:
        await self.inner.stop(name)

    async def remove(self, name: str, *, force: bool = False) -> None:
        await self._phase("before_remove", name)
        if self.fail_remove:
            raise BoxRemoveFailed(name, f"injected removal failure for `{name}`")
        await self.inner.remove(name, force=force)
        await self._phase("after_remove", name)


async def _host(args: argparse.Namespace) -> int:
    from agentlite.box.sandbox import SandboxRuntime

    home = Path(args.home)
    inner = SandboxRuntime(home)
    if args.cleanup_first:
        decisions = await cleanup_orphans(inner, home, args.agent)
        _say(event="cleanup", decisions=[d.as_json() for d in decisions])
    runtime = _ScriptedRuntime(inner, args.pause_at, args.fail_remove)
    lines: list[str] = []
    result = await run_in_box(
        runtime,
        home,
        ["sh", "-c", f"echo started; sleep {args.hold}; echo finished"],
        agent_id=args.agent,
        group=args.group,
        spec=BoxSpec(network=False),
        on_stdout=lambda line: lines.append(line.decode().strip()),
    )
    _say(event="done", box=result.box, exit_code=result.exit_code, output=lines)
    return 0


# -- the harness ----------------------------------------------------------------------------------


def host_argv(
    home: Path,
    agent: str,
    *,
    group: str = "main",
    hold: float = 2.0,
    pause_at: str | None = None,
    fail_remove: bool = False,
    cleanup_first: bool = True,
) -> list[str]:
    """The command line of one host process (``python -m agentlite.testing.chaos host ...``)."""
    argv = [sys.executable, "-m", "agentlite.testing.chaos", "host", "--home", str(home), "--agent", agent]
    argv += ["--group", group, "--hold", str(hold)]
    if pause_at:
        argv += ["--pause-at", pause_at]
    if fail_remove:
        argv.append("--fail-remove")
    if cleanup_first:
        argv.append("--cleanup-first")
    return argv


class _Host:
    def __init__(
        self,
        home: Path,
        agent: str,
        index: int,
        *,
        pause_at: str | None,
        fail_remove: bool,
        hold: float,
        cleanup_first: bool = True,
    ) -> None:
        argv = host_argv(
            home,
            agent,
            group=f"g{index}",
            hold=hold,
            pause_at=pause_at,
            fail_remove=fail_remove,
            cleanup_first=cleanup_first,
        )
        #: The phase this host pauses at, to be killed there (None: it runs to its end).
        self.pause_at = pause_at
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.events: list[dict[str, Any]] = []
        self.box: str | None = None

    def read_until(self, phase: str | None, timeout: float = 30.0) -> bool:
        """Read events until ``phase`` (or "done") is seen. False on exit or timeout."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                return False
            event = json.loads(line)
            self.events.append(event)
            self.box = event.get("box", self.box)
            if event.get("phase") == phase or event.get("event") == "done":
                return True
        return False

    def done_event(self) -> dict[str, Any] | None:
        return next((e for e in self.events if e.get("event") == "done"), None)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def _corrupt_record(store: RecordStore, box: str, rng: random.Random) -> None:
    path = store.path(box)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    mode = rng.choice(["truncate", "garbage", "wrong_name", "empty"])
    if mode == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif mode == "garbage":
        path.write_bytes(b"\x00not json{")
    elif mode == "wrong_name":
        record = json.loads(data)
        record["name"] = "someone-else"
        path.write_text(json.dumps(record))
    else:
        path.write_bytes(b"")


def run_trial(home: Path, trial: int, rng: random.Random) -> tuple[int, int]:
    """One trial; returns (live boxes killed, orphans left)."""
    from agentlite.box.sandbox import SandboxRuntime

    agent = f"chaos{trial}"
    store = RecordStore(home)
    hosts: list[_Host] = []
    victims: list[_Host] = []
    for index in range(rng.randint(2, 4)):
        doomed = rng.random() < 0.5
        host = _Host(
            home,
            agent,
            index,
            pause_at=rng.choice(PHASES) if doomed else None,
            fail_remove=rng.random() < 0.2,
            hold=rng.uniform(1.5, 3.0),
        )
        (victims if doomed else hosts).append(host)
    for host in victims:
        host.read_until(host.pause_at)
        if host.box and rng.random() < 0.3:
            _corrupt_record(store, host.box, rng)
        host.kill()
    if rng.random() < 0.3:
        # A tmp cleaner: lease files are never rewritten, so they are the ones an age rule deletes.
        for host in hosts:
            host.read_until("during_exec")  # its record and lease exist
        for lease in store.lease_dir.glob("*.lease"):
            lease.unlink(missing_ok=True)
    # A fresh host's startup cleanup while the survivors are still running their commands.
    runtime = SandboxRuntime(home)
    asyncio.run(cleanup_orphans(runtime, home, agent))
    live_killed = 0
    for host in hosts:
        host.read_until("done", timeout=60)
        host.proc.wait(timeout=60)
        done = host.done_event()
        if done is None or done["exit_code"] != 0 or "finished" not in done["output"]:
            live_killed += 1
    # After everything ended, one more cleanup must leave nothing of this trial behind.
    asyncio.run(cleanup_orphans(runtime, home, agent))
    boxes_left = [b.name for b in asyncio.run(runtime.list()) if b.name.startswith(box_prefix(agent))]
    records_left = [n for n in store.record_names() if n.startswith(box_prefix(agent))]
    return live_killed, len(boxes_left) + len(records_left)


def _harness(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    env_home = os.environ.get("AGENTLITE_HOME")
    with tempfile.TemporaryDirectory(prefix="agentlite-chaos-") as tmp:
        home = Path(env_home) if env_home else Path(tmp)
        killed = orphans = 0
        for trial in range(args.trials):
            k, o = run_trial(home, trial + args.seed * 100000, rng)
            killed += k
            orphans += o
            if not args.quiet:
                print(f"trial {trial + 1}/{args.trials}: {k} live killed, {o} orphans left", file=sys.stderr)
    print(f"{args.trials} trials: {killed} live boxes killed, {orphans} orphans left")
    return 0 if killed == 0 and orphans == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agentlite.testing.chaos", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="mode")
    host = sub.add_parser("host", help="run one host process (used by the harness and the tests)")
    host.add_argument("--home", required=True)
    host.add_argument("--agent", required=True)
    host.add_argument("--group", default="main")
    host.add_argument("--hold", type=float, default=2.0, help="seconds the command runs")
    host.add_argument("--pause-at", choices=PHASES)
    host.add_argument("--fail-remove", action="store_true")
    host.add_argument("--cleanup-first", action="store_true")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.mode == "host":
        return asyncio.run(_host(args))
    return _harness(args)


if __name__ == "__main__":
    raise SystemExit(main())
