"""Where boxes run: the :class:`BoxRuntime` interface, its two implementations, and the choice.

``auto`` picks ``boxlite`` where a VM can boot (hardware virtualization, a usable ``/dev/kvm``, the
``boxlite`` package) and ``sandbox`` (bubblewrap) elsewhere. Implementations are imported lazily, so
``boxlite`` is only loaded when it is used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentlite.box.base import BoxInfo, BoxProcess, BoxRuntime, BoxSpec, BoxState, Volume
from agentlite.box.probe import Check, boxlite_checks, check_boxlite, sandbox_checks
from agentlite.core.errors import ConfigError, RuntimeUnavailable

__all__ = [
    "RUNTIME_NAMES",
    "BoxInfo",
    "BoxProcess",
    "BoxRuntime",
    "BoxSpec",
    "BoxState",
    "GuestRoot",
    "RuntimeChoice",
    "Volume",
    "choose_runtime",
    "open_runtime",
]

log = logging.getLogger("agentlite.box")

RUNTIME_NAMES = ("auto", "boxlite", "sandbox")
ENV_RUNTIME = "AGENTLITE_RUNTIME"


@dataclass(frozen=True)
class GuestRoot:
    """What a runtime's boxes boot from. Sandbox: ``rootfs`` is an unpacked root folder (image mode)
    or ``None`` (host-root boxes). BoxLite: an OCI image layout folder (``rootfs``) or an image
    reference it pulls (``image``)."""

    rootfs: Path | None = None
    image: str | None = None


@dataclass(frozen=True)
class RuntimeChoice:
    """Which runtime to use, why, and the checks that decided it."""

    name: str
    reason: str
    checks: list[Check]


def _failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]


def choose_runtime(requested: str | None = None, *, boot: bool = True) -> RuntimeChoice:
    """Decide the runtime: ``requested``, else ``$AGENTLITE_RUNTIME``, else ``auto``.

    Raises :class:`ConfigError` for an unknown name and :class:`RuntimeUnavailable` when a forced
    runtime (or, for ``auto``, both) cannot work, naming what is missing and how to fix it.
    ``boot=False`` is for commands that only list and remove boxes: a forced ``boxlite`` then needs
    only the package, since BoxLite manages its boxes without booting them.
    """
    name = (requested or os.environ.get(ENV_RUNTIME) or "auto").strip().lower()
    if name not in RUNTIME_NAMES:
        raise ConfigError(f"unknown runtime `{name}`; choose one of {', '.join(RUNTIME_NAMES)}")
    vm, sandbox = boxlite_checks(), sandbox_checks()
    checks = [*sandbox, *vm]
    if name == "boxlite" and not boot:
        if bad := _failed([check_boxlite()]):
            raise RuntimeUnavailable("boxlite", bad[0].detail, bad[0].fix or "see `agentlite doctor`")
        return RuntimeChoice("boxlite", "forced; listing and removing boxes needs no VM", checks)
    if name == "boxlite":
        if bad := _failed(vm):
            raise RuntimeUnavailable("boxlite", bad[0].detail, bad[0].fix or "see `agentlite doctor`")
        return RuntimeChoice("boxlite", "forced; BoxLite VMs can boot here", checks)
    if name == "sandbox":
        if bad := _failed(sandbox):
            raise RuntimeUnavailable("sandbox", bad[0].detail, bad[0].fix or "see `agentlite doctor`")
        return RuntimeChoice("sandbox", "forced", checks)
    if not _failed(vm):
        return RuntimeChoice(
            "boxlite", "hardware virtualization and /dev/kvm work, so BoxLite VMs can boot", checks
        )
    why_not_vm = _failed(vm)[0]
    if bad := _failed(sandbox):
        raise RuntimeUnavailable(
            "auto", f"no BoxLite ({why_not_vm.detail}) and no sandbox ({bad[0].detail})", bad[0].fix or ""
        )
    return RuntimeChoice(
        "sandbox", f"BoxLite VMs cannot boot here: {why_not_vm.name}: {why_not_vm.detail}", checks
    )


def open_runtime(
    home: Path,
    requested: str | None = None,
    *,
    boot: bool = True,
    guest_root: Callable[[str], GuestRoot] | None = None,
) -> tuple[BoxRuntime, RuntimeChoice]:
    """Choose a runtime (see :func:`choose_runtime`), log the choice, and open it on ``home``.

    ``guest_root`` says what the chosen runtime's boxes boot from, given its name; it is asked only
    when boxes will boot (``boot=True``). Opening a runtime never builds or looks up an image: the
    caller does (:func:`agentlite.image.guest_root.open_configured_runtime` reads the environment
    and builds the guest image when BoxLite needs it). Without it a sandbox runs host-root boxes and
    BoxLite refuses to open for booting. ``boot=False``: the caller only lists and removes boxes.
    """
    choice = choose_runtime(requested, boot=boot)
    log.info("box runtime=%s reason=%r", choice.name, choice.reason)
    root = guest_root(choice.name) if boot and guest_root is not None else GuestRoot()
    runtime: BoxRuntime
    if choice.name == "boxlite":
        from agentlite.box.boxlite import BoxliteRuntime

        runtime = BoxliteRuntime(home, image=root.image, rootfs_path=root.rootfs, manage_only=not boot)
    else:
        from agentlite.box.sandbox import SandboxRuntime

        if root.image is not None:
            raise ConfigError(
                "the sandbox runtime boots from an unpacked root folder, not an image reference"
            )
        runtime = SandboxRuntime(home, rootfs=root.rootfs)
    return runtime, choice
