"""The unprivileged host user that sandbox boxes run as, and the file access it is given.

A box never runs as host root. When agentlite runs as root, bwrap is started as the dedicated
system user ``agentlite-box`` (made by ``scripts/install.sh``; made here once, race-safe, when it is
missing), and the box's own uid (0, or 1000 in image mode) maps to it. When agentlite runs as a
normal user, bwrap runs as that user and nothing here changes any file.

As root, the box user is granted what a box needs with POSIX ACL entries (written as the
``system.posix_acl_*`` extended attributes, so no ``setfacl`` is needed):

- ``--x`` (search only, no listing) on each folder above a mount source that it could not
  otherwise pass (``/root``, a 0700 state folder, pytest's 0700 temp folders). The box user has no
  other presence on the host: a box sees only its own mounts, so this opens nothing else.
- ``rwx`` plus a default entry (inherited by what the host creates later) on the whole tree of each
  writable volume, and ``r-x`` on read-only volumes. The tree is walked once; later boxes see the
  entry on the top folder and skip the walk.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import shutil
import struct
import subprocess
from pathlib import Path

from agentlite.core.errors import RuntimeUnavailable

BOX_USER = "agentlite-box"

# Linux ACL xattr format: a version word, then (tag u16, perm u16, id u32) entries sorted by tag, id.
_ACL_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_UNDEFINED_ID = 0xFFFFFFFF
_ACCESS, _DEFAULT = "system.posix_acl_access", "system.posix_acl_default"
R, W, X = 4, 2, 1


def host_ids() -> tuple[int, int]:
    """The host uid and gid a box's processes run as."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    return ensure_box_user()


def ensure_box_user() -> tuple[int, int]:
    """The ``agentlite-box`` system user, created when missing (root only)."""
    with contextlib.suppress(KeyError):
        entry = pwd.getpwnam(BOX_USER)
        return entry.pw_uid, entry.pw_gid
    useradd = shutil.which("useradd", path="/usr/sbin:/sbin:/usr/bin:/bin")
    fix = f"useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {BOX_USER}"
    if useradd is None:
        raise RuntimeUnavailable(
            "sandbox", f"the box user `{BOX_USER}` is missing and useradd is not installed", fix
        )
    argv = [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
            "--shell", "/usr/sbin/nologin", BOX_USER]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    try:
        # Exit 9: another host created it between our lookup and useradd; either way it exists now.
        entry = pwd.getpwnam(BOX_USER)
    except KeyError:
        raise RuntimeUnavailable(
            "sandbox", f"cannot create the box user `{BOX_USER}`: {done.stderr.strip()[:200]}", fix
        ) from None
    return entry.pw_uid, entry.pw_gid


def launch_prefix(uid: int, gid: int, setpriv: str) -> list[str]:
    """What starts bwrap as the box user (nothing when we already are that user)."""
    if os.geteuid() == uid:
        return []
    return [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]


# -- ACLs -----------------------------------------------------------------------------------------


def _read_acl(path: Path | str, name: str) -> list[tuple[int, int, int]]:
    try:
        raw = os.getxattr(path, name, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP):
            return []
        raise
    if len(raw) < 4 or struct.unpack_from("<I", raw)[0] != _ACL_VERSION:
        return []
    return [struct.unpack_from("<HHI", raw, off) for off in range(4, len(raw) - 7, 8)]


def _write_acl(path: Path | str, name: str, entries: list[tuple[int, int, int]]) -> None:
    raw = struct.pack("<I", _ACL_VERSION) + b"".join(struct.pack("<HHI", *e) for e in sorted(entries, key=lambda e: (e[0], e[1])))  # fmt: skip
    os.setxattr(path, name, raw, follow_symlinks=False)


