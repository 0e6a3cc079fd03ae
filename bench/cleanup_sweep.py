"""Orphan-cleanup sweep over many ownership records against a bare scan-and-parse of the same folder.

A temporary home gets N ownership records (default 1,000): half live (registered by this process
through ``ownership_for(home).register``, so its lease keeps them live) and half dead (same record
format, but their lease file is one nobody holds and their pid is gone). A fake in-bench runtime
lists a running box for every record and counts ``remove`` calls, so only the sweep logic is timed.

Per round, interleaved (rotating which goes first): (a) ``cleanup_orphans(runtime, home, "bench")``,
(b) ``os.scandir`` of the records folder plus ``json.loads`` of every record, and (c), for
information only, (b) plus unlinking the dead records (the file deletions any sweep must do). Before
every variant, outside the timed section, the dead records are re-created and flushed with
``os.sync()``. Every sweep is checked to remove exactly the dead records and keep the live ones.
Prints median ms and the cleanup/bare ratios. Target: cleanup <= 3.0x bare scan-and-parse.

The bench process's heartbeat thread is stopped after setup (``--with-heartbeat`` keeps it).

Run: ``.venv/bin/python bench/cleanup_sweep.py [--records 1000] [--rounds 7] [--with-heartbeat]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from agentlite.box.base import BoxInfo, BoxProcess, BoxRuntime, BoxSpec, BoxState
from agentlite.box.lifecycle import CleanupDecision, cleanup_orphans
from agentlite.box.ownership import HostOwnership, RecordStore, machine_boot_id, ownership_for

AGENT_ID = "bench"
TARGET_RATIO = 3.0


class FakeRuntime(BoxRuntime):
    """Lists a running box for every given name; ``remove`` only counts."""

    name = "bench"

    def __init__(self, names: Sequence[str]) -> None:
        self.boxes = [BoxInfo(n, "bench", BoxState.RUNNING) for n in names]
        self.removed: list[str] = []

    async def create(self, name: str, spec: BoxSpec) -> BoxInfo:
        raise NotImplementedError

    async def get(self, name: str) -> BoxInfo | None:
        return next((b for b in self.boxes if b.name == name), None)

    async def list(self) -> list[BoxInfo]:
        return list(self.boxes)

    async def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> BoxProcess:
        raise NotImplementedError

    async def stop(self, name: str) -> None:
        pass

    async def remove(self, name: str, *, force: bool = False) -> None:
        self.removed.append(name)


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


class Fixture:
    def __init__(self, home: Path, records: int) -> None:
        self.home = home
        self.store = RecordStore(home)
        self.ownership: HostOwnership = ownership_for(home)
        half = records // 2
        self.live = [f"agentlite-{AGENT_ID}-g-{i}" for i in range(half)]
        self.dead = [f"agentlite-{AGENT_ID}-g-{i}" for i in range(half, records)]
        self.dead_lease = self.store.lease_dir / "999999-0.lease"
        self.dead_pid = dead_pid()
        self.boot = machine_boot_id()

    def register_live(self) -> None:
        for name in self.live:
            self.ownership.register(name)

    def stop_heartbeat(self) -> None:
        """Stop this process's heartbeat: a tick landing in a timed sweep rewrites (and fsyncs)
        all 500 live records. The lease alone keeps them live."""
        self.ownership.stop_heartbeat()

    def write_dead(self) -> None:
        """(Re)create the dead records: the real record format, an unheld lease, a gone pid."""
        self.store.lease_dir.mkdir(parents=True, exist_ok=True)
        self.dead_lease.touch()  # left behind by a crashed host: exists, nobody holds its lock
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for name in self.dead:
            record = {
                "name": name,
                "pid": self.dead_pid,
                "boot_id": f"{self.dead_pid}:0",
                "machine_boot_id": self.boot,
                "lease": str(self.dead_lease),
                "started_at": now,
                "updated_at": now,
            }
            self.store.path(name).write_bytes(json.dumps(record, indent=2).encode())

    def on_disk(self) -> set[str]:
        return {p.name[: -len(".json")] for p in self.store.dir.glob("*.json") if not p.name.startswith(".")}

    def teardown(self) -> None:
        for name in self.live:
            self.ownership.unregister(name)  # nothing left for the heartbeat thread to rewrite


def bare_scan_and_parse(records_dir: Path) -> int:
    """The baseline: list the records folder and parse every record file."""
    parsed = 0
    with os.scandir(records_dir) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(".json") or not entry.is_file():
                continue
            with open(entry.path, "rb") as f:
                json.loads(f.read())
            parsed += 1
    return parsed


def bare_scan_parse_unlink(records_dir: Path, dead_lease: str) -> int:
    """Informational floor for a sweep: scan, parse, and unlink the dead records (no ownership checks)."""
    unlinked = 0
    with os.scandir(records_dir) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(".json") or not entry.is_file():
                continue
            with open(entry.path, "rb") as f:
                record = json.loads(f.read())
            if record.get("lease") == dead_lease:
                os.unlink(entry.path)
                unlinked += 1
    return unlinked


def check_sweep(fixture: Fixture, runtime: FakeRuntime, decisions: Sequence[CleanupDecision]) -> None:
    """Fail loudly unless the sweep removed exactly the dead records and kept every live one."""
    removed = {d.name for d in decisions if d.action == "remove"}
    kept = {d.name for d in decisions if d.action == "keep"}
    problems = []
    dead, live = set(fixture.dead), set(fixture.live)
    if removed != dead:
        problems.append(f"removed {len(removed)} boxes, {len(removed ^ dead)} differ from the dead set")
    if kept != live:
        problems.append(f"kept {len(kept)} boxes, {len(kept ^ live)} differ from the live set")
    if sorted(runtime.removed) != sorted(fixture.dead):
        problems.append(f"runtime.remove called {len(runtime.removed)} times, expected {len(fixture.dead)}")
    left = fixture.on_disk()
    if left != live:
        problems.append(f"{len(left & dead)} dead records left, {len(live - left)} live records missing")
    if problems:
        raise SystemExit("cleanup sweep verification FAILED: " + "; ".join(problems))


SWEEP = "cleanup_orphans"
BARE = "bare scan-and-parse"
BARE_UNLINK = "bare scan+parse+unlink"


async def run(records: int, rounds: int, heartbeat: bool) -> int:
    home = Path(tempfile.mkdtemp(prefix="agentlite-bench-sweep-"))
    fixture = Fixture(home, records)
    runtime = FakeRuntime([*fixture.live, *fixture.dead])
    times: dict[str, list[float]] = {SWEEP: [], BARE: [], BARE_UNLINK: []}

    def prepare() -> None:
        """Same folder contents before every variant, flushed to disk like records a crashed host
        left behind long ago (fresh unflushed files unlink several times faster on ext4)."""
        fixture.write_dead()
        os.sync()

    async def sweep() -> float:
        prepare()
        runtime.removed.clear()
        started = time.perf_counter()
        decisions = await cleanup_orphans(runtime, home, AGENT_ID)
        elapsed = time.perf_counter() - started
        check_sweep(fixture, runtime, decisions)
        return elapsed

    async def bare() -> float:
        prepare()
        started = time.perf_counter()
        parsed = bare_scan_and_parse(fixture.store.dir)
        elapsed = time.perf_counter() - started
        if parsed != records:
            raise SystemExit(f"bare scan parsed {parsed} records, expected {records}")
        return elapsed

    async def bare_unlink() -> float:
        prepare()
        started = time.perf_counter()
        unlinked = bare_scan_parse_unlink(fixture.store.dir, str(fixture.dead_lease))
        elapsed = time.perf_counter() - started
        if unlinked != len(fixture.dead):
            raise SystemExit(f"bare scan unlinked {unlinked} records, expected {len(fixture.dead)}")
        return elapsed

    variants: dict[str, Callable[[], Awaitable[float]]] = {SWEEP: sweep, BARE: bare, BARE_UNLINK: bare_unlink}
    try:
        fixture.register_live()
        if not heartbeat:
            fixture.stop_heartbeat()
        fixture.write_dead()
        total = len(fixture.on_disk())
        if total != records:
            raise SystemExit(f"setup wrote {total} records, expected {records}")
        for measure in variants.values():  # warm-up (imports, caches), untimed
            await measure()
        order = list(variants)
        for round_no in range(rounds):
            shift = round_no % len(order)  # rotate who goes first, so no variant always follows another
            for label in order[shift:] + order[:shift]:
                times[label].append(await variants[label]())
    finally:
        fixture.teardown()
        shutil.rmtree(home, ignore_errors=True)

    medians = {label: statistics.median(v) * 1000 for label, v in times.items()}
    ratio = medians[SWEEP] / medians[BARE]
    n_live, n_dead = len(fixture.live), len(fixture.dead)
    print(f"cleanup sweep: {records} records ({n_live} live, {n_dead} dead), {rounds} interleaved rounds")
    print(f"{'variant':<28}{'median ms':>11}{'min ms':>10}{'max ms':>10}")
    for label, values in times.items():
        lo, hi = min(values) * 1000, max(values) * 1000
        print(f"{label:<28}{medians[label]:>11.1f}{lo:>10.1f}{hi:>10.1f}")
    print(f"{'ratio cleanup/bare':<28}{ratio:>10.2f}x")
    floor = medians[SWEEP] / medians[BARE_UNLINK]
    print(f"{'ratio cleanup/bare+unlink':<28}{floor:>10.2f}x   (informational, includes the deletions)")
    if heartbeat:
        print("heartbeat thread left running (its 5 s refresh may land inside timed sweeps)")
    else:
        print("heartbeat thread stopped after setup (lease keeps the live records live)")
    print(f"verified every sweep: removed exactly the {n_dead} dead, kept the {n_live} live")
    verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
    print(f"target: <= {TARGET_RATIO:.1f}x bare scan-and-parse -> {verdict} ({ratio:.2f}x)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Orphan-cleanup sweep vs bare scan-and-parse.")
    parser.add_argument("--records", type=int, default=1000, help="record files, half live, half dead")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per variant")
    parser.add_argument(
        "--with-heartbeat", action="store_true", help="leave the ownership heartbeat thread running"
    )
    args = parser.parse_args()
    if args.records < 2 or args.records % 2:
        parser.error("--records must be an even number >= 2")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    return asyncio.run(run(args.records, args.rounds, args.with_heartbeat))


if __name__ == "__main__":
    sys.exit(main())
