"""Throughput of ``agentlite host --jsonl``: many trivial codex turns through the real CLI host.

Starts ``.venv/bin/agentlite host --jsonl --backend codex --base-url <model server>`` as a
subprocess (``AGENTLITE_HOME`` a temporary folder, ``AGENTLITE_RUNTIME=sandbox``, no API key) with an
in-process offline :class:`~agentlite.offline.model_server.ModelServer` (scenario ``text``: one model
call per turn, no delay). All request lines (default 100, spread round-robin over 5 groups) are
written at once, stdin is closed, and stdout is read until every final has come and the host exited.
Each id must get exactly one final, with status ``success`` and the scenario's text; anything else
fails the bench (exit 1).

Reported: total wall time (host spawn to the last final), requests per second, and the per-request
cost over a bare box spawn, ``wall x concurrency / requests - bare spawn``, where concurrency is the
number of boxes the host runs at once (min(groups, --max-concurrent)). The bare box spawn (a
``SandboxRuntime`` box made like ``run_agent``'s, ``create`` + ``exec true`` + ``remove``) and, for
context, a bare codex turn in such a box (as in ``bench/run_overhead.py``) are measured in the same
run, half of the rounds before and half after the host run, with the host idle.

Run: ``.venv/bin/python bench/host_jsonl.py [--requests 100] [--groups 5] [--bare-rounds 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agentlite.box.sandbox import SandboxRuntime
from agentlite.offline.model_server import ModelServer
from agentlite.platform.hostmode import DEFAULT_MAX_CONCURRENT
from run_overhead import EXPECTED, BareCodex, BenchFailure, TimedSandbox, codex_path

SCENARIO = "text"
HOST_TIMEOUT = 900.0
TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> tuple[float, float] | None:
    """(own CPU s, waited-for children's CPU s) of a live process, from ``/proc/<pid>/stat``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # fields from the 3rd on; comm may hold spaces
    utime, stime, cutime, cstime = (int(v) / TICK for v in fields[11:15])
    return utime + stime, cutime + cstime


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def agentlite_cli() -> Path:
    beside = Path(sys.executable).parent / "agentlite"
    if beside.exists():
        return beside
    found = shutil.which("agentlite")
    if found is None:
        raise SystemExit("agentlite CLI not found next to this Python or on PATH")
    return Path(found)


async def drain(lines: AsyncIterator[bytes]) -> bytes:
    return b"".join([line async for line in lines])


class Bare:
    """The bare references: an empty box spawn, and a codex turn alone in a box."""

    def __init__(self, root: Path, base_url: str) -> None:
        self.runtime = TimedSandbox(root / "home")
        self.codex = BareCodex(self.runtime, root / "codex", base_url)
        self.spawns: list[float] = []
        self.turns: list[float] = []
        self.turn_cpu: list[float] = []
        self._count = 0

    async def spawn(self) -> float:
        """Seconds for create + exec ``true`` until exit + remove."""
        self._count += 1
        name = f"bench-spawn-{os.getpid()}-{self._count}"
        started = time.perf_counter()
        await self.runtime.create(name, self.codex.spec)
        try:
            proc = await self.runtime.exec(name, ["true"])
            await proc.close_stdin()
            _, err = await asyncio.gather(drain(proc.stdout_lines()), drain(proc.stderr_lines()))
            code = await proc.wait()
        finally:
            await self.runtime.remove(name, force=True)
        elapsed = time.perf_counter() - started
        if code != 0:
            raise BenchFailure(f"`true` in box {name} exited {code}: {err!r}")
        return elapsed

    async def codex_turn(self) -> float:
        cpu_before = children_cpu()
        marks = await self.codex.turn(f"[scenario:{SCENARIO}] bare turn", EXPECTED[SCENARIO])
        # nsenter is our child and waits for the codex process tree in the box.
        self.turn_cpu.append(children_cpu() - cpu_before)
        return marks.span("start", "exit") or 0.0

    async def measure(self, rounds: int, *, warm_up: bool) -> None:
        if warm_up:
            await self.spawn()
            await self.codex_turn()
        for round_no in range(rounds):
            if round_no % 2 == 0:
                self.spawns.append(await self.spawn())
                self.turns.append(await self.codex_turn())
            else:
                self.turns.append(await self.codex_turn())
                self.spawns.append(await self.spawn())

    async def aclose(self) -> None:
        for box in await self.runtime.list():
            await self.runtime.remove(box.name, force=True)
        await self.runtime.aclose()


class HostRun:
    """One ``agentlite host --jsonl`` process fed every request at once."""

    def __init__(self, home: Path, base_url: str, requests: int, groups: int, max_concurrent: int) -> None:
        self.home = home
        self.base_url = base_url
        self.ids = [f"r{n:03d}" for n in range(requests)]
        self.groups = groups
        self.max_concurrent = max_concurrent
        self.finals: dict[Any, list[dict[str, Any]]] = {}
        self.events = 0
        self.other_lines: list[str] = []
        self.first_final: float | None = None
        self.last_final: float | None = None
        self.exited: float | None = None
        self.exit_code: int | None = None
        self.stderr = b""
        #: CPU seconds: the host process itself (last /proc sample), it plus every waited-for
        #: descendant (rusage), and this bench process (the model server) during the host run.
        self.host_cpu = 0.0
        self.tree_cpu = 0.0
        self.bench_cpu = 0.0

    def lines(self) -> bytes:
        return b"".join(
            json.dumps(
                {
                    "id": rid,
                    "agent": "bench",
                    "group": f"g{n % self.groups}",
                    "prompt": f"[scenario:{SCENARIO}] request {rid}",
                }
            ).encode()
            + b"\n"
            for n, rid in enumerate(self.ids)
        )

    async def run(self) -> float:
        """Run the host; returns the perf_counter time it was spawned at."""
        env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
        env |= {"AGENTLITE_HOME": str(self.home), "AGENTLITE_RUNTIME": "sandbox"}
        argv = [str(agentlite_cli()), "host", "--jsonl", "--backend", "codex", "--base-url", self.base_url,
                "--max-concurrent", str(self.max_concurrent)]  # fmt: skip
        tree_before, bench_before = children_cpu(), own_cpu()
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            limit=64 * 1024 * 1024,
        )
        assert proc.stdin and proc.stdout and proc.stderr
        proc.stdin.write(self.lines())
        await proc.stdin.drain()
        proc.stdin.close()
        stderr_task = asyncio.create_task(proc.stderr.read())
        sampler = asyncio.create_task(self._sample_cpu(proc.pid))
        try:
            async with asyncio.timeout(HOST_TIMEOUT):
                while raw := await proc.stdout.readline():
                    self._take(raw)
                self.exit_code = await proc.wait()
                self.exited = time.perf_counter()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            self.other_lines.append(f"(host killed after {HOST_TIMEOUT:g} s)")
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        self.stderr = await stderr_task
        self.tree_cpu = children_cpu() - tree_before
        self.bench_cpu = own_cpu() - bench_before
        return started

    async def _sample_cpu(self, pid: int) -> None:
        while True:
            if (sample := cpu_of(pid)) is not None:
                self.host_cpu = sample[0]
            await asyncio.sleep(0.1)

    def _take(self, raw: bytes) -> None:
        try:
            line = json.loads(raw)
        except ValueError:
            self.other_lines.append(raw.decode(errors="replace").rstrip())
            return
        if not isinstance(line, dict):
            self.other_lines.append(raw.decode(errors="replace").rstrip())
        elif line.get("type") == "event":
            self.events += 1
        elif line.get("type") == "final":
            now = time.perf_counter()
            self.first_final = self.first_final or now
            self.last_final = now
            self.finals.setdefault(line.get("id"), []).append(line)
        else:
            self.other_lines.append(raw.decode(errors="replace").rstrip())

    def problems(self) -> list[str]:
        found = []
        for rid in self.ids:
            got = self.finals.get(rid, [])
            if len(got) != 1:
                found.append(f"id {rid}: {len(got)} finals")
                continue
            final = got[0]
            if final.get("status") != "success":
                found.append(f"id {rid}: status {final.get('status')}: {final.get('error')}")
            elif final.get("result") != EXPECTED[SCENARIO]:
                found.append(f"id {rid}: result {final.get('result')!r}")
        found += [f"final for unknown id {rid!r}" for rid in self.finals if rid not in self.ids]
        found += [f"unexpected stdout line: {text[:200]}" for text in self.other_lines]
        if self.exit_code != 0:
            found.append(f"host exit code {self.exit_code}")
        return found


