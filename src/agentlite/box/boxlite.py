"""Boxes as BoxLite micro-VMs (the ``boxlite`` package).

BoxLite can create, list and remove boxes on any Linux host, but its VMs boot only with hardware
virtualization; :func:`agentlite.box.probe.can_boot_vm` says whether this machine has it.
Every ``boxlite`` error is translated into an AgentLite error here, at one boundary.

Each runtime object (one per host process) keeps its boxes in a BoxLite home of its own, so hosts
that overlap on one agentlite home never contend for BoxLite's one-runtime-per-home lock; see
:mod:`agentlite.box.boxlite_homes` for the layout and the rules between homes.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import boxlite

from agentlite.box import boxlite_homes as homes
from agentlite.box.base import BoxInfo, BoxRuntime, BoxSpec, BoxState, Volume
from agentlite.box.cleanup_report import CleanupDecision
from agentlite.box.guest_layout import BOXLITE_HOST_IP, GuestLayout, image_layout
from agentlite.box.network import NetworkMode
from agentlite.box.ownership import RecordStore, Verdict, ownership_for
from agentlite.core.clock import now_iso
from agentlite.core.errors import (
    AgentliteError,
    BoxError,
    BoxExecFailed,
    BoxExists,
    BoxNotFound,
    BoxRemoveFailed,
    BoxStartFailed,
    ConfigError,
)

log = logging.getLogger("agentlite.box.boxlite")

#: How often a host looks for removal requests, and republishes its state file.
REQUEST_POLL = 0.2
STATE_REFRESH = 2.0
#: How long a cleanup waits for a dead host's home (another cleanup may be emptying it).
DEAD_HOME_WAIT = 2.0
#: How long agent deletion waits for live hosts to remove the boxes it asked them to.
REQUEST_WAIT = 10.0
#: How long deleting a home we just closed waits for BoxLite to let go of its lock.
RELEASE_WAIT = 5.0

# Which AgentLite error each BoxLite error becomes; a test checks that none is missing.
ERROR_MAP: dict[type[BaseException], type[BoxError]] = {
    boxlite.NotFoundError: BoxNotFound,
    boxlite.AlreadyExistsError: BoxExists,
    boxlite.InvalidArgumentError: BoxStartFailed,
    boxlite.ConfigError: BoxStartFailed,
    boxlite.ImageError: BoxStartFailed,
    boxlite.UnsupportedError: BoxStartFailed,
    boxlite.ResourceExhaustedError: BoxStartFailed,
    boxlite.NetworkError: BoxStartFailed,
    boxlite.UpstreamUnavailableError: BoxStartFailed,
    boxlite.EngineError: BoxStartFailed,
    boxlite.StorageError: BoxStartFailed,
    boxlite.DatabaseError: BoxStartFailed,
    boxlite.MetadataError: BoxStartFailed,
    boxlite.InternalError: BoxStartFailed,
    boxlite.ParseError: BoxStartFailed,
    boxlite.InvalidStateError: BoxExecFailed,
    boxlite.StoppedError: BoxExecFailed,
    boxlite.SessionReapedError: BoxExecFailed,
    boxlite.ExecutionError: BoxExecFailed,
    boxlite.ExecError: BoxExecFailed,
    boxlite.TimeoutError: BoxExecFailed,
    boxlite.BoxliteError: BoxStartFailed,
}


@contextlib.contextmanager
def _translated(box: str, action: str) -> Iterator[None]:
    try:
        yield
    except AgentliteError:
        raise
    except boxlite.BoxliteError as exc:
        error = next((ours for theirs, ours in ERROR_MAP.items() if isinstance(exc, theirs)), BoxStartFailed)
        raise error(box, f"Cannot {action} box `{box}`: {exc}") from exc


_STATES = {"configured": BoxState.CONFIGURED, "running": BoxState.RUNNING}


class BoxliteRuntime(BoxRuntime):
    """Boxes as BoxLite micro-VMs, from an OCI image name or a local OCI layout (``rootfs_path``).

    ``home`` is the agentlite box home; this object's boxes live in its own BoxLite home under it
    (:attr:`box_home`), created and locked at the first box. ``manage_only`` makes a runtime that
    lists and cleans up but cannot create (``agentlite boxes``/``cleanup`` need no image).
    """

    name = "boxlite"

    def __init__(
        self,
        home: Path,
        *,
        image: str | None = None,
        rootfs_path: Path | None = None,
        manage_only: bool = False,
    ) -> None:
        if image is None and rootfs_path is None and not manage_only:
            raise ConfigError("the boxlite runtime needs `image` or `rootfs_path`")
        if rootfs_path is not None and not (Path(rootfs_path) / "oci-layout").is_file():
            raise ConfigError(
                f"rootfs path `{rootfs_path}` is not an OCI image layout (no `oci-layout` file)"
            )
        self._image = image
        self._rootfs_path = rootfs_path
        self.root = Path(home).resolve()
        self.host_id = homes.new_host_id()
        self.box_home: Path | None = homes.homes_root(self.root) / self.host_id
        self._rt: Any = None
        self._open_lock = threading.Lock()
        self._started_at = now_iso()
        self._known: list[homes.StateBox] = []
        self._publish_lock = threading.Lock()
        self._publish_started = self._published = 0
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- this host's own home --------------------------------------------------------------------

    def _opened(self) -> Any:
        """BoxLite on this host's home, opened (and the home created) on first use."""
        with self._open_lock:
            if self._rt is None:
                assert self.box_home is not None
                self.box_home.mkdir(parents=True, exist_ok=True)
                self._rt = homes.open_home(self.box_home)
                self._stop.clear()
                homes.write_state(self.box_home, self._state())
                self._watcher = threading.Thread(
                    target=self._watch, name="agentlite-boxlite-home", daemon=True
                )
                self._watcher.start()
                atexit.register(self._close)
            return self._rt

    def _state(self) -> homes.HostState:
        return homes.new_state(self.host_id, self._known, self._started_at)

    async def _publish(self) -> None:
        """Refresh the state file other processes read instead of opening this home."""
        rt, home = self._rt, self.box_home
        if rt is None or home is None:
            return
        with self._publish_lock:
            self._publish_started += 1
            generation = self._publish_started
        infos = await rt.list_info()
        boxes = [homes.StateBox(name=self._info(i).name, state=str(self._info(i).state)) for i in infos]
        # The watcher thread publishes too: a list taken earlier must not overwrite a later one.
        with self._publish_lock:
            if generation < self._published:
                return
            self._published, self._known = generation, boxes
            homes.write_state(home, self._state())

    def _watch(self) -> None:
        asyncio.run(self._serve_requests())

    async def _serve_requests(self) -> None:
        # Polls: a request is a file another process drops into this home's requests folder.
        last_publish = 0.0
        while not self._stop.is_set():
            assert self.box_home is not None
            if not self.box_home.is_dir():  # the home was deleted under us: nothing left to serve
                log.warning("boxlite home %s is gone; its watcher stops", self.box_home)
                return
            try:
                for path, box in homes.read_requests(self.box_home):
                    await self._serve_removal(path, box)
                if time.monotonic() - last_publish >= STATE_REFRESH:
                    await self._publish()
                    last_publish = time.monotonic()
            except Exception as exc:  # a host keeps serving through one bad round
                log.warning("boxlite home watcher error=%s", exc)
            await asyncio.sleep(REQUEST_POLL)

    async def _serve_removal(self, path: Path, box: str) -> None:
        assert self.box_home is not None
        if path != homes.request_path(self.box_home, box) or not box.startswith("agentlite-"):
            log.warning("ignoring a bad removal request %s", path.name)
            path.unlink(missing_ok=True)
            return
        with contextlib.suppress(BoxNotFound):
            await self.remove(box, force=True)
            log.info("removed box=%s on request", box)
        ownership_for(self.root).unregister(box)
        await self._publish()
        path.unlink(missing_ok=True)

    def _close(self) -> None:
        """Stop serving requests and release this home; delete it when no box is left in it."""
        self._stop.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=10)
        with self._open_lock:
            rt, self._rt = self._rt, None
            if rt is None:
                return
            try:
                empty = not asyncio.run(_list_info(rt))
            except boxlite.BoxliteError:
                empty = False
            assert self.box_home is not None
            if empty:  # with boxes left, they keep running and the lock goes with this process
                asyncio.run(_release(rt))
                del rt
                gc.collect()
                homes.delete_home(self.box_home, wait=RELEASE_WAIT)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._close)

    def guest_layout(self) -> GuestLayout:
        """The guest image's Python and environment; the host's loopback at BoxLite's host address."""
        return image_layout(host_loopback=BOXLITE_HOST_IP)

    async def create(self, name: str, spec: BoxSpec) -> BoxInfo:
        env, volumes = host_injections(spec)
        options = boxlite.BoxOptions(
            image=None if self._rootfs_path else self._image,
            rootfs_path=str(self._rootfs_path) if self._rootfs_path else None,
            memory_mib=spec.memory_mib,
            cpus=spec.cpus,
            env=list(env.items()),
            volumes=[(str(v.host), v.guest, v.read_only) for v in volumes],
            working_dir=spec.working_dir,
            auto_remove=False,
            network=network_spec(spec),
        )
        if self._image is None and self._rootfs_path is None:
            raise ConfigError("this boxlite runtime only manages boxes; it has no image to create one")
        with _translated(name, "create"):
            rt = await asyncio.to_thread(self._opened)
            if await rt.get_info(name) is not None:  # BoxLite reports this as a bad argument
                raise BoxExists(name, f"box `{name}` already exists")
            await rt.create(options, name=name)
            info = await rt.get_info(name)
            await self._publish()
        return self._info(info) if info is not None else BoxInfo(name, self.name, BoxState.CONFIGURED)

    def _info(self, info: Any) -> BoxInfo:
        state = (
            BoxState.RUNNING if info.state.running else _STATES.get(str(info.state.status), BoxState.STOPPED)
        )
        return BoxInfo(
            name=info.name or info.id, runtime=self.name, state=state, created_at=_epoch(info.created_at)
        )

    async def get(self, name: str) -> BoxInfo | None:
        if self._rt is None:
            return None  # this host's home is created with its first box
        with _translated(name, "get"):
            info = await self._rt.get_info(name)
        return None if info is None else self._info(info)

    async def list(self) -> list[BoxInfo]:
        """The boxes in this host's own home (other hosts' boxes: :meth:`other_hosts_boxes`)."""
        if self._rt is None:
            return []
        with _translated("*", "list"):
            infos = await self._rt.list_info()
        return [self._info(i) for i in infos]

    async def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> BoxliteProcess:
        if not argv:
            raise ConfigError("exec needs a command")
        with _translated(name, "exec in"):
            box = None if self._rt is None else await self._rt.get(name)
            if box is None:
                raise BoxNotFound(name, f"Cannot exec in box `{name}`: it does not exist")
            execution = await box.exec(argv[0], list(argv[1:]), list((env or {}).items()) or None, cwd=cwd)
        return BoxliteProcess(name, execution)

    async def stop(self, name: str) -> None:
        with _translated(name, "stop"):
            box = None if self._rt is None else await self._rt.get(name)
            if box is None:
                raise BoxNotFound(name, f"Cannot stop box `{name}`: it does not exist")
            await box.stop()

    async def remove(self, name: str, *, force: bool = False) -> None:
        rt = self._rt
        with _translated(name, "remove"):
            if rt is None or await rt.get_info(name) is None:
                raise BoxNotFound(name, f"Cannot remove box `{name}`: it does not exist")
            try:
                await rt.remove(name, force=force)
            except boxlite.InvalidStateError as exc:
                raise BoxRemoveFailed(name, f"Cannot remove box `{name}`: {exc}") from exc
            finally:
                await self._publish()

    # -- other hosts' homes ------------------------------------------------------------------------

    def other_homes(self) -> list[homes.HomeJudgement]:
        """A verdict on every other host's BoxLite home under this agentlite home (reads only)."""
        now = time.time()
        return [homes.judge_home(h, now) for h in homes.host_homes(self.root) if h != self.box_home]

    def other_hosts_boxes(self, prefix: str = "") -> list[tuple[BoxInfo, homes.HomeJudgement]]:
        """Other hosts' boxes as their hosts last published them, never opening their homes."""
        rows = []
        for judgement in self.other_homes():
            for box in judgement.state.boxes if judgement.state else []:
                if box.name.startswith(prefix):
                    state = (
                        BoxState(box.state) if box.state in BoxState._value2member_map_ else BoxState.STOPPED
                    )
                    rows.append((BoxInfo(box.name, self.name, state), judgement))
        return rows

    async def sweep_other_homes(
        self,
        prefix: str,
        *,
        include_live: bool = False,
        dry_run: bool = False,
        request_wait: float = REQUEST_WAIT,
    ) -> list[CleanupDecision]:
        """The cross-home part of orphan cleanup, for boxes whose names start with ``prefix``.

        A dead host's home is opened, this agent's boxes in it removed, and the home deleted once
        empty. A live host's home is never opened: its boxes are kept, or (``include_live``) its
        host is asked to remove them and they are reported pending until they are gone.
        """
        store = RecordStore(self.root)
        decisions: list[CleanupDecision] = []
        asked: list[tuple[str, homes.HomeJudgement]] = []
        for judgement in self.other_homes():
            listed = [
                b.name
                for b in (judgement.state.boxes if judgement.state else [])
                if b.name.startswith(prefix)
            ]
            where = f"in another host's BoxLite home ({judgement.reason})"
            if judgement.verdict.keeps_box:
                for name in listed:
                    if not include_live:
                        decisions.append(
                            CleanupDecision(name, "keep", f"kept: {where}", verdict=judgement.verdict)
                        )
                    elif dry_run:
                        decisions.append(
                            CleanupDecision(
                                name,
                                "remove",
                                f"would ask its host to remove it: {where}",
                                verdict=judgement.verdict,
                            )
                        )
                    else:
                        homes.request_removal(judgement.home, name)
                        asked.append((name, judgement))
                continue
            if dry_run:
                decisions += [
                    CleanupDecision(name, "remove", f"would remove: {where}", verdict=judgement.verdict)
                    for name in listed
                ]
                continue
            decisions += await self._empty_dead_home(judgement, prefix, store)
        if asked:
            decisions += await _await_requests(asked, request_wait)
        decisions += await self._sweep_shared_home(prefix, store, include_live, dry_run)
        return decisions

    async def _sweep_shared_home(
        self, prefix: str, store: RecordStore, include_live: bool, dry_run: bool
    ) -> list[CleanupDecision]:
        """Boxes an earlier AgentLite left in the agentlite home itself (one BoxLite home shared by
        every host), judged by their records. Left alone while a host of that version holds it."""
        if not (self.root / homes.LOCK_FILE).is_file():
            return []
        if homes.lock_held(self.root):
            log.info("shared BoxLite home %s is held by a host of an earlier version; not swept", self.root)
            return []
        try:
            rt = await asyncio.to_thread(homes.open_home, self.root, wait=DEAD_HOME_WAIT)
        except (boxlite.BoxliteError, homes.HomeBusy) as exc:
            log.warning("cannot open the shared BoxLite home %s: %s", self.root, exc)
            return []
        decisions = []
        try:
            for info in await rt.list_info():
                name = info.name or info.id
                if not name.startswith(prefix):
                    continue
                judgement = store.judge(name)
                where = f"in the shared BoxLite home of an earlier version ({judgement.reason})"
                # As for any record-less box: a tmp cleaner may have taken a live owner's record.
                unsure = judgement.record is None and store.may_have_lost_record(_epoch(info.created_at))
                if (judgement.verdict.keeps_box or unsure) and not include_live:
                    decisions.append(
                        CleanupDecision(name, "keep", f"kept: {where}", verdict=judgement.verdict)
                    )
                elif dry_run:
                    decisions.append(
                        CleanupDecision(name, "remove", f"would remove: {where}", verdict=judgement.verdict)
                    )
                else:
                    decisions.append(await self._remove_and_forget(rt, store, name, where, judgement.verdict))
        finally:
            await _release(rt)
            del rt
            gc.collect()
        return decisions

    async def _remove_and_forget(
        self, rt: Any, store: RecordStore, name: str, where: str, verdict: Verdict
    ) -> CleanupDecision:
        """Remove one box from an open BoxLite home and delete its record; a failed removal is
        reported in the decision, and the record goes either way."""
        error = None
        try:
            await rt.remove(name, force=True)
        except boxlite.BoxliteError as exc:
            error = f"{type(exc).__name__}: {exc}"
        self._forget(store, name)
        return CleanupDecision(name, "remove", f"removed: {where}", error is None, error, verdict)

    def _forget(self, store: RecordStore, name: str) -> None:
        """Delete a removed box's record (through this process's ownership when it is ours, so
        its heartbeat does not write it again)."""
        ownership = ownership_for(self.root)
        if ownership.owns(name):
            ownership.unregister(name)
        else:
            store.delete(name)

    async def _empty_dead_home(
        self, judgement: homes.HomeJudgement, prefix: str, store: RecordStore
    ) -> list[CleanupDecision]:
        where = f"in a dead host's BoxLite home ({judgement.reason})"
        try:
            rt = await asyncio.to_thread(homes.open_home, judgement.home, wait=DEAD_HOME_WAIT)
        except homes.HomeBusy as exc:
            names = (
                [b.name for b in judgement.state.boxes if b.name.startswith(prefix)]
                if judgement.state
                else []
            )
            return [
                CleanupDecision(n, "keep", f"kept: {where}", error=str(exc), verdict=judgement.verdict)
                for n in names
            ]
        except boxlite.BoxliteError as exc:
            log.warning("cannot open dead BoxLite home=%s error=%s", judgement.home, exc)
            return []
        decisions: list[CleanupDecision] = []
        try:
            for info in await rt.list_info():
                name = info.name or info.id
                if not name.startswith(prefix):
                    continue
                decisions.append(await self._remove_and_forget(rt, store, name, where, judgement.verdict))
            left = len(await rt.list_info())
        finally:
            await _release(rt)
            del rt
            gc.collect()
        if left == 0 and await asyncio.to_thread(homes.delete_home, judgement.home, wait=RELEASE_WAIT):
            log.info("deleted dead host's BoxLite home=%s", judgement.home)
        return decisions


