"""What moving a group's files costs: packing its state on one node and unpacking it on the next.

A synthetic group (``--files`` files spread over folders, ``--mib`` MiB in all, a few symlinks a
box could have planted) is packed with :func:`agentlite.placement.group_files.pack_state` (the
no-follow walk the node runs after every turn) and unpacked with ``unpack_state`` (what the new
node runs before the box starts); the host's part in between is one file write. p50/p95 over
``--rounds``, and MiB/s. Timing is reported, never asserted.

Run: ``.venv/bin/python bench/group_copy.py [--rounds 10] [--files 2000] [--mib 50]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

from agentlite.placement.group_files import node_group_paths, pack_state, unpack_state


def make_group(root: Path, files: int, mib: int) -> None:
    paths = node_group_paths(root, "bench", "g")
    size = max(1, mib * 1024 * 1024 // files)
    for i in range(files):
        folder = paths.workspace / f"d{i % 40}" / f"e{i % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i}.txt").write_bytes(os.urandom(size))
    paths.agent_home.mkdir(parents=True, exist_ok=True)
    (paths.agent_home / "session.jsonl").write_bytes(os.urandom(64 * 1024))
    for i in range(5):
        (paths.workspace / f"link{i}").symlink_to("/etc")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--mib", type=int, default=50)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the left-out symlinks are expected here
    with tempfile.TemporaryDirectory() as tmp:
        old, new = Path(tmp) / "old", Path(tmp) / "new"
        make_group(old, args.files, args.mib)
        packs, unpacks, size = [], [], 0
        for _ in range(args.rounds):
            started = time.perf_counter()
            packed = pack_state(node_group_paths(old, "bench", "g"))
            packs.append(time.perf_counter() - started)
            started = time.perf_counter()
            unpack_state(packed.data, node_group_paths(new, "bench", "g"))
            unpacks.append(time.perf_counter() - started)
            size = len(packed.data)
        mib = size / 1024 / 1024
        print(f"group: {packed.files} files, {mib:.1f} MiB copied, {len(packed.skipped)} entries left out")
        print("| step | p50 s | p95 s | MiB/s (p50) |")
        print("|---|---|---|---|")
        for name, values in (("pack (old node)", packs), ("unpack (new node)", unpacks)):
            p50 = statistics.median(values)
            print(f"| {name} | {p50:.3f} | {pct(values, 0.95):.3f} | {mib / p50:.0f} |")


if __name__ == "__main__":
    main()
