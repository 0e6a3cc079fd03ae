"""The one interface every place a box can run implements.

A box is a named, long-lived isolated environment. The host creates it, runs commands in it with
``exec``, and removes it. Boxes outlive the host process that made them (like a VM would), which is
why ownership lives in separate records (see ``agentlite.box.ownership``), not in the runtime.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

from agentlite.core.errors import ConfigError

if TYPE_CHECKING:
    from agentlite.box.cleanup_report import CleanupDecision
    from agentlite.box.guest_layout import GuestLayout
from agentlite.box.network import (
    DEFAULT_NETWORK_MODE,
    AllowEntry,
    NetworkMode,
    parse_allow_net,
    parse_network_mode,
)

DEFAULT_MEMORY_MIB = 2048
DEFAULT_CPUS = 2
DEFAULT_PIDS = 512
DEFAULT_WORKING_DIR = "/workspace"


@dataclass(frozen=True)
class Volume:
    """A host folder shown inside the box at ``guest``."""

    host: Path
    guest: str
    read_only: bool = False

    @classmethod
    def parse(cls, spec: str) -> Volume:
        """Parse ``HOST:GUEST[:ro|:rw]``; both paths must be absolute."""
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise ConfigError(f"volume `{spec}` must look like HOST:GUEST or HOST:GUEST:ro")
        mode = parts[2] if len(parts) == 3 else "rw"
        if mode not in ("ro", "rw"):
            raise ConfigError(f"volume `{spec}` has mode `{mode}`; use `ro` or `rw`")
        host, guest = Path(parts[0]), parts[1]
        if not host.is_absolute() or not guest.startswith("/"):
            raise ConfigError(f"volume `{spec}` needs absolute host and guest paths")
        return cls(host=host, guest=guest, read_only=mode == "ro")

    def __str__(self) -> str:
        return f"{self.host}:{self.guest}{':ro' if self.read_only else ''}"


@dataclass(frozen=True)
class BoxSpec:
    """What a box is made with."""

    memory_mib: int = DEFAULT_MEMORY_MIB
    cpus: int = DEFAULT_CPUS
    env: Mapping[str, str] = field(default_factory=dict)
    volumes: Sequence[Volume] = ()
    working_dir: str = DEFAULT_WORKING_DIR
    #: The old switch, kept for callers: ``False`` means mode ``none``; ``network_mode`` wins when set.
    network: bool = True
    #: ``none``, ``egress`` (the default), ``allowlist`` or ``host``; see :mod:`agentlite.box.network`.
    network_mode: str | None = None
    #: Allowlist entries (mode ``allowlist`` only): ``example.com``, ``*.example.com``, ``HOST:PORT``.
    allow_net: Sequence[str] = ()
    #: Ports of the host's loopback the box reaches at the same port on its own loopback (the run's
    #: local model endpoint and the actions server), whatever the mode.
    exposed_ports: Sequence[int] = ()

    @property
    def net_mode(self) -> NetworkMode:
        if self.network_mode is not None:
            return parse_network_mode(self.network_mode)
        return DEFAULT_NETWORK_MODE if self.network else NetworkMode.NONE

    @property
    def allow_entries(self) -> tuple[AllowEntry, ...]:
        return parse_allow_net(self.allow_net)

    #: Most processes (and threads) the box may have at once.
    pids: int = DEFAULT_PIDS
    #: Size of the box's private /tmp (RAM-backed); default: half of ``memory_mib``.
    tmp_mib: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.allow_net, str):
            raise ConfigError("allow_net must be a list of entries, not one string")
        if self.allow_net and self.net_mode is not NetworkMode.ALLOWLIST:
            raise ConfigError(f"allow_net entries need network mode `allowlist`, not `{self.net_mode}`")
        self.allow_entries  # noqa: B018 - validates every entry now, with a clear error
        for port in self.exposed_ports:
            if not isinstance(port, int) or not 0 < port < 65536:
                raise ConfigError(f"exposed port `{port}` must be 1-65535")
        if self.memory_mib < 64:
            raise ConfigError(f"box memory must be at least 64 MiB, got {self.memory_mib}")
        if self.cpus < 1:
            raise ConfigError(f"box cpus must be at least 1, got {self.cpus}")
        if self.pids < 8:
            raise ConfigError(f"box pids must be at least 8, got {self.pids}")
        if self.tmp_mib is not None and self.tmp_mib < 1:
            raise ConfigError(f"box tmp size must be at least 1 MiB, got {self.tmp_mib}")
        if not self.working_dir.startswith("/"):
            raise ConfigError(f"box working dir `{self.working_dir}` must be an absolute path")


class BoxState(enum.StrEnum):
    """Where a box is in its life, as its runtime reports it."""

    # Created, but its init has not started (BoxLite creates lazily; its VM boots on first use).
    CONFIGURED = "configured"
    # Its init process is alive: commands can run.
    RUNNING = "running"
    # Its init exited or was killed; the box's state is still on disk until removed.
    STOPPED = "stopped"


@dataclass(frozen=True)
class BoxInfo:
    """One box as listed by its runtime."""

    name: str
    runtime: str
    state: BoxState
    #: When the box was made (seconds since the epoch), where the runtime knows it.
    created_at: float | None = None

    @property
    def running(self) -> bool:
        return self.state is BoxState.RUNNING


class BoxProcess(Protocol):
    """A command running inside a box, started by :meth:`BoxRuntime.exec`."""

    def stdout_lines(self) -> AsyncIterator[bytes]:
        """Its standard output, one line at a time (with the newline), until it closes."""
        ...

    def stderr_lines(self) -> AsyncIterator[bytes]:
        """Its standard error, one line at a time, until it closes."""
        ...

    async def write_stdin(self, data: bytes) -> None:
        """Send bytes to its standard input."""
        ...

    async def close_stdin(self) -> None:
        """Close its standard input (the command sees end of file). Safe to call twice."""
        ...

    async def wait(self) -> int:
        """Wait for it to exit and return its exit code (negative: killed by that signal)."""
        ...

    async def kill(self) -> None:
        """Kill it and everything it started in this exec. Safe on an exited process."""
        ...


class BoxRuntime(abc.ABC):
    """Creates, lists, runs commands in and removes boxes. Use it as ``async with``."""

    #: Short name shown to users: "sandbox" or "boxlite".
    name: str
    #: The folder this runtime's boxes live in when each host has its own (BoxLite); else None.
    box_home: Path | None = None

    @abc.abstractmethod
    async def create(self, name: str, spec: BoxSpec) -> BoxInfo:
        """REQUIRED. Create the box ``name`` from ``spec``.

        Raises :class:`BoxExists` when the name is taken, :class:`BoxStartFailed` when the runtime
        cannot make it. A failed create leaves nothing behind.
        """

    @abc.abstractmethod
    async def get(self, name: str) -> BoxInfo | None:
        """REQUIRED. The box ``name``, or ``None`` when there is no such box."""

    @abc.abstractmethod
    async def list(self) -> list[BoxInfo]:
        """REQUIRED. Every box this runtime knows in its home, with its current state."""

    @abc.abstractmethod
    async def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> BoxProcess:
        """REQUIRED. Start ``argv`` inside the running box ``name``.

        ``env`` is added to the box's own environment; ``cwd`` defaults to the box's working dir.
        Raises :class:`BoxNotFound` for a missing box, :class:`BoxExecFailed` when it cannot start.
        """

    @abc.abstractmethod
    async def stop(self, name: str) -> None:
        """REQUIRED. Stop every process of the box but keep it listed. Idempotent."""

    @abc.abstractmethod
    async def remove(self, name: str, *, force: bool = False) -> None:
        """REQUIRED. Delete the box. ``force`` first kills a running box; without it a running box
        raises :class:`BoxRemoveFailed`. Raises :class:`BoxNotFound` when there is no such box."""

    async def untracked(self) -> list[str]:
        """Names of boxes whose processes run although their state is gone (deleted under them);
        :meth:`remove` with ``force`` reaps them. Runtimes that cannot lose state return none."""
        return []

    async def sweep_other_homes(
        self, prefix: str, *, include_live: bool = False, dry_run: bool = False
    ) -> list[CleanupDecision]:
        """The orphan cleanup of boxes named ``prefix...`` that live in other hosts' homes (BoxLite
        gives each host a home of its own). Runtimes with one home for all hosts have none to sweep."""
        return []

    def guest_layout(self) -> GuestLayout:
        """Which Python and environment the box's commands run with, and where the guest reaches
        the host's loopback. The default: a host-root box (the host's own Python and addresses)."""
        from agentlite.box.guest_layout import host_layout

        return host_layout()

    def out_of_memory(self, name: str) -> bool:
        """Whether the kernel killed a process of box ``name`` for exceeding its memory limit
        (answerable after the box is removed, by the runtime instance that removed it)."""
        return False

    def unenforced_limits(self) -> dict[str, str]:
        """Limits of :class:`BoxSpec` this runtime cannot enforce here, with the reason for each."""
        return {}

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most runtimes hold nothing
        """Release the runtime's own resources. Boxes keep running."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
