"""Guest image build time, cold and from the cache, and its sizes.

Cold: a full build (``force=True``) into a fresh home, step by step. Cache hit: ``build_image`` again
with the same inputs. Then the sizes: the layer uncompressed (tar) and compressed (gzip blob), the
layout on disk, and the unpacked tree the sandbox's image mode uses (with its unpack time).
Target: at most 400 MB compressed with both CLIs.

Run: ``.venv/bin/python bench/image_build.py [--home DIR] [--keep]`` (a cold build takes ~1.5 min;
the default home is a temporary folder, removed at the end unless ``--keep``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from agentlite.image.builder import ROOTFS_DIR, build_image, disk_usage, unpack_rootfs

TARGET_COMPRESSED = 400_000_000


def mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="image cache home (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="agentlite-bench-image-", dir="/var/tmp"))
    try:
        started = time.monotonic()

        def progress(step: str, seconds: float | None) -> None:
            if seconds is not None:
                print(f"  {step:<10}{seconds:7.1f} s")

        print("cold build:")
        cold = build_image(home, force=True, progress=progress)
        cold_s = time.monotonic() - started
        print(f"  {'total':<10}{cold_s:7.1f} s")
        t = time.monotonic()
        hit = build_image(home)
        hit_s = time.monotonic() - t
        assert hit.cached and hit.digest == cold.digest
        t = time.monotonic()
        rootfs = unpack_rootfs(cold.layout, cold.layout.parent / ROOTFS_DIR)
        unpack_s = time.monotonic() - t
        print(f"cache hit: {hit_s * 1000:.0f} ms (same digest {cold.digest[:19]})")
        print(f"layer: {mb(cold.uncompressed_size)} tar, {mb(cold.compressed_size)} gzip")
        print(f"layout on disk: {mb(disk_usage(cold.layout))}")
        print(f"unpacked tree on disk: {mb(disk_usage(rootfs))} (unpacked in {unpack_s:.1f} s)")
        print(f"versions: {cold.versions}")
        ok = cold.compressed_size <= TARGET_COMPRESSED
        print(f"target: <= {mb(TARGET_COMPRESSED)} compressed -> {'PASS' if ok else 'MISS'}")
    finally:
        if args.home is None and not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