async def run(requests: int, groups: int, max_concurrent: int, bare_rounds: int) -> int:
    root = Path(tempfile.mkdtemp(prefix="agentlite-bench-host-"))
    host_home = root / "host-home"
    concurrency = min(groups, max_concurrent)
    bare: Bare | None = None
    try:
        async with ModelServer(scenario=SCENARIO) as server:
            bare = Bare(root / "bare", server.openai_base_url)
            await bare.measure(bare_rounds // 2, warm_up=True)
            host = HostRun(host_home, server.openai_base_url, requests, groups, max_concurrent)
            spawned = await host.run()
            await bare.measure(bare_rounds - bare_rounds // 2, warm_up=False)
        problems = host.problems()
        leftovers = await SandboxRuntime(host_home).list() if (host_home / "sandbox").is_dir() else []
        if leftovers:
            problems.append(f"boxes left behind by the host: {[b.name for b in leftovers]}")
        if problems:
            print(f"FAILED: {len(problems)} problem(s) with the host run:", file=sys.stderr)
            for problem in problems[:30]:
                print(f"  {problem}", file=sys.stderr)
            tail = host.stderr.decode(errors="replace")[-2000:]
            print(f"host stderr (tail):\n{tail}", file=sys.stderr)
            return 1
        assert host.last_final is not None and host.first_final is not None and host.exited is not None
        wall = host.last_final - spawned
        spawn_ms = statistics.median(bare.spawns) * 1000
        turn_ms = statistics.median(bare.turns) * 1000
        per_slot_ms = wall * 1000 * concurrency / requests
        print(
            f"agentlite host --jsonl: {requests} requests (scenario {SCENARIO}, 1 model call each, no delay), "
            f"{groups} groups, --max-concurrent {max_concurrent}, sandbox runtime, {os.cpu_count()} CPUs"
        )
        print(f"  all {requests} ids got exactly one final, all success; {host.events} event lines")
        print(f"  {'measure':<52}{'value':>12}")
        print(f"  {'wall time, host spawn -> last final':<52}{wall:>11.2f}s")
        print(f"  {'  host spawn -> first final':<52}{host.first_final - spawned:>11.2f}s")
        print(f"  {'  host spawn -> host exit':<52}{host.exited - spawned:>11.2f}s")
        print(f"  {'requests per second':<52}{requests / wall:>12.2f}")
        print(f"  {'concurrency c (boxes at once = min(groups, max))':<52}{concurrency:>12d}")
        print(f"  {'slot time per request = wall x c / requests':<52}{per_slot_ms:>10.0f}ms")
        print(f"  {f'bare box spawn, median of {len(bare.spawns)} (host idle)':<52}{spawn_ms:>10.0f}ms")
        print(f"  {'per-request cost over bare spawn':<52}{per_slot_ms - spawn_ms:>10.0f}ms")
        print(f"  {f'bare codex turn in a box, median of {len(bare.turns)}':<52}{turn_ms:>10.0f}ms")
        print(f"  {'per-request cost over a bare codex turn':<52}{per_slot_ms - turn_ms:>10.0f}ms")
        cpus = os.cpu_count() or 1
        per_req = 1000 / requests
        boxes_cpu = host.tree_cpu - host.host_cpu
        print(
            f"  CPU per request (ms of one core; {cpus} cores give {wall * cpus * per_req:.0f} ms per request):"
        )
        print(f"  {'  host process (agentlite host, own)':<52}{host.host_cpu * per_req:>10.0f}ms")
        print(f"  {'  in-box: runner + codex (+ nsenter, box init)':<52}{boxes_cpu * per_req:>10.0f}ms")
        print(f"  {'  model server (this bench process)':<52}{host.bench_cpu * per_req:>10.0f}ms")
        print(f"  {'  total':<52}{(host.tree_cpu + host.bench_cpu) * per_req:>10.0f}ms")
        turn_cpu_ms = statistics.median(bare.turn_cpu) * 1000
        print(f"  {'  for comparison: one bare codex turn, in-box':<52}{turn_cpu_ms:>10.0f}ms")
        print(
            "  formula: with c boxes busy all the time, each request holds a slot for wall x c / requests\n"
            "  on average (an upper bound: slots idle while the host starts and while the last group\n"
            "  drains). Minus the bare box spawn (create + exec true + remove) that leaves what a request\n"
            "  costs beyond an empty box: the in-box runner, the codex turn itself, the model server and\n"
            "  the host's bookkeeping. Minus a bare codex turn instead leaves roughly the host's own\n"
            "  overhead, but the bare figures are measured one at a time, while the host runs c turns on\n"
            f"  {os.cpu_count()} CPUs, so CPU contention inflates the slot time too."
        )
        return 0
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if bare is not None:
            await bare.aclose()
        if (host_home / "sandbox").is_dir():
            leftover_runtime = SandboxRuntime(host_home)
            for box in await leftover_runtime.list():
                await leftover_runtime.remove(box.name, force=True)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="Throughput of `agentlite host --jsonl` with trivial turns.")
    parser.add_argument("--requests", type=int, default=100, help="requests to send (default 100)")
    parser.add_argument("--groups", type=int, default=5, help="groups to spread them over (default 5)")
    parser.add_argument(
        "--max-concurrent", type=int, default=DEFAULT_MAX_CONCURRENT, help="host's --max-concurrent"
    )
    parser.add_argument(
        "--bare-rounds", type=int, default=10, help="bare spawn and bare codex rounds (default 10)"
    )
    args = parser.parse_args()
    if min(args.requests, args.groups, args.max_concurrent, args.bare_rounds) < 1:
        parser.error("--requests, --groups, --max-concurrent and --bare-rounds must be at least 1")
    if codex_path() is None:
        print(
            "codex CLI not found: install the pinned agent CLIs (scripts/install.sh, or npm ci in agent-clis/) "
            "or point AGENTLITE_AGENT_CLIS at a folder holding node_modules/.bin/codex",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(run(args.requests, args.groups, args.max_concurrent, args.bare_rounds))


if __name__ == "__main__":
    sys.exit(main())
