"""No-follow file access inside folders a box can write (group folders, IPC folders, memory files).

A box controls everything under its mounts: any entry there may be swapped for a symlink to a host
path, a fifo that blocks a reader forever, or a device. The host therefore never uses plain paths
below a box-writable root. :class:`BoxDir` holds a directory descriptor and does every operation
relative to it: each component is opened with ``O_NOFOLLOW`` (and ``O_DIRECTORY`` for folders),
files must be regular, reads are capped, writes go to a temp file renamed inside the same
descriptor, and listing and unlinking never leave it. A refusal raises :class:`UnsafePath`, naming
the path and why; callers turn it into an error event, never into a silent success.

The *root* handed to :meth:`BoxDir.open` is trusted (a host-owned folder such as ``groups/``);
everything below it is not.

    with BoxDir.open(groups_dir, folder) as group:
        text = group.read_text("CLAUDE.md", limit=64 * 1024)
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

from agentlite.core.errors import AgentliteError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: O_NONBLOCK so that opening a planted fifo returns at once instead of waiting for a writer.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_KINDS = {
    stat.S_IFLNK: "a symlink", stat.S_IFIFO: "a fifo", stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory",
    stat.S_IFREG: "a regular file",
}  # fmt: skip


class UnsafePath(AgentliteError, OSError):
    """A path inside a box-writable folder was refused (a symlink, a special file, too large).

    An :class:`OSError` too, so code that already survives I/O failures survives this one; it
    carries ``path`` and ``reason`` for the error event.
    """

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"refused `{self.path}`: {reason}")

    def __str__(self) -> str:
        return f"refused `{self.path}`: {self.reason}"


def describe(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "a special file")


def _check_component(name: str) -> None:
    # Callers pass fixed names or names they listed; a separator or dot-name here is a bug or an attack.
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UnsafePath(name, "is not a single path component")


class BoxDir:
    """An open folder inside a box-writable tree; every method works relative to its descriptor."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, root: Path, *parts: str, create: bool = False) -> BoxDir:
        """Open ``root/parts...``: ``root`` is trusted, each part is opened without following.

        ``create`` makes missing folders (mode 0o755); otherwise a missing one raises
        :class:`FileNotFoundError`.
        """
        root = Path(root)
        if create:
            root.mkdir(parents=True, exist_ok=True)
        current = cls(os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), root)
        try:
            for part in parts:
                child = current.subdir(part, create=create)
                current.close()
                current = child
        except BaseException:
            current.close()
            raise
        return current

    def subdir(self, name: str, *, create: bool = False) -> BoxDir:
        """The folder ``name`` in this one (made if ``create``); a symlink or file is refused."""
        _check_component(name)
        if create:
            try:
                os.mkdir(name, 0o755, dir_fd=self.fd)
            except FileExistsError:
                pass
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            raise self._refusal(name, exc) from None
        return BoxDir(fd, self.path / name)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()

    # -- looking -----------------------------------------------------------------------------------

    def lstat(self, name: str) -> os.stat_result | None:
        """The entry's own status (a symlink is not followed), None when there is none."""
        _check_component(name)
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def is_file(self, name: str) -> bool:
        """A regular file (never through a symlink)."""
        info = self.lstat(name)
        return info is not None and stat.S_ISREG(info.st_mode)

    def names(self) -> list[str]:
        """The entries of this folder, sorted."""
        return sorted(os.listdir(self.fd))

    def entries(self) -> Iterator[tuple[str, os.stat_result]]:
        """``(name, own status)`` of each entry; ones that vanish meanwhile are skipped."""
        for name in self.names():
            info = self.lstat(name)
            if info is not None:
                yield name, info

    def readlink(self, name: str) -> str | None:
        """The target of the symlink ``name``; None when it is not a symlink or is missing."""
        info = self.lstat(name)
        if info is None or not stat.S_ISLNK(info.st_mode):
            return None
        return os.readlink(name, dir_fd=self.fd)

    # -- reading -----------------------------------------------------------------------------------

    def read_bytes(self, name: str, *, limit: int, truncate: bool = False) -> bytes:
        """The content of the regular file ``name``, at most ``limit`` bytes.

        A larger file is refused, or cut at ``limit`` with ``truncate``. Missing: FileNotFoundError.
        """
        _check_component(name)
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            raise self._refusal(name, exc) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise UnsafePath(self.path / name, f"is {describe(info.st_mode)}, not a regular file")
            if info.st_size > limit and not truncate:
                raise UnsafePath(self.path / name, f"is too large ({info.st_size} bytes, limit {limit})")
            chunks, left = [], limit
            while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
                chunks.append(chunk)
                left -= len(chunk)
            data = b"".join(chunks)
            if not truncate and os.read(fd, 1):  # grew after the fstat
                raise UnsafePath(self.path / name, f"is too large (over {limit} bytes)")
            return data
        finally:
            os.close(fd)

    def read_text(self, name: str, *, limit: int, truncate: bool = False) -> str:
        return self.read_bytes(name, limit=limit, truncate=truncate).decode(errors="replace")

    # -- writing -----------------------------------------------------------------------------------

    def write_atomic(self, name: str, data: bytes, *, mode: int = 0o644, fsync: bool = False) -> None:
        """Replace ``name`` with ``data``: a fresh temp file in this folder, renamed over ``name``.

        The rename replaces whatever entry ``name`` is (a planted symlink included) without
        following it; a folder in the way is refused.
        """
        _check_component(name)
        info = self.lstat(name)
        if info is not None and stat.S_ISDIR(info.st_mode):
            raise UnsafePath(self.path / name, "is a directory")
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                     dir_fd=self.fd)  # fmt: skip
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            self.unlink(tmp)
            raise

    def write_text(self, name: str, text: str, **options: int | bool) -> None:
        self.write_atomic(name, text.encode(), **options)  # type: ignore[arg-type]

    def symlink(self, target: str, name: str) -> None:
        """Make ``name`` a symlink to ``target`` (a name in this folder, for an alias)."""
        _check_component(name)
        os.symlink(target, name, dir_fd=self.fd)

    def unlink(self, name: str) -> bool:
        """Remove the entry ``name`` (a symlink itself, never its target); False when missing."""
        _check_component(name)
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True

    def move_to(self, name: str, target: BoxDir, new_name: str) -> None:
        """Rename ``name`` into the folder ``target`` as ``new_name`` (both by descriptor)."""
        _check_component(name)
        _check_component(new_name)
        os.replace(name, new_name, src_dir_fd=self.fd, dst_dir_fd=target.fd)

    # -- errors ------------------------------------------------------------------------------------

    def _refusal(self, name: str, exc: OSError) -> OSError:
        """The error for a failed no-follow open: UnsafePath for a symlink or non-folder."""
        path = self.path / name
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
            info = self.lstat(name)
            kind = describe(info.st_mode) if info is not None else "not openable"
            return UnsafePath(path, f"is {kind}" if info is not None else kind)
        if isinstance(exc, FileNotFoundError):
            return FileNotFoundError(exc.errno, exc.strerror, str(path))
        return exc