def _with_user(
    entries: list[tuple[int, int, int]], mode: int, uid: int, perm: int
) -> list[tuple[int, int, int]]:
    """``entries`` (or the mode's base entries when empty) with ``uid`` given at least ``perm``."""
    if not entries:
        entries = [
            (_USER_OBJ, (mode >> 6) & 7, _UNDEFINED_ID),
            (_GROUP_OBJ, (mode >> 3) & 7, _UNDEFINED_ID),
            (_OTHER, mode & 7, _UNDEFINED_ID),
        ]
    kept = [e for e in entries if not (e[0] == _USER and e[2] == uid) and e[0] != _MASK]
    old = next((e[1] for e in entries if e[0] == _USER and e[2] == uid), 0)
    kept.append((_USER, old | perm, uid))
    # The mask caps every named entry and the owning group: it must cover all of them.
    mask = 0
    for tag, p, _ in kept:
        if tag in (_USER, _GROUP, _GROUP_OBJ):
            mask |= p
    kept.append((_MASK, mask, _UNDEFINED_ID))
    return kept


def _has(entries: list[tuple[int, int, int]], uid: int, perm: int) -> bool:
    mask = next((e[1] for e in entries if e[0] == _MASK), 7)
    return any(e[0] == _USER and e[2] == uid and (e[1] & mask & perm) == perm for e in entries)


def _grant(path: str, st: os.stat_result, uid: int, perm: int, *, default: bool) -> None:
    import stat

    if stat.S_ISLNK(st.st_mode):
        return  # ACLs of symlinks are not used; their targets are checked on their own
    entries = _read_acl(path, _ACCESS)
    if not _has(entries, uid, perm):
        _write_acl(path, _ACCESS, _with_user(entries, st.st_mode, uid, perm))
    if default and stat.S_ISDIR(st.st_mode):
        entries = _read_acl(path, _DEFAULT)
        if not _has(entries, uid, perm):
            _write_acl(path, _DEFAULT, _with_user(entries, st.st_mode, uid, perm))


def _can(st: os.stat_result, uid: int, gid: int, perm: int, entries: list[tuple[int, int, int]]) -> bool:
    if st.st_uid == uid:
        return ((st.st_mode >> 6) & perm) == perm
    if _has(entries, uid, perm):
        return True
    if st.st_gid == gid and ((st.st_mode >> 3) & perm) == perm:
        return True
    return (st.st_mode & perm) == perm


def _blocking_folders(path: Path, uid: int, gid: int) -> list[tuple[Path, os.stat_result]]:
    """The folders above ``path`` that ``uid`` may not pass through, top down."""
    blocking = []
    for folder in reversed(path.parents):
        st = os.stat(folder)
        if not _can(st, uid, gid, X, _read_acl(folder, _ACCESS)):
            blocking.append((folder, st))
    return blocking


def grant_traverse(path: Path, uid: int, gid: int) -> None:
    """Let ``uid`` pass through every folder above ``path`` (search only)."""
    for folder, st in _blocking_folders(path, uid, gid):
        _grant(str(folder), st, uid, X, default=False)


def grant_tree(path: Path, uid: int, gid: int, *, write: bool) -> None:
    """Give ``uid`` read (and write) access to everything under ``path``, now and for what is
    created later. Skipped when the top folder already carries the entry."""
    perm = R | X | (W if write else 0)
    st = os.stat(path)
    if st.st_uid == uid:
        return
    if _has(_read_acl(path, _ACCESS), uid, perm) and (
        not os.path.isdir(path) or _has(_read_acl(path, _DEFAULT), uid, perm)
    ):
        return
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            for entry in (*dirs, *files):
                child = os.path.join(root, entry)
                with contextlib.suppress(FileNotFoundError):
                    child_st = os.lstat(child)
                    # Files get search only when they are executable for someone (like ``X``).
                    child_perm = perm if (child_st.st_mode & 0o111) or os.path.isdir(child) else perm & ~X
                    _grant(child, child_st, uid, child_perm, default=True)
    _grant(str(path), st, uid, perm, default=True)
