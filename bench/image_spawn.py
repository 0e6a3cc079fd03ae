"""Box spawn latency in the sandbox's image mode against host-root mode and a bare ``bwrap``.

Per round it times, for each variant, ``SandboxRuntime.create`` plus ``exec(["true"])`` until the
command exits (the box is removed untimed): image mode (root = the unpacked guest image, uid 1000),
host-root mode (the host's system folders), and one bare ``bwrap ... -- /bin/true`` on the image.
Variants are interleaved, rotating which goes first. Prints p50/p95 in ms and the image/host ratio.
Target: image mode at most 1.2x host-root mode at p50.

The image comes from the cache (built first when missing, ~1.5 min): ``--home`` (default
``$AGENTLITE_TEST_IMAGE_HOME`` or ``/var/tmp/agentlite-test-image``).

Run: ``.venv/bin/python bench/image_spawn.py [--runs N] [--home DIR]`` (N >= 30, default 40).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from agentlite.box.base import BoxSpec
from agentlite.box.sandbox import SandboxRuntime
from agentlite.image.builder import image_rootfs_for_sandbox

WARMUP = 3
MIN_RUNS = 30
TARGET_RATIO = 1.2


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def drain(lines: AsyncIterator[bytes]) -> list[bytes]:
    return [line async for line in lines]


class Bench:
    def __init__(self, home: Path, rootfs: Path) -> None:
        self.image = SandboxRuntime(home / "image", rootfs=rootfs)
        self.host = SandboxRuntime(home / "host")
        self.rootfs = rootfs
        self.spec = BoxSpec(network=False)
        self.bwrap = shutil.which("bwrap") or "bwrap"
        self.counter = 0

    async def box(self, runtime: SandboxRuntime) -> float:
        self.counter += 1
        name = f"agentlite-bench-image-{self.counter}"
        started = time.perf_counter()
        await runtime.create(name, self.spec)
        try:
            proc = await runtime.exec(name, ["true"])
            await proc.close_stdin()
            out, err = await asyncio.gather(drain(proc.stdout_lines()), drain(proc.stderr_lines()))
            code = await proc.wait()
            elapsed = time.perf_counter() - started
        finally:
            await runtime.remove(name, force=True)
        if code != 0:
            raise RuntimeError(f"`true` in {name} exited {code}: {out!r} {err!r}")
        return elapsed

    async def bare(self) -> float:
        argv = [
            self.bwrap,
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-net",
        ]
        argv += ["--ro-bind", str(self.rootfs), "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        argv += ["--uid", "1000", "--gid", "1000", "--clearenv", "--", "/bin/true"]
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"bare bwrap exited {proc.returncode}: {out!r} {err!r}")
        return time.perf_counter() - started


async def run(runs: int, image_home: Path) -> int:
    t0 = time.monotonic()
    rootfs = image_rootfs_for_sandbox(image_home)
    print(f"image rootfs: {rootfs} (ready in {time.monotonic() - t0:.1f} s)")
    home = Path(tempfile.mkdtemp(prefix="agentlite-bench-image-spawn-"))
    bench = Bench(home, rootfs)
    variants: dict[str, Callable[[], Awaitable[float]]] = {
        "image mode box": lambda: bench.box(bench.image),
        "host-root mode box": lambda: bench.box(bench.host),
        "bare bwrap (image)": bench.bare,
    }
    samples: dict[str, list[float]] = {label: [] for label in variants}
    try:
        for _ in range(WARMUP):
            for measure in variants.values():
                await measure()
        order = list(variants)
        for round_no in range(runs):
            shift = round_no % len(order)
            for label in order[shift:] + order[:shift]:
                samples[label].append(await variants[label]())
    finally:
        shutil.rmtree(home, ignore_errors=True)
    stats = {k: (percentile(v, 50) * 1000, percentile(v, 95) * 1000) for k, v in samples.items()}
    print(f"box spawn (create + exec true): {runs} interleaved runs per variant, {WARMUP} warm-up")
    print(f"{'variant':<22}{'p50 ms':>10}{'p95 ms':>10}")
    for label, (p50, p95) in stats.items():
        print(f"{label:<22}{p50:>10.1f}{p95:>10.1f}")
    ratio50 = stats["image mode box"][0] / stats["host-root mode box"][0]
    ratio95 = stats["image mode box"][1] / stats["host-root mode box"][1]
    print(f"{'ratio image/host-root':<22}{ratio50:>9.2f}x{ratio95:>9.2f}x")
    print(
        f"target: <= {TARGET_RATIO:.1f}x host-root at p50 -> {'PASS' if ratio50 <= TARGET_RATIO else 'MISS'}"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help=f"timed runs per variant (>= {MIN_RUNS})")
    default_home = os.environ.get("AGENTLITE_TEST_IMAGE_HOME", "/var/tmp/agentlite-test-image")
    parser.add_argument("--home", type=Path, default=Path(default_home), help="image cache home")
    args = parser.parse_args()
    if args.runs < MIN_RUNS:
        parser.error(f"--runs must be at least {MIN_RUNS}")
    return asyncio.run(run(args.runs, args.home))


if __name__ == "__main__":
    sys.exit(main())
