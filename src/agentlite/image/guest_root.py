"""What boxes boot from, as the environment asks, and the runtime opened on it.

The box layer never builds or looks up an image (:func:`agentlite.box.open_runtime` takes a
:class:`~agentlite.box.GuestRoot`); the commands and the platform that start boxes open their
runtime here. BoxLite boots ``$AGENTLITE_BOX_IMAGE`` (a reference it pulls) or
``$AGENTLITE_BOX_ROOTFS`` (an OCI layout), else our own guest image, built on first use with
progress on stderr. The sandbox follows ``$AGENTLITE_SANDBOX_ROOTFS`` (see
:func:`~agentlite.image.builder.sandbox_rootfs_from_env`); unset, it runs host-root boxes.
"""

from __future__ import annotations

import os
from pathlib import Path

from agentlite.box import BoxRuntime, GuestRoot, RuntimeChoice, open_runtime
from agentlite.image.builder import Progress, build_image, sandbox_rootfs_from_env, stderr_progress

ENV_BOX_IMAGE = "AGENTLITE_BOX_IMAGE"
ENV_BOX_ROOTFS = "AGENTLITE_BOX_ROOTFS"


def guest_root_from_env(
    home: Path, runtime_name: str, *, progress: Progress | None = stderr_progress
) -> GuestRoot:
    """The guest root that ``runtime_name``'s boxes boot from on ``home``, building the guest image
    when BoxLite is given none (once; cached by its inputs)."""
    if runtime_name != "boxlite":
        return GuestRoot(rootfs=sandbox_rootfs_from_env(home))
    image = os.environ.get(ENV_BOX_IMAGE) or None
    rootfs = os.environ.get(ENV_BOX_ROOTFS) or None
    if image or rootfs:
        return GuestRoot(rootfs=Path(rootfs) if rootfs else None, image=image)
    return GuestRoot(rootfs=build_image(home, progress=progress).layout)


def open_configured_runtime(
    home: Path,
    requested: str | None = None,
    *,
    boot: bool = True,
    progress: Progress | None = stderr_progress,
) -> tuple[BoxRuntime, RuntimeChoice]:
    """:func:`agentlite.box.open_runtime` with the guest root the environment asks for (looked up,
    and built if needed, only when boxes will boot)."""
    return open_runtime(
        home, requested, boot=boot, guest_root=lambda name: guest_root_from_env(home, name, progress=progress)
    )
