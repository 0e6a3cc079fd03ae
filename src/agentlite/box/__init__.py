"""Where boxes run: the :class:`BoxRuntime` interface, its two implementations, and the choice.

``auto`` picks ``boxlite`` where a VM can boot (hardware virtualization, a usable ``/dev/kvm``, the
``boxlite`` package) and ``sandbox`` (bubblewrap) elsewhere. Implementations are imported lazily, so
``boxlite`` is only loaded when it is used.
"""

from __future__ import annotations

import logging
import os
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
    "RuntimeChoice",
    "Volume",
    "choose_runtime",
    "open_runtime",
]

log = logging.getLogger("agentlite.box")

RUNTIME_NAMES = ("auto", "boxlite", "sandbox")
ENV_RUNTIME = "AGENTLITE_RUNTIME"
ENV_BOX_IMAGE = "AGENTLITE_BOX_IMAGE"
ENV_BOX_ROOTFS = "AGENTLITE_BOX_ROOTFS"


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
    home: Path, requested: str | None = None, *, boot: bool = True
) -> tuple[BoxRuntime, RuntimeChoice]:
    """Choose a runtime (see :func:`choose_runtime`), log the choice, and open it on ``home``.

    ``boot=False``: the caller only lists and removes boxes (no image is built for BoxLite).
    """
    choice = choose_runtime(requested, boot=boot)
    log.info("box runtime=%s reason=%r", choice.name, choice.reason)
    runtime: BoxRuntime
    if choice.name == "boxlite" and not boot:
        from agentlite.box.boxlite import BoxliteRuntime

        runtime = BoxliteRuntime(home, manage_only=True)
    elif choice.name == "boxlite":
        from agentlite.box.boxlite import BoxliteRuntime

        image = os.environ.get(ENV_BOX_IMAGE)
        rootfs = os.environ.get(ENV_BOX_ROOTFS)
        if not image and not rootfs:
            # Our own guest image, built locally from Debian packages (once; cached by its inputs).
            from agentlite.image.builder import build_image, stderr_progress

            rootfs = str(build_image(home, progress=stderr_progress).layout)
        runtime = BoxliteRuntime(home, image=image, rootfs_path=Path(rootfs) if rootfs else None)
    else:
        from agentlite.box.sandbox import SandboxRuntime
        from agentlite.image.builder import sandbox_rootfs_from_env

        runtime = SandboxRuntime(home, rootfs=sandbox_rootfs_from_env(home))
    return runtime, choice
