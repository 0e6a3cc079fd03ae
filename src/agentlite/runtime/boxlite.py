"""Boxes as BoxLite micro-VMs (the ``boxlite`` package).

BoxLite can create, list and remove boxes on any Linux host, but its VMs boot only with hardware
virtualization; :func:`agentlite.runtime.probe.can_boot_vm` says whether this machine has it.
Every ``boxlite`` error is translated into an AgentLite error here, at one boundary.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import boxlite

from agentlite._errors import (
    AgentliteError,
    BoxError,
    BoxExecFailed,
    BoxExists,
    BoxNotFound,
    BoxRemoveFailed,
    BoxStartFailed,
    ConfigError,
)
from agentlite.runtime.base import BoxInfo, BoxRuntime, BoxSpec, BoxState, Volume

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
    """Boxes as BoxLite micro-VMs, from an OCI image name or a local OCI layout (``rootfs_path``)."""

    name = "boxlite"

    def __init__(self, home: Path, *, image: str | None = None, rootfs_path: Path | None = None) -> None:
        if image is None and rootfs_path is None:
            raise ConfigError("the boxlite runtime needs `image` or `rootfs_path`")
        if rootfs_path is not None and not (Path(rootfs_path) / "oci-layout").is_file():
            raise ConfigError(
                f"rootfs path `{rootfs_path}` is not an OCI image layout (no `oci-layout` file)"
            )
        self._image = image
        self._rootfs_path = rootfs_path
        home = Path(home)
        home.mkdir(parents=True, exist_ok=True)
        self._rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))

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
            network=None if spec.network else _network_off(),
        )
        with _translated(name, "create"):
            if await self._rt.get_info(name) is not None:  # BoxLite reports this as a bad argument
                raise BoxExists(name, f"box `{name}` already exists")
            await self._rt.create(options, name=name)
            info = await self._rt.get_info(name)
        return self._info(info) if info is not None else BoxInfo(name, self.name, BoxState.CONFIGURED)

    def _info(self, info: Any) -> BoxInfo:
        state = (
            BoxState.RUNNING if info.state.running else _STATES.get(str(info.state.status), BoxState.STOPPED)
        )
        return BoxInfo(name=info.name or info.id, runtime=self.name, state=state)

    async def get(self, name: str) -> BoxInfo | None:
        with _translated(name, "get"):
            info = await self._rt.get_info(name)
        return None if info is None else self._info(info)

    async def list(self) -> list[BoxInfo]:
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
            box = await self._rt.get(name)
            if box is None:
                raise BoxNotFound(name, f"Cannot exec in box `{name}`: it does not exist")
            execution = await box.exec(argv[0], list(argv[1:]), list((env or {}).items()) or None, cwd=cwd)
        return BoxliteProcess(name, execution)

    async def stop(self, name: str) -> None:
        with _translated(name, "stop"):
            box = await self._rt.get(name)
            if box is None:
                raise BoxNotFound(name, f"Cannot stop box `{name}`: it does not exist")
            await box.stop()

    async def remove(self, name: str, *, force: bool = False) -> None:
        with _translated(name, "remove"):
            if await self._rt.get_info(name) is None:
                raise BoxNotFound(name, f"Cannot remove box `{name}`: it does not exist")
            try:
                await self._rt.remove(name, force=force)
            except boxlite.InvalidStateError as exc:
                raise BoxRemoveFailed(name, f"Cannot remove box `{name}`: {exc}") from exc


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


def _network_off() -> Any:
    return boxlite.NetworkSpec(outbound=boxlite.OutboundNetworkSpec(mode="disabled"))


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