HOST_CA_DIR = Path("/etc/ssl/certs")
GUEST_CA_DIR = "/run/agentlite/host-certs"


def host_injections(spec: BoxSpec) -> tuple[dict[str, str], list[Volume]]:
    """What a VM box gets from the host at start, never baked into the image: the host's CA
    certificates (a host behind a TLS-inspecting proxy trusts extra CAs), pointed at by the usual
    variables. DNS inside the VM comes from BoxLite's own network stack."""
    env, volumes = dict(spec.env), list(spec.volumes)
    bundle = HOST_CA_DIR / "ca-certificates.crt"
    if bundle.is_file() and not any(v.guest == GUEST_CA_DIR for v in volumes):
        volumes.append(Volume(HOST_CA_DIR.resolve(), GUEST_CA_DIR, read_only=True))
        guest_bundle = f"{GUEST_CA_DIR}/ca-certificates.crt"
        for var in ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            env.setdefault(var, guest_bundle)
    return env, volumes


def _epoch(stamp: Any) -> float | None:
    """BoxLite's creation time (RFC 3339 text, nanoseconds) as epoch seconds."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


async def _release(rt: Any) -> None:
    """Let BoxLite release its lock on a home we opened, once the caller drops the object.
    Dropping alone did not always do it (measured: 3 of 16 drops kept the lock for 3 s or more);
    ``shutdown`` first always did. It stops the home's VMs: only for homes we empty or own."""
    with contextlib.suppress(boxlite.BoxliteError):
        await rt.shutdown()


