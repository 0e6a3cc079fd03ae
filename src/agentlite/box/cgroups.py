"""One cgroup per sandbox box: memory, CPU and process limits that the kernel enforces.

Boxes live in a subtree of the cgroup agentlite itself runs in (``<own cgroup>/agentlite/<box>``),
so a box never escapes the limits its host was given. Two layouts are handled:

- cgroup v1 (one hierarchy per controller, as on this machine and most CI runners, as root): the box
  gets a folder in the ``memory``, ``cpu``, ``cpuacct`` and ``pids`` hierarchies.
- cgroup v2 (one unified hierarchy): the box gets one folder; the controllers must be enabled in the
  subtree, which works as root at the top of a cgroup namespace or in a cgroup delegated to us
  (``systemd-run --user --scope -p Delegate=yes``).

The host creates the folders and writes the limits before the box's first process starts, and every
process of the box (bwrap and each ``exec``) joins them before it runs (see :func:`join_argv`).
Where a limit cannot be enforced, :func:`probe` says which and why; nothing fails because of it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SUBTREE = "agentlite"
CFS_PERIOD_US = 100_000
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
V2_CONTROLLERS = ("memory", "cpu", "pids")
LIMIT_NAMES = ("memory", "cpus", "pids")
STALE_AFTER = 300.0


@dataclass(frozen=True)
class Support:
    """Which limits this machine can enforce for boxes, and why not for the others."""

    version: int | None
    #: The folder new box cgroups are made in, per v1 controller (one entry, key "", on v2).
    bases: dict[str, Path] = field(default_factory=dict)
    #: limit name ("memory", "cpus", "pids") -> reason it cannot be enforced here.
    missing: dict[str, str] = field(default_factory=dict)

    def holds(self, limit: str) -> bool:
        return self.version is not None and limit not in self.missing


@dataclass(frozen=True)
class BoxCgroup:
    """The cgroup folders of one box (one per v1 controller, one on v2)."""

    version: int
    paths: dict[str, Path]

    def procs_files(self) -> list[str]:
        return [str(p / "cgroup.procs") for p in self.paths.values()]

    def as_json(self) -> dict[str, object]:
        return {"version": self.version, "paths": {k: str(v) for k, v in self.paths.items()}}

    @classmethod
    def from_json(cls, data: object) -> BoxCgroup | None:
        if not isinstance(data, dict) or data.get("version") not in (1, 2):
            return None
        paths = data.get("paths")
        if not isinstance(paths, dict):
            return None
        return cls(int(data["version"]), {str(k): Path(str(v)) for k, v in paths.items()})

    def _file(self, controller: str, name: str) -> Path | None:
        folder = self.paths.get("" if self.version == 2 else controller)
        return None if folder is None else folder / name

    def oom_kills(self) -> int:
        """How many processes of the box the kernel killed for running out of its memory."""
        path = self._file("memory", "memory.events" if self.version == 2 else "memory.oom_control")
        if path is None:
            return 0
        try:
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def cpu_seconds(self) -> float | None:
        """CPU time used by the box's processes so far."""
        try:
            if self.version == 1:
                path = self._file("cpuacct", "cpuacct.usage")
                return None if path is None else int(path.read_text()) / 1e9
            path = self._file("cpu", "cpu.stat")
            if path is None:
                return None
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
        except (OSError, ValueError):
            return None
        return None

    def pids(self) -> list[int]:
        found: set[int] = set()
        for path in self.procs_files():
            with contextlib.suppress(OSError, ValueError):
                found.update(int(x) for x in Path(path).read_text().split())
        return sorted(found)

    def remove(self) -> bool:
        """Remove the folders; False when processes are still in them (the kernel refuses)."""
        ok = True
        for path in self.paths.values():
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                ok = False
        return ok


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup per v1 controller, and under "" its v2 cgroup."""
    own: dict[str, str] = {}
    try:
        text = Path("/proc/self/cgroup").read_text()
    except OSError:
        return own
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    return own


def _writable_dir(path: Path) -> str | None:
    """None when we can make box cgroups in ``path``, else why not."""
    try:
        path.mkdir(exist_ok=True)
    except OSError as exc:
        return f"cannot create {path}: {exc.strerror}"
    if not os.access(path, os.W_OK):
        return f"{path} is not writable"
    return None


@functools.cache
def probe() -> Support:
    """Find the cgroup layout and which limits can be enforced (cached per process)."""
    if (CGROUP_ROOT / "cgroup.controllers").is_file():
        return _probe_v2()
    if (CGROUP_ROOT / "memory").is_dir() or (CGROUP_ROOT / "pids").is_dir():
        return _probe_v1()
    why = "no cgroup filesystem at /sys/fs/cgroup"
    return Support(None, {}, dict.fromkeys(LIMIT_NAMES, why))


def _probe_v1() -> Support:
    own = _own_cgroups()
    bases: dict[str, Path] = {}
    missing: dict[str, str] = {}
    needs = {"memory": ("memory",), "cpus": ("cpu", "cpuacct"), "pids": ("pids",)}
    for controller in V1_CONTROLLERS:
        mount = CGROUP_ROOT / controller
        if not mount.is_dir() or controller not in own:
            continue
        base = mount / own[controller].lstrip("/") / SUBTREE
        if _writable_dir(base) is None:
            bases[controller] = base
    for limit, controllers in needs.items():
        absent = [c for c in controllers if c not in bases]
        if absent:
            where = ", ".join(str(CGROUP_ROOT / c) for c in absent)
            reason = "not root" if os.geteuid() != 0 else "not mounted or not writable"
            missing[limit] = f"cgroup v1 controller at {where}: {reason}"
    return Support(1, bases, missing)


def _probe_v2() -> Support:
    own = _own_cgroups().get("", "/")
    here = CGROUP_ROOT / own.lstrip("/")
    base = here / SUBTREE
    if why := _writable_dir(base):
        hint = "run as root, or in a delegated cgroup (systemd-run --user --scope -p Delegate=yes)"
        return Support(2, {}, dict.fromkeys(LIMIT_NAMES, f"cgroup v2: {why}; {hint}"))
    missing: dict[str, str] = {}
    # Hand the controllers down: our cgroup to the subtree, the subtree to each box. Writing ours
    # fails with EBUSY when our own cgroup holds processes (v2's no-internal-process rule).
    for folder in (here, base):
        for controller in V2_CONTROLLERS:
            with contextlib.suppress(OSError):
                (folder / "cgroup.subtree_control").write_text(f"+{controller}")
    try:
        enabled = set((base / "cgroup.subtree_control").read_text().split())
    except OSError:
        enabled = set()
    for limit, controller in (("memory", "memory"), ("cpus", "cpu"), ("pids", "pids")):
        if controller not in enabled:
            missing[limit] = (
                f"cgroup v2 controller `{controller}` is not delegated to {base} "
                "(run as root, or under systemd-run --user --scope -p Delegate=yes)"
            )
    return Support(2, {"": base}, missing)


def create(name: str, *, memory_mib: int, cpus: int, pids: int) -> BoxCgroup | None:
    """Make the box's cgroup with its limits written; None when no limit can be enforced here.

    A leftover folder of a dead box with the same name is reused (its limits are rewritten).
    """
    support = probe()
    if support.version is None or not support.bases:
        return None
    paths: dict[str, Path] = {}
    for controller, base in support.bases.items():
        path = base / name
        path.mkdir(exist_ok=True)
        paths[controller] = path
    group = BoxCgroup(support.version, paths)
    limits = _limit_files(group, memory_mib=memory_mib, cpus=cpus, pids=pids)
    try:
        for path, value in limits:
            path.write_text(value)
    except OSError:
        group.remove()
        raise
    return group


def _limit_files(group: BoxCgroup, *, memory_mib: int, cpus: int, pids: int) -> list[tuple[Path, str]]:
    support = probe()
    memory = str(memory_mib * 1024 * 1024)
    files: list[tuple[Path | None, str]] = []
    if group.version == 1:
        if support.holds("memory"):
            files.append((group._file("memory", "memory.limit_in_bytes"), memory))
            swap = group._file("memory", "memory.memsw.limit_in_bytes")
            if swap is not None and swap.exists():
                # The same figure for memory plus swap: a box cannot page its excess out to swap.
                files.append((swap, memory))
        if support.holds("cpus"):
            files.append((group._file("cpu", "cpu.cfs_period_us"), str(CFS_PERIOD_US)))
            files.append((group._file("cpu", "cpu.cfs_quota_us"), str(CFS_PERIOD_US * cpus)))
        if support.holds("pids"):
            files.append((group._file("pids", "pids.max"), str(pids)))
    else:
        if support.holds("memory"):
            files.append((group._file("memory", "memory.max"), memory))
            files.append((group._file("memory", "memory.swap.max"), "0"))
        if support.holds("cpus"):
            files.append((group._file("cpu", "cpu.max"), f"{CFS_PERIOD_US * cpus} {CFS_PERIOD_US}"))
        if support.holds("pids"):
            files.append((group._file("pids", "pids.max"), str(pids)))
    return [
        (p, v) for p, v in files if p is not None and (p.exists() or not p.name.startswith("memory.swap"))
    ]


def join_argv(group: BoxCgroup | None) -> list[str]:
    """A prefix that puts the command into ``group`` before it runs: ``sh`` writes its own pid into
    each ``cgroup.procs``, then execs the rest of the line (one fork-free exec, about a millisecond)."""
    if group is None:
        return []
    files = group.procs_files()
    script = 'for f; do [ "$f" = -- ] && break; echo $$ > "$f" || exit 125; shift; done; shift; exec "$@"'
    return ["/bin/sh", "-c", script, "agentlite-cgroup-join", *files, "--"]


def sweep(prefix: str, is_present: Callable[[str], bool], failed: dict[str, str] | None = None) -> list[str]:
    """Remove the empty cgroups named ``prefix + box`` whose box is not present; return the box
    names removed. A cgroup with processes in it is never removed (the kernel refuses); each one
    that could not go is put in ``failed`` with the reason.

    ``is_present`` is asked after the cgroup was listed: a box's folder is made before its cgroup,
    so a box being created is always seen as present. Empty cgroups of other homes (a deleted test
    home never sweeps again) go once they are older than ``STALE_AFTER`` seconds: a box joins its
    cgroup milliseconds after making it."""
    removed = []
    now = time.time()
    for base in probe().bases.values():
        try:
            entries = list(base.iterdir())
        except OSError:
            continue
        for entry in entries:
            box = entry.name[len(prefix) :]
            try:
                if not entry.is_dir():
                    continue
                ours = entry.name.startswith(prefix)
                if (ours and not is_present(box)) or (not ours and now - entry.stat().st_mtime > STALE_AFTER):
                    entry.rmdir()  # refused while processes are in it
                    removed.append(entry.name)
            except FileNotFoundError:
                continue  # gone by itself (another home's sweep, or its box's own remove)
            except OSError as exc:
                if failed is not None:
                    failed[entry.name] = exc.strerror or str(exc)
    return sorted(set(removed))
