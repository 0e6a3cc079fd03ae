"""Box spawn latency: an agentlite sandbox box against a bare ``bwrap`` call, side by side.

Per iteration it times (a) ``SandboxRuntime.create`` (default network mode ``egress``: own network
namespace, proxy helper and bridge; the box's cgroup with its limits, bwrap started as the
unprivileged box user with ``--disable-userns`` and the seccomp filter) plus ``exec(["true"])``
(cgroup join, nsenter, setpriv, the in-box filter loader ``python -S -I``, about 17 ms of it) until the command
exits (the box is removed afterwards, outside the timed section) and (b) one bare
``bwrap ... -- /bin/true`` started with asyncio and awaited. The two variants are interleaved round
by round (alternating which goes first) so machine noise hits both alike. Prints p50 and p95 in ms
and the agentlite/bare ratios. Target: agentlite <= 2.0x bare at p50.

Run: ``.venv/bin/python bench/box_spawn.py [--runs N]`` (N >= 30, default 40).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from agentlite.box.base import BoxSpec
from agentlite.box.sandbox import SandboxRuntime

WARMUP = 3
MIN_RUNS = 30
TARGET_P50_RATIO = 2.0

BARE_BWRAP = [
    "bwrap",
    "--unshare-user",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-net",
    "--ro-bind",
    "/usr",
    "/usr",
    "--symlink",
    "usr/bin",
    "/bin",
    "--symlink",
    "usr/lib",
    "/lib",
    "--symlink",
    "usr/lib64",
    "/lib64",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--tmpfs",
    "/tmp",
    "--",
    "/bin/true",
]


def percentile(values: list[float], pct: float) -> float:
    """Linear-interpolated percentile (``pct`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def has_hardware_virtualization() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            if flags & {"vmx", "svm"}:
                return True
    return False


async def drain(lines: AsyncIterator[bytes]) -> list[bytes]:
    return [line async for line in lines]


class SpawnBench:
    def __init__(self, home: Path) -> None:
        self.runtime = SandboxRuntime(home)
        # The default network mode, egress: own namespace, the host-side proxy helper, the in-box bridge.
        self.spec = BoxSpec()
        self.bwrap = shutil.which("bwrap") or "bwrap"
        self._counter = 0
        # The two halves of the agentlite variant, for the breakdown rows.
        self.parts: dict[str, list[float]] = {"  of which create": [], "  of which exec true": []}

    async def agentlite_box(self) -> float:
        """Seconds for create + exec ``true`` until exit; the box is removed untimed."""
        self._counter += 1
        name = f"agentlite-bench-spawn-{self._counter}"
        started = time.perf_counter()
        await self.runtime.create(name, self.spec)
        created = time.perf_counter()
        try:
            proc = await self.runtime.exec(name, ["true"])
            await proc.close_stdin()
            out, err = await asyncio.gather(drain(proc.stdout_lines()), drain(proc.stderr_lines()))
            code = await proc.wait()
            finished = time.perf_counter()
        finally:
            await self.runtime.remove(name, force=True)
        if code != 0:
            raise RuntimeError(f"`true` in box {name} exited {code}: stdout={out!r} stderr={err!r}")
        self.parts["  of which create"].append(created - started)
        self.parts["  of which exec true"].append(finished - created)
        return finished - started

    async def bare_bwrap(self) -> float:
        """Seconds for one bare ``bwrap ... -- /bin/true`` until exit."""
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            self.bwrap,
            *BARE_BWRAP[1:],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"bare bwrap exited {proc.returncode}: stdout={out!r} stderr={err!r}")
        return elapsed

    async def cleanup(self) -> None:
        for box in await self.runtime.list():
            await self.runtime.remove(box.name, force=True)
        await self.runtime.aclose()


async def run(runs: int) -> int:
    home = Path(tempfile.mkdtemp(prefix="agentlite-bench-spawn-"))
    bench = SpawnBench(home)
    variants: dict[str, Callable[[], Awaitable[float]]] = {
        "agentlite box": bench.agentlite_box,
        "bare bwrap": bench.bare_bwrap,
    }
    samples: dict[str, list[float]] = {label: [] for label in variants}
    try:
        for _ in range(WARMUP):
            for measure in variants.values():
                await measure()
        for part in bench.parts.values():
            part.clear()
        order = list(variants)
        for round_no in range(runs):
            # Alternate which variant goes first, so neither always runs right after the other.
            for label in order if round_no % 2 == 0 else reversed(order):
                samples[label].append(await variants[label]())
    finally:
        await bench.cleanup()
        shutil.rmtree(home, ignore_errors=True)

    def p50_p95(values: list[float]) -> tuple[float, float]:
        return percentile(values, 50) * 1000, percentile(values, 95) * 1000

    stats = {label: p50_p95(values) for label, values in samples.items()}
    box_p50, box_p95 = stats["agentlite box"]
    bare_p50, bare_p95 = stats["bare bwrap"]
    ratio_p50, ratio_p95 = box_p50 / bare_p50, box_p95 / bare_p95

    print(f"box spawn: {runs} interleaved runs per variant ({WARMUP} warm-up runs each, untimed)")
    print(f"{'variant':<22}{'p50 ms':>10}{'p95 ms':>10}")
    for label, (p50, p95) in stats.items():
        print(f"{label:<22}{p50:>10.1f}{p95:>10.1f}")
        if label == "agentlite box":
            for part, values in bench.parts.items():
                part_p50, part_p95 = p50_p95(values)
                print(f"{part:<22}{part_p50:>10.1f}{part_p95:>10.1f}")
    print(f"{'ratio agentlite/bare':<22}{ratio_p50:>9.2f}x{ratio_p95:>9.2f}x")
    verdict = "PASS" if ratio_p50 <= TARGET_P50_RATIO else "MISS"
    print(f"target: <= {TARGET_P50_RATIO:.1f}x bare at p50 -> {verdict} ({ratio_p50:.2f}x)")
    if has_hardware_virtualization():
        print("boxlite: hardware virtualization present (vmx/svm); a boxlite VM spawn could be measured too")
    else:
        print("boxlite: bare boxlite call skipped: no hardware virtualization (no vmx/svm in /proc/cpuinfo)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Box spawn latency: agentlite sandbox vs bare bwrap.")
    parser.add_argument("--runs", type=int, default=40, help=f"timed runs per variant (>= {MIN_RUNS})")
    args = parser.parse_args()
    if args.runs < MIN_RUNS:
        parser.error(f"--runs must be at least {MIN_RUNS}")
    return asyncio.run(run(args.runs))


if __name__ == "__main__":
    sys.exit(main())
