"""A group's files on the node that runs its box, and their way through the host.

With no shared folder, a group's workspace, agent home and IPC folder live under its node's root
(``<node home>/groups|agent-homes|ipc/<agent>/<group>``). What crosses between host and node:

- a *copy* of the group's state (workspace and agent home) as a tar archive: made on the node after
  every turn and kept by the host (the last copy), and unpacked on the next node when the group
  moves (node drained or lost);
- the box's IPC requests (``messages/``, ``tasks/``), relayed from the node to the host's IPC folder
  where the host's watcher handles them as before;
- the host's writes into the group's IPC folder (follow-ups and ``_close`` in ``input/``,
  snapshots, ``budget.json``), pushed to the node.

Every folder here is box-writable, so everything is read and written through
:class:`~agentlite.core.safefs.BoxDir` (no symlink followed, only folders and regular files copied:
a planted symlink, fifo or device is skipped and counted). No Ray here: the actor and the host both
use these functions.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from agentlite.core.errors import RunError
from agentlite.core.safefs import BoxDir, UnsafePath

log = logging.getLogger("agentlite.placement.files")

#: The parts of a group's state a copy holds, by their name in the archive.
STATE_PARTS = ("workspace", "agent-home")
#: The largest copy of one group (a bigger workspace belongs on a shared folder).
MAX_COPY_BYTES = 512 * 1024 * 1024
#: The largest IPC request or host file relayed (the host's watcher reads requests with a cap too).
MAX_IPC_BYTES = 1024 * 1024
#: The box's request folders the host handles.
REQUEST_KINDS = ("messages", "tasks")


class CopyTooLarge(RunError):
    """A group's state is larger than a copy may be."""


@dataclass(frozen=True)
class GroupPaths:
    """Where one group's files live on a node (or, for the host's own, on the host)."""

    workspace: Path
    agent_home: Path
    ipc_dir: Path

    def part(self, name: str) -> Path:
        return {"workspace": self.workspace, "agent-home": self.agent_home}[name]


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "-"


def node_group_paths(node_home: Path, agent_id: str, group: str) -> GroupPaths:
    agent, folder = safe_name(agent_id), safe_name(group)
    return GroupPaths(node_home / "groups" / agent / folder, node_home / "agent-homes" / agent / folder,
                      node_home / "ipc" / agent / folder)  # fmt: skip


@dataclass
class Packed:
    """A copy of a group's state: the archive and what was left out of it."""

    data: bytes
    files: int = 0
    skipped: list[str] = field(default_factory=list)


def pack_state(paths: GroupPaths, *, limit: int = MAX_COPY_BYTES) -> Packed:
    """The group's workspace and agent home as a tar archive, read without following anything."""
    buffer = io.BytesIO()
    packed = Packed(b"")
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for part in STATE_PARTS:
            root = paths.part(part)
            if not root.is_dir() or root.is_symlink():
                continue
            with BoxDir.open(root.parent, root.name) as folder:
                _pack_folder(folder, part, archive, packed, limit)
    packed.data = buffer.getvalue()
    if packed.skipped:
        log.warning("copy of %s left out %d entries that are not folders or regular files: %s",
                    paths.workspace, len(packed.skipped), packed.skipped[:10])  # fmt: skip
    return packed


def _pack_folder(folder: BoxDir, prefix: str, archive: tarfile.TarFile, packed: Packed, limit: int) -> None:
    entry = tarfile.TarInfo(prefix)
    own = os.fstat(folder.fd)
    entry.type, entry.mode = tarfile.DIRTYPE, stat.S_IMODE(own.st_mode) & 0o777
    entry.uid, entry.gid = own.st_uid, own.st_gid  # the box user's files stay the box user's
    archive.addfile(entry)
    for name, info in folder.entries():
        member = f"{prefix}/{name}"
        if stat.S_ISDIR(info.st_mode):
            try:
                child = folder.subdir(name)
            except (UnsafePath, FileNotFoundError):  # swapped for something else meanwhile
                packed.skipped.append(member)
                continue
            with child:
                _pack_folder(child, member, archive, packed, limit)
        elif stat.S_ISREG(info.st_mode):
            room = limit - archive.offset
            try:
                data = folder.read_bytes(name, limit=max(room, 0))
            except FileNotFoundError:
                continue
            except UnsafePath as exc:
                if "too large" in exc.reason:
                    raise CopyTooLarge(f"the group's state is over {limit} bytes (at `{member}`); "
                                       "configure a shared folder for groups this large") from None  # fmt: skip
                packed.skipped.append(member)
                continue
            entry = tarfile.TarInfo(member)
            entry.size, entry.mtime = len(data), int(info.st_mtime)
            entry.mode = stat.S_IMODE(info.st_mode) & 0o777  # no setuid, setgid or sticky bit
            entry.uid, entry.gid = info.st_uid, info.st_gid
            archive.addfile(entry, io.BytesIO(data))
            packed.files += 1
        else:  # a symlink, fifo, socket or device: never followed, never copied
            packed.skipped.append(member)