async def _list_info(rt: Any) -> list[Any]:
    return list(await rt.list_info())  # BoxLite needs a running loop to make the call at all


async def _await_requests(asked: list[tuple[str, homes.HomeJudgement]], wait: float) -> list[CleanupDecision]:
    """Wait (bounded) until the hosts asked to remove boxes have done so; report the rest pending."""
    deadline = time.monotonic() + wait
    pending = dict(asked)
    done: list[CleanupDecision] = []
    while True:
        for name, judgement in list(pending.items()):
            state = homes.read_state(judgement.home)
            still_listed = state is not None and any(b.name == name for b in state.boxes)
            if not homes.request_path(judgement.home, name).exists() and not still_listed:
                del pending[name]
                done.append(
                    CleanupDecision(
                        name,
                        "remove",
                        f"removed by its host on request ({judgement.reason})",
                        True,
                        verdict=judgement.verdict,
                    )
                )
        if not pending or time.monotonic() >= deadline:
            break
        await asyncio.sleep(REQUEST_POLL)
    done += [
        CleanupDecision(
            name,
            "remove",
            f"pending: asked its host to remove it ({judgement.reason})",
            verdict=judgement.verdict,
            pending=True,
        )
        for name, judgement in pending.items()
    ]
    return done


def network_spec(spec: BoxSpec) -> Any:
    """The box's network mode as BoxLite's own outbound policy; a mode it cannot express fails.

    ``none``: outbound disabled. ``egress``: outbound enabled through BoxLite's user-mode network
    (the VM has its own stack, so the host's 127.0.0.1 is not the VM's). ``allowlist``: BoxLite's
    ``allow_net`` with the same entries. ``host``: impossible for a VM, refused. Exposed loopback
    endpoints cannot be bridged into a VM, so a spec that needs them is refused too.
    """
    mode = spec.net_mode
    if mode is NetworkMode.HOST:
        raise ConfigError("network mode `host` cannot be given to a BoxLite VM (it has its own network "
                          "stack); use `egress`, or the sandbox runtime")  # fmt: skip
    if spec.exposed_ports and mode is NetworkMode.NONE:
        raise ConfigError(
            f"BoxLite cannot expose the host's loopback ports {list(spec.exposed_ports)} into a VM with "
            "network mode `none`; bind the endpoint to a host interface address and use `allowlist`"
        )
    if mode is NetworkMode.NONE:
        return boxlite.NetworkSpec(outbound=boxlite.OutboundNetworkSpec(mode="disabled"))
    if mode is NetworkMode.ALLOWLIST:
        allow = [str(e) for e in spec.allow_entries]
        return boxlite.NetworkSpec(outbound=boxlite.OutboundNetworkSpec(mode="enabled", allow_net=allow))
    return None


