"""Boxes as Linux namespace sandboxes made with bubblewrap (``bwrap``).

A box is a detached ``bwrap`` process tree in new user, pid, ipc and uts namespaces (and a new
network namespace when the network is off). Its root is a fresh tmpfs holding the host's system
folders read-only, a private ``/tmp``, a home folder and the box's volumes: no home folders of the
host, no ``/root``, ``/var``, ``/mnt`` or host ``/tmp``, and none of the host's environment.

The box's init (the pid 1 of its pid namespace) sleeps until the box is stopped; commands join the
box's namespaces with ``nsenter``, drop every capability in a filter loader and start with a clean
environment through ``env -i``. Killing the init kills every process of the box at once, because the
kernel tears down a pid namespace with its pid 1.

State lives in ``<home>/sandbox/<box name>/box.json``; whether a box runs is read from the init's pid
and start time, so a reused pid never passes for a live box. The state is on disk (``"starting"``)
before the box's first process starts, and a removal deletes it only after every process is gone.
Each box's ``bwrap`` carries ``AGENTLITE_SANDBOX_BOX=<box folder>`` in its environment: a marker only
our boxes have, so a box whose state folder was lost is still found (:meth:`untracked`) and reaped.

Image mode (``SandboxRuntime(home, rootfs=<unpacked guest image>)``, see :mod:`agentlite.image.builder`): the
box's root holds the image's top-level folders read-only instead of the host's system folders, the
box runs as the image's non-root user (uid/gid 1000, home ``/home/agent``), with the image's paths and
environment; only the host's DNS settings and CA bundle are bound in at start, never baked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from agentlite.box import box_user, cgroups, seccomp
from agentlite.box.base import BoxInfo, BoxRuntime, BoxSpec, BoxState
from agentlite.box.boxnet import BoxNetwork, helper_process
from agentlite.box.guest_layout import GUEST_ENV, GUEST_PYTHON, GUEST_UID
from agentlite.box.procs import (
    BOX_MARKER_ENV,
    is_same_process,
    kill_and_wait,
    processes_marked,
    reap_children,
    start_time,
)
from agentlite.core import names as _names
from agentlite.core.atomic import write_atomic
from agentlite.core.errors import (
    BoxExecFailed,
    BoxExists,
    BoxNotFound,
    BoxRemoveFailed,
    BoxStartFailed,
    ConfigError,
    RuntimeUnavailable,
)

if TYPE_CHECKING:
    from agentlite.box.guest_layout import GuestLayout

log = logging.getLogger("agentlite.box.sandbox")

BOX_HOME = "/home/agent"
BASE_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
_START_TIMEOUT = 15.0
_CGROUP_EMPTY_TIMEOUT = 5.0
#: What bwrap may write to the box's init.log (its own error messages); the rest is dropped.
INIT_LOG_CAP = 64 * 1024
# The fds bwrap is given: its info (json with the init's pid), the init's "ready", the filter.
_INFO_FD, _READY_FD, _SECCOMP_FD = 3, 4, 5

# The parts of /etc that ordinary programs read. Nothing else of /etc is shown: it can hold secrets
# (/etc/ssl/private, /etc/shadow, credentials of services).
_ETC_ENTRIES = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "gai.conf",
    "group",
    "host.conf",
    "hostname",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "protocols",
    "resolv.conf",
    "services",
    "ssl/certs",
    "ssl/openssl.cnf",
    "timezone",
    "profile",
    "bash.bashrc",
    "inputrc",
    "gitconfig",
)
_ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


@functools.cache
def host_system_paths() -> tuple[Path, ...]:
    """Host folders outside ``/usr`` that a box needs read-only: the Python interpreter, the
    installed ``agentlite`` package (a box runs ``python -m agentlite.guest.runner``) and the agent CLIs.
    Computed once per process: they do not move while it runs."""
    import agentlite
    from agentlite.core.agent_clis import agent_clis_prefix

    candidates = {
        Path(sys.prefix),
        Path(sys.base_prefix),
        Path(sys.exec_prefix),
        Path(os.path.realpath(sys.executable)).parent.parent,
        Path(agentlite.__file__).resolve().parent.parent,
    }
    if (clis := agent_clis_prefix()) is not None:
        candidates.add(clis)
    return tuple(sorted(p for p in candidates if p.is_dir() and not _under(p, Path("/usr"))))


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_box_name(name: str) -> None:
    _names.check_box_name(name)


class SandboxRuntime(BoxRuntime):
    """Boxes as bubblewrap namespace sandboxes; see the module docstring."""

    name = "sandbox"

    def __init__(
        self, home: Path, *, extra_ro_paths: Sequence[Path] = (), rootfs: Path | None = None
    ) -> None:
        self._root = Path(home) / "sandbox"
        self._extra_ro_paths = [Path(p) for p in extra_ro_paths]
        self._rootfs = None if rootfs is None else Path(rootfs).resolve()
        if self._rootfs is not None and not (self._rootfs / "etc" / "passwd").is_file():
            raise ConfigError(f"sandbox rootfs `{rootfs}` is not an unpacked root filesystem (no etc/passwd)")
        self._tools = _find_tools()
        # bwrap processes we spawned and must reap; added from worker threads, reaped from any.
        self._our_children: set[int] = set()
        self._children_lock = threading.Lock()
        self._box_uid, self._box_gid = box_user.host_ids()
        self._oom_killed: set[str] = set()

    # -- listing -------------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        check_box_name(name)
        return self._root / name

    def _read_state(self, name: str) -> dict[str, Any] | None:
        try:
            raw = (self._dir(name) / "box.json").read_bytes()
        except FileNotFoundError:
            return None
        try:
            state = json.loads(raw)
            if not isinstance(state, dict):
                raise ValueError("not an object")
            return state
        except ValueError:
            # A box whose state file is damaged still exists (so it can be removed); it cannot run.
            return {"name": name}

    def _state_of(self, state: dict[str, Any]) -> BoxState:
        init_pid, init_started = state.get("init_pid"), state.get("init_started")
        if (
            isinstance(init_pid, int)
            and isinstance(init_started, float | int)
            and is_same_process(init_pid, float(init_started))
        ):
            return BoxState.RUNNING
        return BoxState.STOPPED

    def _info(self, name: str, state: dict[str, Any]) -> BoxInfo:
        created = state.get("created_at")
        created_at = float(created) if isinstance(created, float | int) else None
        return BoxInfo(name=name, runtime=self.name, state=self._state_of(state), created_at=created_at)

    async def get(self, name: str) -> BoxInfo | None:
        self._reap()
        if not self._dir(name).is_dir():
            return None
        state = self._read_state(name) or {"name": name}
        return self._info(name, state)

    async def list(self) -> list[BoxInfo]:
        self._reap()
        if not self._root.is_dir():
            return []
        boxes = []
        for entry in sorted(self._root.iterdir()):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            state = self._read_state(entry.name) or {"name": entry.name}
            boxes.append(self._info(entry.name, state))
        return boxes

    def _etc_snapshot(self) -> Path:
        """A copy of the allowed parts of /etc, rebuilt when any of them changes.

        One bind mount of this folder costs a fraction of one mount per entry, and box start-up is
        dominated by mounts.
        """
        signature = hashlib.sha256()
        present = []
        for entry in _ETC_ENTRIES:
            path = Path("/etc") / entry
            try:
                st = path.stat()
            except OSError:
                continue
            present.append(entry)
            signature.update(f"{entry}:{st.st_mtime_ns}:{st.st_size}:{st.st_ino};".encode())
        snapshot = self._root / f".etc-{signature.hexdigest()[:16]}"
        if snapshot.is_dir():
            return snapshot
        staging = self._root / f".etc-staging-{os.getpid()}-{time.monotonic_ns()}"
        for entry in present:
            source, target = Path("/etc") / entry, staging / entry
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, symlinks=True, ignore_dangling_symlinks=True)
            else:
                shutil.copy2(source, target)  # follows a symlinked file such as resolv.conf
        try:
            staging.rename(snapshot)
        except OSError:  # another host built the same snapshot first
            shutil.rmtree(staging, ignore_errors=True)
        return snapshot

    # -- create --------------------------------------------------------------------------------

    def _bwrap_argv(self, name: str, spec: BoxSpec, network: BoxNetwork) -> list[str]:
        argv = [self._tools["bwrap"], "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        argv += ["--unshare-cgroup-try", "--hostname", name[:63], "--new-session"]
        argv += network.bwrap_args()
        # No user namespaces inside the box (bwrap makes the box's own one the last allowed); the
        # box's uid maps to the unprivileged host user bwrap runs as (see box_user).
        box_uid = str(self.box_uid_inside)
        argv += ["--disable-userns", "--uid", box_uid, "--gid", box_uid]
        if self._rootfs is not None:
            argv += _image_root_argv(self._rootfs)
        else:
            argv += ["--ro-bind", "/usr", "/usr"]
            for link in _ROOT_LINKS:
                host = Path("/") / link
                if host.is_symlink():
                    argv += ["--symlink", os.readlink(host), f"/{link}"]
                elif host.is_dir():
                    argv += ["--ro-bind", str(host), f"/{link}"]
            argv += ["--ro-bind", str(self._etc_snapshot()), "/etc"]
        # The private /tmp first: host paths bound below may live under the host's /tmp (a checkout
        # in /tmp), and a later tmpfs would hide them.
        tmp_mib = spec.tmp_mib or max(spec.memory_mib // 2, 16)
        argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(tmp_mib * 1024 * 1024), "--tmpfs", "/tmp"]
        argv += ["--dir", BOX_HOME]
        system_paths = host_system_paths() if self._rootfs is None else ()
        for path in [*system_paths, *self._extra_ro_paths]:
            argv += ["--ro-bind", str(path), str(path)]
        for volume in spec.volumes:
            if not volume.host.exists():
                raise ConfigError(f"volume host path `{volume.host}` does not exist")
            argv += ["--ro-bind" if volume.read_only else "--bind", str(volume.host), volume.guest]
        argv += ["--dir", spec.working_dir, "--chdir", spec.working_dir, "--clearenv"]
        for key, value in _box_env(spec.env, image=self._rootfs is not None).items():
            argv += ["--setenv", key, value]
        # The init starts the network bridges, tells us on fd 4 that the sandbox is fully set up,
        # then sleeps until killed.
        argv += ["--seccomp", str(_SECCOMP_FD), "--info-fd", str(_INFO_FD), "--", "/bin/sh", "-c"]
        argv.append((_WAIT_LOW_PORTS if _needs_low_ports(spec) else "") + network.init_steps() + _INIT_READY)
        return argv

    @property
    def box_uid_inside(self) -> int:
        """The uid (and gid) a box's processes have inside it."""
        return IMAGE_UID if self._rootfs is not None else 0

    def _grant_access(self, spec: BoxSpec, box_dir: Path) -> None:
        """As root, let the box user reach every mount source and write the writable volumes."""
        if os.geteuid() != 0:
            return
        uid, gid = self._box_uid, self._box_gid
        for volume in spec.volumes:
            box_user.grant_traverse(volume.host, uid, gid)
            box_user.grant_tree(volume.host, uid, gid, write=not volume.read_only)
        for path in self._mount_sources(box_dir):
            box_user.grant_traverse(path, uid, gid)

    def _mount_sources(self, box_dir: Path) -> list[Path]:
        # The box's own folder holds its network sockets (net/), bound into it.
        sources = [self._root, box_dir / "net", *self._extra_ro_paths]
        return [*sources, *(host_system_paths() if self._rootfs is None else [self._rootfs])]

    async def create(self, name: str, spec: BoxSpec) -> BoxInfo:
        box_dir = self._dir(name)
        self._root.mkdir(parents=True, exist_ok=True)
        network = BoxNetwork.for_box(box_dir, spec.net_mode, spec.allow_entries, spec.exposed_ports)
        spec = dataclasses.replace(spec, env={**network.env(), **spec.env})
        argv = self._bwrap_argv(name, spec, network)  # validates volumes before anything is made
        low_ports = _needs_low_ports(spec)
        try:
            box_dir.mkdir(mode=0o700)
        except FileExistsError:
            raise BoxExists(name, f"box `{name}` already exists") from None
        state: dict[str, Any] = {"name": name, "runtime": self.name, "status": "starting"}
        group: cgroups.BoxCgroup | None = None
        try:
            if missing := self.unenforced_limits():
                log.warning("box %s: limits not enforced here: %s", name,
                            "; ".join(f"{k}: {v}" for k, v in missing.items()))  # fmt: skip
            group = await asyncio.to_thread(self._prepare, name, spec, box_dir)
            # The network helper first: its pid is in the state written before the box's first process.
            # As root, the helper that parses the box's proxy requests runs as the box user.
            run_as = (self._box_uid, self._box_gid) if os.geteuid() == 0 else None
            await asyncio.to_thread(network.start, run_as)
            if network.helper_pid is not None:
                with self._children_lock:
                    self._our_children.add(network.helper_pid)
            state |= {
                "created_at": time.time(),
                "working_dir": spec.working_dir,
                "network": spec.network,
                "memory_mib": spec.memory_mib,
                "cpus": spec.cpus,
                "pids": spec.pids,
                "box_uid": self._box_uid,
                "cgroup": None if group is None else group.as_json(),
                "volumes": [str(v) for v in spec.volumes],
                "env": dict(spec.env),
                "rootfs": None if self._rootfs is None else str(self._rootfs),
                **network.state(),
            }
            # On disk before the first process starts, so no process of ours is ever without state.
            _write_state(box_dir, state)
            try:
                init_pid, bwrap_pid = await asyncio.to_thread(self._launch, box_dir, argv, group, low_ports)
            except BoxStartFailed as exc:
                # Access to a mount source can be lost between our grant and bwrap's start (a chmod
                # of a folder above it resets the ACL mask; pytest does it to its temp root), and a
                # concurrent grant may restore it before we could look: grant again, retry once.
                log.info("box %s: start failed, granting access again and retrying once: %s", name, exc)
                await asyncio.to_thread(self._grant_access, spec, box_dir)
                init_pid, bwrap_pid = await asyncio.to_thread(self._launch, box_dir, argv, group, low_ports)
            init_started = start_time(init_pid)
            if init_started is None:
                raise BoxStartFailed(name, f"box `{name}` exited right after it started: {_tail(box_dir)}")
            state |= {
                "status": "running",
                "init_pid": init_pid,
                "init_started": init_started,
                "bwrap_pid": bwrap_pid,
                "bwrap_started": start_time(bwrap_pid),
            }
            _write_state(box_dir, state)
        except BaseException:
            # Bounded: _destroy's kills give up after a fixed time, so this cannot hang a teardown.
            await asyncio.shield(asyncio.to_thread(self._destroy, name, box_dir, state))
            raise
        return BoxInfo(name=name, runtime=self.name, state=BoxState.RUNNING)

    def _prepare(self, name: str, spec: BoxSpec, box_dir: Path) -> cgroups.BoxCgroup | None:
        """Host-side set-up before the box's first process: file access for the box user, the
        compiled syscall filter, and the box's cgroup with its limits."""
        self._grant_access(spec, box_dir)
        seccomp.bpf_file(self._root)
        self._sweep_cgroups()
        try:
            return cgroups.create(
                self._cgroup_prefix + name, memory_mib=spec.memory_mib, cpus=spec.cpus, pids=spec.pids
            )
        except OSError as exc:
            raise BoxStartFailed(name, f"cannot set up the cgroup of box `{name}`: {exc}") from exc

    @functools.cached_property
    def _cgroup_prefix(self) -> str:
        # Box cgroups of every home share one subtree: each home sweeps only its own.
        return "h" + hashlib.sha256(str(self._root.resolve()).encode()).hexdigest()[:8] + "-"

    def _sweep_cgroups(self) -> None:
        """Remove the empty cgroups of this home's boxes whose folder is gone (a box being made
        or still listed keeps its cgroup; remove takes it away)."""
        failed: dict[str, str] = {}
        if removed := cgroups.sweep(self._cgroup_prefix, lambda box: (self._root / box).exists(), failed):
            log.info("swept cgroups of gone boxes: %s", ", ".join(removed))
        if failed:  # a busy cgroup of a box still being torn down: the next sweep gets it
            log.debug("%d cgroups not swept: %s", len(failed), failed)

    def unenforced_limits(self) -> dict[str, str]:
        return dict(cgroups.probe().missing)

    def out_of_memory(self, name: str) -> bool:
        if name in self._oom_killed:
            return True
        group = cgroups.BoxCgroup.from_json((self._read_state(name) or {}).get("cgroup"))
        return group is not None and group.oom_kills() > 0

    def _launch(
        self, box_dir: Path, argv: list[str], group: cgroups.BoxCgroup | None, low_ports: bool = False
    ) -> tuple[int, int]:
        info_r, info_w = os.pipe()
        ready_r, ready_w = os.pipe()
        log_fd, sink_pid = _capped_log(box_dir / "init.log", INIT_LOG_CAP)
        with self._children_lock:
            self._our_children.add(sink_pid)
        null_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        filter_fd = os.open(seccomp.bpf_file(self._root), os.O_RDONLY | os.O_CLOEXEC)
        # Joined to the cgroup as root, then started as the box user: every process of the box
        # is in its cgroup from the first one on, and none is host root.
        argv = [*cgroups.join_argv(group), *box_user.launch_prefix(self._box_uid, self._box_gid, self._tools["setpriv"]), *argv]  # fmt: skip
        try:
            # posix_spawn with setsid: the box gets its own session, is not our process group's
            # child in any signal sense, and survives us. No Python code runs in the child.
            pid = os.posix_spawn(
                argv[0],
                argv,
                {"PATH": BASE_PATH, BOX_MARKER_ENV: self._marker(box_dir.name)},
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, null_fd, 0),
                    (os.POSIX_SPAWN_DUP2, log_fd, 1),
                    (os.POSIX_SPAWN_DUP2, log_fd, 2),
                    (os.POSIX_SPAWN_DUP2, info_w, _INFO_FD),
                    (os.POSIX_SPAWN_DUP2, ready_w, _READY_FD),
                    (os.POSIX_SPAWN_DUP2, filter_fd, _SECCOMP_FD),
                ],
                setsid=True,
            )
        finally:
            for fd in (info_w, ready_w, log_fd, null_fd, filter_fd):
                os.close(fd)
        with self._children_lock:
            self._our_children.add(pid)
        try:
            info = _read_json(info_r, _START_TIMEOUT)
            if low_ports and info is not None:
                _allow_low_ports(int(info["child-pid"]))
            ready = _read_all(ready_r, _START_TIMEOUT)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            ready = f"{exc}".encode()
        finally:
            os.close(ready_r)
            os.close(info_r)
        if ready != b"ok":
            kill_and_wait([pid, *(group.pids() if group else [])])
            _wait_exit(sink_pid, 2.0)  # what bwrap said is in init.log once the sink has drained
            raise BoxStartFailed(box_dir.name, f"box `{box_dir.name}` failed to start: {_tail(box_dir)}")
        try:
            init_pid = int(info["child-pid"])  # type: ignore[index]
        except (ValueError, KeyError, TypeError):
            kill_and_wait([pid])
            raise BoxStartFailed(box_dir.name, f"bwrap gave no init pid for `{box_dir.name}`") from None
        return init_pid, pid

    # -- exec ----------------------------------------------------------------------------------

    async def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> SandboxProcess:
        state = self._read_state(name)
        if state is None:
            raise BoxNotFound(name, f"Cannot exec in box `{name}`: it does not exist")
        if self._state_of(state) is not BoxState.RUNNING:
            raise BoxExecFailed(name, f"Cannot exec in box `{name}`: it is stopped")
        if not argv:
            raise ConfigError("exec needs a command")
        image = state.get("rootfs") is not None
        inside = str(IMAGE_UID if image else 0)
        group = cgroups.BoxCgroup.from_json(state.get("cgroup"))
        box_env = _box_env({**state.get("env", {}), **(env or {})}, image=image)
        t = self._tools
        # nsenter passes its environment on, so the box env is simply ours to give; --wd takes the
        # init's working folder, and `env -C` is needed only for another one. The command joins the
        # box's cgroup first (as root, on the host), enters the box's namespaces, and the loader
        # (seccomp.LOADER) sets no_new_privs, installs the box's syscall filter from an inherited fd,
        # and only then takes the box's uid (mapped to the box user) and drops every capability: until
        # its filter is in, it holds what the box's own processes lack, which keeps them out of its
        # memory. An image box's uid is not its namespace's root, so nsenter cannot take it (the
        # loader would start without capabilities, as the box's own uid): host root enters the
        # other namespaces, and the loader enters the user namespace itself (USERNS_FD).
        python = _guest_python() if image else sys.executable
        command = [
            *cgroups.join_argv(group),
            t["nsenter"],
            "--target",
            str(state["init_pid"]),
            *([] if image else ["--user"]),
            "--mount",
            "--pid",
            "--ipc",
            "--uts",
            "--net",
            "--root",
            "--wd",
            *([] if image else ["--setuid", inside, "--setgid", inside]),
            "--",
            python,
            "-S",
            "-I",
            "-c",
            seccomp.LOADER,
        ]
        loader_at = len(command)
        # An image box's loader starts as host root: the dynamic loader's variables (a library the
        # box wrote, say) reach the command only through `env`, after the filter, as the box's uid.
        late = [f"{k}={box_env.pop(k)}" for k in list(box_env) if image and _is_loader_variable(k)]
        chdir = ["-C", cwd] if cwd is not None and cwd != state.get("working_dir") else []
        if chdir or late:
            command += ["/usr/bin/env", *chdir, *late]
        command += _image_argv(argv) if image else argv
        fds: list[int] = []
        try:
            fds.append(os.open(seccomp.bpf_file(self._root), os.O_RDONLY | os.O_CLOEXEC))
            if image:
                fds.append(os.open(f"/proc/{state['init_pid']}/ns/user", os.O_RDONLY | os.O_CLOEXEC))
            command[loader_at:loader_at] = [str(fds[0]), str(fds[1]) if image else "-1", inside]
            return await SandboxProcess.start(command, box_env, pass_fds=fds)
        except OSError as exc:
            raise BoxExecFailed(name, f"Cannot exec in box `{name}`: {exc}") from exc
        finally:
            for fd in fds:
                os.close(fd)

    # -- stop and remove -----------------------------------------------------------------------

    async def stop(self, name: str) -> None:
        state = self._read_state(name)
        if state is None:
            raise BoxNotFound(name, f"Cannot stop box `{name}`: it does not exist")
        await asyncio.to_thread(self._kill_box, name, state)

    def _kill_box(self, name: str, state: dict[str, Any], marked: list[int] | None = None) -> None:
        """End the box's processes: those its state names, else (``marked``, or a fresh scan)
        those found by its marker."""
        # Only processes that are still the ones the box started: never signal a reused pid.
        pids = [
            pid
            for pid, started in (
                (state.get("init_pid"), state.get("init_started")),
                (state.get("bwrap_pid"), state.get("bwrap_started")),
                helper_process(state),
            )
            if isinstance(pid, int) and isinstance(started, float | int) and is_same_process(pid, started)
        ]
        # A state without the init's pid (still starting, damaged, or lost): find the box's
        # processes by its marker instead (a scan of /proc, so only when needed).
        if not isinstance(state.get("init_pid"), int):
            found = self._marked_tree(name) if marked is None else marked
            pids += [pid for pid in found if pid not in pids]
        left = kill_and_wait(pids)
        if left:
            raise BoxRemoveFailed(name, f"box `{name}`: processes {left} survived SIGKILL")

    def _marker(self, name: str) -> str:
        return os.path.join(os.path.abspath(self._root), name)

    def _marked_tree(self, name: str | None = None, *, reuse: bool = False) -> list[int]:
        """Processes of the box ``name`` (of every box when None) found by their marker: each marked
        ``bwrap`` and everything below it (its init and commands carry no marker of their own).
        ``reuse``: the cleanup pass's scan, if one is in progress (:func:`one_scan_per_pass`)."""
        root = os.path.abspath(self._root) + os.sep
        wanted = None if name is None else self._marker(name)
        pids: list[int] = []
        for pid, value in processes_marked(BOX_MARKER_ENV, root, reuse=reuse).items():
            if wanted is not None and value != wanted:
                continue
            pids.append(pid)
            try:
                pids += [child.pid for child in psutil.Process(pid).children(recursive=True)]
            except psutil.Error:
                pass
        return pids

    async def untracked(self) -> list[str]:
        """Names of boxes whose processes run but whose state folder is gone (deleted under them)."""
        return await asyncio.to_thread(self._untracked)

    def _untracked(self) -> list[str]:
        root = os.path.abspath(self._root) + os.sep
        names = set()
        for pid, value in processes_marked(BOX_MARKER_ENV, root, reuse=True).items():
            name = value[len(root) :]
            if os.sep in name or name.startswith("."):
                continue
            # Checked after the scan: a box made after it has its folder before its first process.
            if not (self._root / name).is_dir() and start_time(pid) is not None:
                names.add(name)
        return sorted(names)

    async def remove(self, name: str, *, force: bool = False) -> None:
        box_dir = self._dir(name)
        state = self._read_state(name)
        if state is None and not box_dir.is_dir():
            # An untracked box (its folder was deleted under it) is still ours to reap.
            # A box without a folder starts no new processes: the pass's scan (or one now) finds them all.
            if force and (
                marked := await asyncio.to_thread(functools.partial(self._marked_tree, name, reuse=True))
            ):
                await asyncio.to_thread(self._kill_box, name, {}, marked)
                return
            raise BoxNotFound(name, f"Cannot remove box `{name}`: it does not exist")
        state = state or {"name": name}
        if self._state_of(state) is BoxState.RUNNING and not force:
            raise BoxRemoveFailed(name, f"Cannot remove box `{name}`: it is running (use force)")
        await asyncio.to_thread(self._destroy, name, box_dir, state)

    def _destroy(self, name: str, box_dir: Path, state: dict[str, Any] | None = None) -> None:
        state = state or self._read_state(name) or {}
        self._kill_box(name, state)
        self._remove_cgroup(name, cgroups.BoxCgroup.from_json(state.get("cgroup")))
        # Rename first so a half-deleted folder is never listed as a box.
        doomed = box_dir.with_name(f".removing-{name}-{os.getpid()}-{time.monotonic_ns()}")
        try:
            box_dir.rename(doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    def _remove_cgroup(self, name: str, group: cgroups.BoxCgroup | None) -> None:
        """Remember an out-of-memory kill, then remove the cgroup once its processes are gone (the
        kernel refuses before; a killed init's children take a moment to be reaped)."""
        if group is None:
            return
        if group.oom_kills() > 0:
            self._oom_killed.add(name)
        deadline = time.monotonic() + _CGROUP_EMPTY_TIMEOUT
        while not group.remove():
            if left := group.pids():
                # Only the box's processes are in its cgroup (an exec'd command's host-side nsenter
                # among them): whatever is left once the init is dead goes too.
                kill_and_wait(left)
            if time.monotonic() > deadline:
                log.warning("cgroup of box %s not removed: processes %s remain", name, group.pids())
                return
            time.sleep(0.01)

    def _reap(self) -> None:
        with self._children_lock:
            children = list(self._our_children)
        reap_children(children)
        gone = {pid for pid in children if start_time(pid) is None}
        with self._children_lock:
            self._our_children -= gone

    async def aclose(self) -> None:
        self._reap()

    def guest_layout(self) -> GuestLayout:
        # Image mode: the image's venv and environment; the loopback ports a run needs are bridged.
        from agentlite.box.guest_layout import host_layout, image_layout

        return host_layout() if self._rootfs is None else image_layout()


class _ExitAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Tells when the process itself exits. ``Process.wait()`` also waits for its pipes to close,
    which a background child holding them can delay without end."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


#: How long :meth:`SandboxProcess.kill` waits for the killed command to exit before it gives up.
_KILL_WAIT = 5.0


class SandboxProcess:
    """A command running in a sandbox box (the host-side ``nsenter`` process and its child)."""

    def __init__(self, proc: asyncio.subprocess.Process, exited: asyncio.Event | None = None) -> None:
        self._proc = proc
        self._exited = exited

    @classmethod
    async def start(
        cls, command: Sequence[str], env: Mapping[str, str], *, pass_fds: Sequence[int] = ()
    ) -> SandboxProcess:
        loop = asyncio.get_running_loop()
        protocol_holder: list[_ExitAwareProtocol] = []

        def make_protocol() -> _ExitAwareProtocol:
            protocol_holder.append(_ExitAwareProtocol(2**16, loop))
            return protocol_holder[0]

        transport, protocol = await loop.subprocess_exec(
            make_protocol,
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
        return cls(asyncio.subprocess.Process(transport, protocol, loop), protocol.exited)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def stdout_lines(self) -> AsyncIterator[bytes]:
        assert self._proc.stdout is not None
        return _lines(self._proc.stdout)

    def stderr_lines(self) -> AsyncIterator[bytes]:
        assert self._proc.stderr is not None
        return _lines(self._proc.stderr)

    async def write_stdin(self, data: bytes) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(data)
        await self._proc.stdin.drain()

    async def close_stdin(self) -> None:
        assert self._proc.stdin is not None
        if not self._proc.stdin.is_closing():
            self._proc.stdin.close()
        try:
            await self._proc.stdin.wait_closed()
        except (BrokenPipeError, ConnectionResetError):
            pass

    async def wait(self) -> int:
        """Its exit code, as soon as it exits (not when everything holding its pipes is gone)."""
        if self._exited is None:
            return await self._proc.wait()
        await self._exited.wait()
        code = self._proc.returncode
        assert code is not None
        return code

    async def kill(self) -> None:
        if self._proc.returncode is not None:
            # Not the group of a reaped leader (its pid may be reused); what it left running in the
            # background goes with the box.
            return
        # nsenter forked the command into the box's pid namespace; both are in this process group.
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            await asyncio.wait_for(self.wait(), _KILL_WAIT)
        except TimeoutError:
            log.error("command pid %s did not exit %.0f s after SIGKILL", self._proc.pid, _KILL_WAIT)


async def _lines(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    # Read in chunks rather than readline(): agent events can be longer than any fixed line limit.
    pending = b""
    while chunk := await reader.read(65536):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line + b"\n"
    if pending:
        yield pending


def _is_loader_variable(name: str) -> bool:
    """Variables the dynamic loader (ld.so) acts on at startup."""
    return name.startswith("LD_") or name == "GLIBC_TUNABLES"


def _box_env(env: Mapping[str, str], *, image: bool = False) -> dict[str, str]:
    if not image:
        base = {"PATH": BASE_PATH, "HOME": BOX_HOME, "LANG": "C.UTF-8"}
        return {**base, **{str(k): str(v) for k, v in env.items()}}
    merged = {**GUEST_ENV, **{str(k): str(v) for k, v in env.items()}}
    # The image's own folders come first; a PATH given for host-root boxes keeps only what is left.
    own = GUEST_ENV["PATH"].split(":")
    merged["PATH"] = ":".join([*own, *(p for p in merged["PATH"].split(":") if p and p not in own)])
    merged["HOME"] = BOX_HOME
    return merged


# Image mode: the image's user, which top-level folders of the image are shown, which host files are
# bound over the image's placeholders at start.
IMAGE_UID = GUEST_UID
_IMAGE_SKIP = frozenset(
    {"dev", "proc", "sys", "tmp", "run", "home", "root", "mnt", "media", "srv", "workspace"}
)
_IMAGE_INJECT = ("/etc/resolv.conf", "/etc/hosts", "/etc/ssl/certs/ca-certificates.crt")


def _image_root_argv(rootfs: Path) -> list[str]:
    argv: list[str] = []
    for entry in sorted(rootfs.iterdir(), key=lambda p: p.name):
        if entry.name in _IMAGE_SKIP:
            continue
        if entry.is_symlink():
            argv += ["--symlink", os.readlink(entry), f"/{entry.name}"]
        elif entry.is_dir():
            argv += ["--ro-bind", str(entry), f"/{entry.name}"]
    # Host-specific settings the box needs, bound over the image's own files (which stay generic).
    for path in _IMAGE_INJECT:
        host, guest = Path(path), rootfs / path.lstrip("/")
        if host.exists() and (guest.exists() or guest.is_symlink()):
            argv += ["--ro-bind", str(host.resolve()), path]
    return argv


def _image_argv(argv: Sequence[str]) -> list[str]:
    """Host-root commands that name the host's Python run the image's venv Python instead."""
    first = argv[0]
    host_pythons = {sys.executable, os.path.realpath(sys.executable)}
    if first in host_pythons:
        return [GUEST_PYTHON, *argv[1:]]
    return list(argv)


# Ports below 1024 on the box's loopback: its init holds no capability over its network namespace
# (that belongs to the user namespace above the one --disable-userns leaves it in), so the host, as
# root, lets unprivileged processes bind them there, and the init waits for that before its bridges.
_LOW_PORT_KNOB = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
_WAIT_LOW_PORTS = (
    f'i=0; while read -r v < {_LOW_PORT_KNOB} && [ "$v" != 0 ]; do i=$((i+1)); '
    '[ $i -lt 5000 ] || { echo "agentlite: ports below 1024 cannot be bridged into the box" >&2; exit 1; }; '
    "sleep 0.002; done\n"
)


def _needs_low_ports(spec: BoxSpec) -> bool:
    return any(port < 1024 for port in spec.exposed_ports)


def _allow_low_ports(init_pid: int) -> None:
    """Set the box's network namespace to let any uid bind any port (as root; a no-op otherwise,
    and the box then fails to start with the init's message)."""
    import ctypes

    if os.geteuid() != 0:
        return
    failure: list[BaseException] = []

    def in_box_netns() -> None:
        # setns moves only this thread, which ends right after: no other code runs in the box's
        # network namespace.
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/proc/{init_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), "setns into the box's network namespace")
            finally:
                os.close(fd)
            with open(_LOW_PORT_KNOB, "w") as knob:
                knob.write("0")
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=in_box_netns, name="agentlite-box-netns")
    worker.start()
    worker.join()
    if failure:
        log.warning("cannot open ports below 1024 in the box's network: %s", failure[0])


def _read_chunks(fd: int, timeout: float) -> Iterator[bytes]:
    """What ``fd`` yields until it ends or ``timeout`` seconds have passed, chunk by chunk."""
    import select

    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            return
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        yield chunk


def _read_json(fd: int, timeout: float) -> dict[str, Any] | None:
    """bwrap's info: a JSON object, read until it parses (the fd may stay open in the box)."""
    data = b""
    for chunk in _read_chunks(fd, timeout):
        data += chunk
        try:
            value = json.loads(data)
        except ValueError:
            continue
        return value if isinstance(value, dict) else None
    return None


def _wait_exit(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            return
        time.sleep(0.005)


def _guest_python() -> str:
    return GUEST_PYTHON


_INIT_READY = "printf ok >&4; exec 3>&- 4>&- 5>&- </dev/null >/dev/null 2>&1; exec sleep infinity"
"""The init's last step: say ready, and hand no descriptor on (a box process can open the init's
``/proc/1/fd/*``: its output goes nowhere, never into the host's init.log)."""


def _capped_log(path: Path, cap: int) -> tuple[int, int]:
    """A descriptor for ``path`` that takes at most ``cap`` bytes: a pipe into ``head -c``, whose
    ``cat`` then drains and drops the rest, so a writer never blocks and the file never grows."""
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    null_fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        sink = ["/bin/sh", "-c", f"head -c {cap}; exec cat >/dev/null"]
        pid = os.posix_spawn(
            sink[0],
            sink,
            {"PATH": BASE_PATH},
            file_actions=[
                (os.POSIX_SPAWN_DUP2, read_fd, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, null_fd, 2),
            ],
            setsid=True,
        )
    finally:
        for fd in (read_fd, log_fd, null_fd):
            os.close(fd)
    return write_fd, pid


def _write_state(box_dir: Path, state: dict[str, Any]) -> None:
    # Runtime state, not an ownership record: no fsync, it is rewritten only while the box starts.
    write_atomic(box_dir / "box.json", json.dumps(state, indent=2).encode(), fsync=False, mode=0o600)


def _read_all(fd: int, timeout: float) -> bytes:
    return b"".join(_read_chunks(fd, timeout))


def _tail(box_dir: Path, limit: int = 500) -> str:
    try:
        text = (box_dir / "init.log").read_text(errors="replace").strip()
    except OSError:
        return "(no output)"
    return text[-limit:] or "(no output)"


def _find_tools() -> dict[str, str]:
    tools = {}
    for tool, package in (("bwrap", "bubblewrap"), ("nsenter", "util-linux"), ("setpriv", "util-linux")):
        path = shutil.which(tool, path=os.environ.get("PATH", "") + ":" + BASE_PATH)
        if path is None:
            raise RuntimeUnavailable("sandbox", f"`{tool}` is not installed", f"apt-get install -y {package}")
        tools[tool] = path
    return tools
