"""Bytecode for the modules a box runs, written by the host before its first box.

The host finds those files by path, never by importing them: the host side does not import guest
code.

A box starts the runner (and the agent CLI starts the MCP server) with ``PYTHONDONTWRITEBYTECODE``
and the package mounted from the host, so a box never caches compiled modules itself; and the host
never imports these modules, so nothing caches them either, unless the package was installed from a
wheel (pip compiles at install). Without bytecode every box start compiles them again: about 10 ms
of CPU for the runner on a small machine. :func:`ensure` compiles the few files once per host
process, and only those whose bytecode is missing or stale.
"""

from __future__ import annotations

import functools
from pathlib import Path

#: The box side of the package: what ``python -m agentlite.guest.runner`` and ``python -m
#: agentlite.guest.mcp_server`` import (backends/ and runner/ whole).
BOX_MODULES = (
    "__init__.py",
    "core/__init__.py",
    "core/box_env.py",
    "core/errors.py",
    "core/names.py",
    "core/schedules.py",
    "core/clock.py",
    "run/__init__.py",
    "run/wire.py",
    "run/protocol.py",
    "run/acp_client.py",
    "guest/__init__.py",
    "guest/mcp_server.py",
)
BOX_PACKAGES = ("guest/backends", "guest/runner")


def box_sources() -> list[Path]:
    root = Path(__file__).resolve().parents[1]  # the agentlite package
    files = [root / name for name in BOX_MODULES]
    for package in BOX_PACKAGES:
        files += sorted((root / package).glob("*.py"))
    return [f for f in files if f.is_file()]


@functools.cache
def ensure() -> int:
    """Compile the box-side modules whose bytecode is missing or stale; returns how many were
    compiled. A package folder the host cannot write (a system install) is left as it is."""
    import compileall

    compiled = 0
    for source in box_sources():
        try:
            if _stale(source) and compileall.compile_file(source, quiet=2):
                compiled += 1
        except OSError:
            continue
    return compiled


def _stale(source: Path) -> bool:
    import importlib.util

    cached = Path(importlib.util.cache_from_source(str(source)))
    try:
        header = cached.read_bytes()[:16]
    except OSError:
        return True
    stat = source.stat()
    # The header of a timestamp-checked pyc: magic, flags 0, source mtime, source size.
    expected = (
        importlib.util.MAGIC_NUMBER
        + (0).to_bytes(4, "little")
        + (int(stat.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
        + (stat.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    )
    return header != expected