class BoxliteProcess:
    """A command running in a BoxLite VM."""

    def __init__(self, box: str, execution: Any) -> None:
        self._box = box
        self._execution = execution
        self._stdin = execution.stdin()
        self._stdout = execution.stdout()
        self._stderr = execution.stderr()
        self._exit_code: int | None = None

    def stdout_lines(self) -> AsyncIterator[bytes]:
        return _as_bytes(self._stdout)

    def stderr_lines(self) -> AsyncIterator[bytes]:
        return _as_bytes(self._stderr)

    async def write_stdin(self, data: bytes) -> None:
        await self._stdin.send_input(data)

    async def close_stdin(self) -> None:
        with contextlib.suppress(boxlite.BoxliteError):
            await self._stdin.close()

    async def wait(self) -> int:
        if self._exit_code is None:
            try:
                result = await self._execution.wait()
            except boxlite.BoxliteError as exc:
                raise BoxExecFailed(self._box, f"Lost the command in box `{self._box}`: {exc}") from exc
            self._exit_code = int(result.exit_code)
        return self._exit_code

    async def kill(self) -> None:
        # Cancelling wait() does not stop the guest process in BoxLite: kill it explicitly.
        with contextlib.suppress(boxlite.BoxliteError):
            await self._execution.kill()


async def _as_bytes(stream: Any) -> AsyncIterator[bytes]:
    if stream is None:
        return
    async for line in stream:
        yield line if isinstance(line, bytes) else str(line).encode()