def unpack_state(data: bytes, paths: GroupPaths) -> int:
    """Replace the group's workspace and agent home with the copy ``data``; returns files written.

    The archive came from a box-writable tree: only folders and regular files with plain names are
    taken, each written through a no-follow descriptor under a freshly emptied part."""
    written = 0
    as_root = os.geteuid() == 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as archive:
        members = archive.getmembers()
        for part in STATE_PARTS:
            root = paths.part(part)
            if root.is_symlink() or root.exists():
                _remove(root)
            root.mkdir(parents=True, exist_ok=True)
        for member in members:
            parts = member.name.split("/")
            if parts[0] not in STATE_PARTS or any(p in ("", ".", "..") for p in parts):
                log.warning("copy: skipped member `%s`", member.name)
                continue
            root = paths.part(parts[0])
            if member.isdir():
                with BoxDir.open(root.parent, root.name, *parts[1:], create=True) as made:
                    if as_root:
                        os.fchown(made.fd, member.uid, member.gid)
                    os.fchmod(made.fd, (member.mode & 0o777) | 0o700)
            elif member.isfile() and len(parts) > 1:
                source = archive.extractfile(member)
                assert source is not None
                with BoxDir.open(root.parent, root.name, *parts[1:-1], create=True) as folder:
                    folder.write_atomic(parts[-1], source.read(), mode=(member.mode & 0o777) | 0o600)
                    if as_root:  # the box's tools change their own files' modes: they must stay theirs
                        os.chown(parts[-1], member.uid, member.gid, dir_fd=folder.fd, follow_symlinks=False)
                written += 1
            else:
                log.warning("copy: skipped member `%s` (not a folder or regular file)", member.name)
    return written


def _remove(path: Path) -> None:
    # rmtree works by descriptors and removes a symlink inside without following it.
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


# -- IPC between the node and the host ---------------------------------------------------------------


def take_requests(ipc_dir: Path) -> list[tuple[str, str, bytes]]:
    """The box's pending requests ``(kind, name, content)``, removed from the node's IPC folder (the
    host handles them now). Temp files (dot names) are left for the box to finish."""
    taken: list[tuple[str, str, bytes]] = []
    for kind in REQUEST_KINDS:
        try:
            folder = BoxDir.open(ipc_dir.parent, ipc_dir.name, kind)
        except (FileNotFoundError, UnsafePath):
            continue
        with folder:
            for name in folder.names():
                if name.startswith(".") or not name.endswith(".json"):
                    continue
                try:
                    data = folder.read_bytes(name, limit=MAX_IPC_BYTES)
                except FileNotFoundError:
                    continue
                except UnsafePath as exc:
                    log.warning("IPC relay: %s", exc)
                    folder.unlink(name)
                    continue
                folder.unlink(name)
                taken.append((kind, name, data))
    return taken


def write_ipc_file(ipc_dir: Path, subfolder: str | None, name: str, data: bytes) -> None:
    """Write one relayed file into a group's IPC folder (``subfolder``: ``input``, ``messages``, ...)."""
    parts = [ipc_dir.name] + ([subfolder] if subfolder else [])
    with BoxDir.open(ipc_dir.parent, *parts, create=True) as folder:
        folder.write_atomic(name, data)


@dataclass
class HostIpcMirror:
    """What of the host's IPC folder for a group went to the node: input files are moved (each
    once), top-level files (snapshots, ``budget.json``) are sent again when they change."""

    ipc_dir: Path
    _seen: dict[str, tuple[int, int]] = field(default_factory=dict)

    def pending(self) -> list[tuple[str | None, str, bytes]]:
        """``(subfolder, name, content)`` to send now; input files are removed from the host."""
        out: list[tuple[str | None, str, bytes]] = []
        try:
            folder = BoxDir.open(self.ipc_dir.parent, self.ipc_dir.name)
        except (FileNotFoundError, UnsafePath):
            return out
        with folder:
            for name, info in folder.entries():
                if name.startswith(".") or not stat.S_ISREG(info.st_mode):
                    continue
                mark = (info.st_mtime_ns, info.st_size)
                if self._seen.get(name) == mark:
                    continue
                try:
                    out.append((None, name, folder.read_bytes(name, limit=MAX_IPC_BYTES)))
                except (FileNotFoundError, UnsafePath) as exc:
                    log.warning("IPC mirror: %s", exc)
                    continue
                self._seen[name] = mark
            try:
                inputs = folder.subdir("input")
            except (FileNotFoundError, UnsafePath):
                return out
            with inputs:
                for name in inputs.names():
                    if name.startswith("."):
                        continue
                    try:
                        data = inputs.read_bytes(name, limit=MAX_IPC_BYTES)
                    except FileNotFoundError:
                        continue
                    except UnsafePath as exc:
                        log.warning("IPC mirror: %s", exc)
                        inputs.unlink(name)
                        continue
                    inputs.unlink(name)
                    out.append(("input", name, data))
        return out
