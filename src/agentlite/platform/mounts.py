"""What a group's box sees: the mount layout, extra mounts checked against an allowlist, memory files.

Layout (host → box):

- ``groups/<folder>``            → ``/workspace/group``   read-write: the group's files and memory
- the agent workdir (main only)  → ``/workspace/project`` read-only
- ``groups/global`` (non-main)   → ``/workspace/global``  read-only: shared memory
- ``agent/`` (if present)        → ``/workspace/agent``   read-only: operator instructions, skills
- ``data/ipc/<folder>``          → ``/workspace/ipc``     read-write: messages and tasks to the host
- ``data/sessions/<folder>``     → the box home           read-write: the agent CLIs' sessions
- allowed extra mounts           → ``/workspace/extra/<name>``
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from agentlite.box.base import Volume
from agentlite.core.errors import ConfigError
from agentlite.core.safefs import BoxDir, UnsafePath, describe
from agentlite.platform.layout import AgentPaths

log = logging.getLogger("agentlite.mounts")

#: Always blocked, whatever an allowlist says: where credentials and keys live.
DEFAULT_BLOCKED = (
    ".ssh", ".gnupg", ".gpg", ".aws", ".azure", ".gcloud", ".kube", ".boxlite", "credentials", ".env",
    ".netrc", ".npmrc", ".pypirc", "id_rsa", "id_ed25519", "private_key", ".secret",
)  # fmt: skip

MEMORY_FILE = "CLAUDE.md"
MEMORY_ALIAS = "AGENTS.md"

_TEMPLATES = {
    "global": (
        "# Shared memory\n\nYou are {{ASSISTANT_NAME}}. Notes here are shared by every group of this agent and are "
        "read-only inside non-main groups. Keep them short and factual.\n"
    ),
    "main": (
        "# {{ASSISTANT_NAME}}: main group memory\n\nYou are {{ASSISTANT_NAME}}, a personal assistant. This is the "
        "main (admin) group: you can schedule tasks for any group and register new groups.\nWrite what you "
        "should remember in this file.\n"
    ),
}


class AllowedRoot(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    allow_read_write: bool = False
    description: str | None = None


class MountAllowlist(BaseModel):
    """Which host folders groups may mount as extras; nothing without an allowlist."""

    model_config = ConfigDict(extra="forbid")
    allowed_roots: list[AllowedRoot] = []
    blocked_patterns: list[str] = []
    non_main_read_only: bool = True


class ExtraMount(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host_path: str
    container_path: str | None = None
    readonly: bool = True


def check_extra_mount(mount: ExtraMount, allowlist: MountAllowlist | None, *, is_main: bool) -> Volume:
    """The volume for an extra mount, or :class:`ConfigError` saying why it is refused."""
    if allowlist is None:
        raise ConfigError(f"extra mount `{mount.host_path}` refused: the agent has no mount allowlist")
    name = mount.container_path if mount.container_path is not None else Path(mount.host_path).name
    if not name or name.startswith("/") or ".." in Path(name).parts:
        raise ConfigError(
            f"extra mount `{mount.host_path}`: container path `{name}` must be relative, without .."
        )
    host = Path(os.path.expanduser(mount.host_path))
    if not host.exists():
        raise ConfigError(f"extra mount `{mount.host_path}` does not exist")
    host = host.resolve()
    blocked = {*DEFAULT_BLOCKED, *allowlist.blocked_patterns}
    for part in (*host.parts, str(host)):
        if part in blocked:
            raise ConfigError(f"extra mount `{mount.host_path}` refused: `{part}` is a blocked pattern")
    root = next(
        (r for r in allowlist.allowed_roots if _within(host, Path(os.path.expanduser(r.path)))),
        None,
    )
    if root is None:
        raise ConfigError(f"extra mount `{mount.host_path}` is not under an allowed root")
    writable = (
        (not mount.readonly) and root.allow_read_write and (is_main or not allowlist.non_main_read_only)
    )
    return Volume(host, f"/workspace/extra/{name}", read_only=not writable)


def _within(path: Path, root: Path) -> bool:
    try:
        root = root.resolve(strict=True)
    except OSError:
        return False
    return path == root or root in path.parents


#: The most of a memory file the host copies (a box could otherwise make it read anything large).
MEMORY_READ_LIMIT = 1024 * 1024


def ensure_memory_alias(folder: Path) -> None:
    """Keep ``AGENTS.md`` as a symlink to ``CLAUDE.md`` (backfilling ``CLAUDE.md`` from it if needed).

    ``folder`` is box-writable: every step works on its descriptor and never follows an entry the
    box made. A ``CLAUDE.md`` that is a symlink or special file, or an ``AGENTS.md`` that is neither
    the alias nor a regular file, raises :class:`~agentlite.core.safefs.UnsafePath` and is left as it is.
    """
    with BoxDir.open(folder.parent, folder.name) as box:
        primary = box.lstat(MEMORY_FILE)
        if primary is None and box.is_file(MEMORY_ALIAS):
            box.write_atomic(MEMORY_FILE, box.read_bytes(MEMORY_ALIAS, limit=MEMORY_READ_LIMIT))
            primary = box.lstat(MEMORY_FILE)
        if primary is None:
            return
        if not stat.S_ISREG(primary.st_mode):
            raise UnsafePath(folder / MEMORY_FILE, f"is {describe(primary.st_mode)}, not a regular file")
        if box.readlink(MEMORY_ALIAS) == MEMORY_FILE:
            return
        alias = box.lstat(MEMORY_ALIAS)
        if alias is not None:
            if not (stat.S_ISREG(alias.st_mode) or stat.S_ISLNK(alias.st_mode)):
                raise UnsafePath(folder / MEMORY_ALIAS, f"is {describe(alias.st_mode)}")
            box.unlink(MEMORY_ALIAS)  # the entry itself: a symlink's target is never touched
        box.symlink(MEMORY_FILE, MEMORY_ALIAS)


def seed_memory(groups_dir: Path, assistant_name: str,
                on_refused: Callable[[UnsafePath], None] | None = None) -> None:  # fmt: skip
    """Create ``global`` and ``main`` memory files from the templates, only where missing.

    A refused path is handed to ``on_refused`` (the other folder is still seeded), or raised.
    """
    for folder, template in _TEMPLATES.items():
        try:
            with BoxDir.open(groups_dir, folder, create=True) as box:
                if box.lstat(MEMORY_FILE) is None and box.lstat(MEMORY_ALIAS) is None:
                    box.write_text(MEMORY_FILE, template.replace("{{ASSISTANT_NAME}}", assistant_name))
            ensure_memory_alias(groups_dir / folder)
        except UnsafePath as exc:
            if on_refused is None:
                raise
            on_refused(exc)


def group_volumes(
    workdir: Path, folder: str, *, is_main: bool, extra: list[Volume] | None = None
) -> list[Volume]:
    """The read-only volumes of a group's box (group, IPC and home are added by the run itself)."""
    volumes = []
    if is_main:
        volumes.append(Volume(workdir, "/workspace/project", read_only=True))
    else:
        global_dir = AgentPaths(workdir).global_group_dir
        if global_dir.is_dir():
            volumes.append(Volume(global_dir, "/workspace/global", read_only=True))
    agent_dir = AgentPaths(workdir).agent_dir
    if agent_dir.is_dir():
        volumes.append(Volume(agent_dir, "/workspace/agent", read_only=True))
    return [*volumes, *(extra or [])]
