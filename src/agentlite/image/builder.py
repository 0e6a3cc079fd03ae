"""The guest image: a Debian root filesystem with Python, Node, git, the runner and the agent CLIs.

:func:`build_image` makes it locally, reproducibly, from the host's own apt sources with
``mmdebstrap`` and packs it as a single-layer OCI image layout (stdlib only). Steps:

1. ``debian``: ``mmdebstrap --variant=apt`` with :data:`PACKAGES` (Debian's ``nodejs``, never its
   ``npm``), docs and locales excluded, in a staging folder on tmpfs (``/dev/shm``) when it has room;
2. ``user``: the non-root user ``agent`` (uid/gid 1000, home ``/home/agent``), written directly into
   ``/etc/passwd`` and friends so no date or random value lands in them;
3. ``python``: a venv at ``/opt/agentlite`` with the ``agentlite`` wheel (built from the checkout)
   and the runner's dependencies, pinned to the host's versions and downloaded by the host's pip, so
   the guest itself needs no network and no host CA certificate;
4. ``clis``: the pinned agent CLIs copied from the host's ``agent-clis/node_modules`` into
   ``/opt/agent-clis`` (only the packages the chosen backends need, hard links kept, platform
   variants that cannot run here such as musl builds dropped);
5. ``inspect``: the versions inside (Python, Node, each CLI, agentlite), stored in the image config;
6. ``normalise``: no host ``resolv.conf`` (an empty placeholder to bind over), a fixed hostname, no
   machine id, no caches, no host CA extras;
7. ``pack``: a deterministic tar (sorted names, numeric owners, mtimes clamped to
   ``SOURCE_DATE_EPOCH``) gzipped with a fixed header into ``blobs/sha256``, then config, manifest,
   ``index.json`` and ``oci-layout``.

Builds are cached under ``<home>/images/<key>/`` where ``key`` hashes every input (packages, options,
backends, agentlite's version and sources, the host's apt sources and release files, the CLIs'
``package-lock.json``, the in-box Python dependencies). A cache hit returns at once; a build is staged
and renamed into place at the end, so a failed build leaves nothing behind.

The sandbox runtime's image mode runs boxes on the unpacked tree, cached at ``<home>/images/<key>/rootfs``.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from agentlite.box.guest_layout import (
    GUEST_CLIS,
    GUEST_ENV,
    GUEST_HOME,
    GUEST_PATH,
    GUEST_PYTHON,
    GUEST_UID,
    GUEST_USER,
    GUEST_VENV,
)
from agentlite.core.errors import ConfigError, ImageBuildFailed, UnknownBackend

log = logging.getLogger("agentlite.image")

#: Bump when the build recipe changes in a way the other inputs do not capture.
RECIPE_VERSION = "1"
SOURCE_DATE_EPOCH = 1700000000
SUITE = "bookworm"
# socat: the in-box end of the network bridges (see agentlite.box.boxnet).
PACKAGES = (
    "bash",
    "ca-certificates",
    "coreutils",
    "git",
    "nodejs",
    "procps",
    "python3",
    "python3-venv",
    "socat",
)
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
)
#: The Python packages the in-box runner imports (their own dependencies come along, pinned).
RUNNER_REQUIREMENTS = ("agent-client-protocol", "pydantic")
#: The npm packages each backend needs in the box.
BACKEND_PACKAGES: dict[str, tuple[str, ...]] = {
    "codex": ("@openai/codex",),
    "claude_code": ("@anthropic-ai/claude-code",),
    "acp": ("@zed-industries/codex-acp", "@agentclientprotocol/claude-agent-acp"),
}
DEFAULT_BACKENDS = ("codex", "claude_code")

ENV_SANDBOX_ROOTFS = "AGENTLITE_SANDBOX_ROOTFS"
LAYOUT_DIR = "oci"
ROOTFS_DIR = "rootfs"
INFO_FILE = "agentlite-image.json"
GZIP_LEVEL = 6
_SHM = Path("/dev/shm")
_SHM_NEEDED = 4 * 1024**3  # rootfs + CLIs take ~1 GB; keep ample headroom in RAM

#: Called with (step, None) when a step starts and (step, seconds) when it ends.
Progress = Callable[[str, float | None], None]

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass
class ImageInfo:
    """One built image: where its layout is, what it is (digests, sizes) and what is inside."""

    key: str
    layout: Path
    digest: str  # the manifest's digest: the image's identity
    layer_digest: str
    compressed_size: int  # the gzip layer blob
    uncompressed_size: int  # the layer's tar
    backends: list[str]
    versions: dict[str, str | None]  # python, node, agentlite, and each CLI
    build_seconds: float
    cached: bool = False
    steps: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["layout"] = str(self.layout)
        return data

    @classmethod
    def load(cls, layout: Path) -> ImageInfo:
        data = json.loads((layout / INFO_FILE).read_text())
        data["layout"] = layout
        data["cached"] = True
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


# -- inputs and the cache key ------------------------------------------------------------------


def check_backends(backends: Sequence[str]) -> list[str]:
    names = sorted({b.strip() for b in backends if b.strip()})
    if not names:
        raise ConfigError(f"choose at least one backend for the image: {', '.join(BACKEND_PACKAGES)}")
    for name in names:
        if name not in BACKEND_PACKAGES:
            raise UnknownBackend(name, tuple(BACKEND_PACKAGES))
    return names


def images_dir(home: Path) -> Path:
    return Path(home) / "images"


def _apt_sources() -> Path:
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.is_file():
        return deb822
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file() and legacy.read_text().strip():
        return legacy
    raise ConfigError(
        "no apt sources found (/etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list)"
    )


def _agentlite_source() -> Path:
    import agentlite

    return Path(agentlite.__file__).resolve().parent


def _agentlite_version() -> str:
    from importlib.metadata import version

    return version("agentlite")


def _project_root() -> Path | None:
    """The checkout holding ``pyproject.toml`` for the installed package, if it is one."""
    root = _agentlite_source().parents[1]
    return root if (root / "pyproject.toml").is_file() else None


def _runner_pins() -> list[str]:
    """The runner's dependencies and theirs, pinned to the versions installed on the host."""
    import re
    from importlib.metadata import PackageNotFoundError, distribution

    pins: dict[str, str] = {}
    todo = list(RUNNER_REQUIREMENTS)
    while todo:
        name = re.split(r"[\s\[<>=!~;(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in pins:
            continue
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        pins[name] = dist.version
        for req in dist.requires or ():
            if ";" in req and "extra" in req.split(";", 1)[1]:
                continue  # optional extras are not needed
            if ";" in req and not _marker_true(req.split(";", 1)[1]):
                continue
            todo.append(req)
    return [f"{name}=={pins[name]}" for name in sorted(pins)]


def _marker_true(marker: str) -> bool:
    try:
        from packaging.markers import Marker
    except ImportError:  # pragma: no cover - packaging ships with pip's tooling almost everywhere
        return True
    return Marker(marker).evaluate({"python_full_version": "3.11.2", "python_version": "3.11"})


def _clis_prefix() -> Path:
    from agentlite.core.agent_clis import agent_clis_prefix

    prefix = agent_clis_prefix()
    if prefix is None or not (prefix / "node_modules").is_dir():
        raise ConfigError("the agent CLIs are not installed on this host; run scripts/install.sh first")
    return prefix


def _release_files(sources: Path) -> list[Path]:
    """The host's apt release files for the suites in ``sources`` (what the mirror served last)."""
    lists = Path("/var/lib/apt/lists")
    if not lists.is_dir():
        return []
    return sorted(p for p in lists.iterdir() if p.name.endswith(("_InRelease", "_Release")))


def cache_key(backends: Sequence[str]) -> str:
    """A hash of every input of the build: same key, same image."""
    h = hashlib.sha256()

    def add(label: str, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        h.update(f"{label}:{len(raw)}:".encode() + raw + b";")

    add("recipe", RECIPE_VERSION)
    add("epoch", str(SOURCE_DATE_EPOCH))
    add("suite", SUITE)
    add("packages", ",".join(PACKAGES))
    add("dpkg", "\n".join(DPKG_OPTIONS))
    add("backends", ",".join(check_backends(backends)))
    add("agentlite", _agentlite_version())
    # Every file of the package goes into the image (the wheel), so every file is an input.
    source = _agentlite_source()
    for path in sorted(source.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            add(str(path.relative_to(source)), path.read_bytes())
    if (root := _project_root()) is not None:  # the wheel's metadata comes from these
        for name in ("pyproject.toml", "README.md"):
            if (root / name).is_file():
                add(name, (root / name).read_bytes())
    add("pins", "\n".join(_runner_pins()))
    sources = _apt_sources()
    add("sources", sources.read_bytes())
    for release in _release_files(sources):
        add(release.name, release.read_bytes())
    lock = _clis_prefix() / "package-lock.json"
    add("package-lock", lock.read_bytes() if lock.is_file() else b"")
    add("arch", os.uname().machine)
    return h.hexdigest()[:16]


# -- tools and folders ---------------------------------------------------------------------------


def _need_tool(name: str, package: str) -> str:
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path is None:
        raise ConfigError(f"`{name}` is not installed; install it with `apt-get install -y {package}`")
    return path


def _check_writable(folder: Path) -> None:
    """Raise ConfigError unless ``folder`` (or the nearest existing parent) is writable."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the image to `{folder}`: `{probe}` is not a writable folder")


def _scratch_parent() -> Path | None:
    """``/dev/shm`` when it has room (unpacking many small files on a disk is ~25x slower)."""
    try:
        st = os.statvfs(_SHM)
    except OSError:
        return None
    return _SHM if st.f_bavail * st.f_frsize >= _SHM_NEEDED and os.access(_SHM, os.W_OK) else None


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(argv: Sequence[str], *, env: dict[str, str] | None = None, what: str) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise ImageBuildFailed(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


# -- the build -----------------------------------------------------------------------------------


def build_image(
    home: Path | None = None,
    *,
    output: Path | None = None,
    backends: Sequence[str] = DEFAULT_BACKENDS,
    force: bool = False,
    progress: Progress | None = None,
) -> ImageInfo:
    """Build (or find in the cache) the guest image and return what it is.

    With ``output`` the layout is written to that folder; otherwise into the cache at
    ``<home>/images/<key>/oci``. ``force`` rebuilds even when the key is cached.
    """
    names = check_backends(backends)
    if output is None and home is None:
        raise ConfigError("build_image needs `home` (the cache) or `output`")
    target_parent = Path(output).parent if output is not None else images_dir(Path(home))  # type: ignore[arg-type]
    _check_writable(Path(output) if output is not None else target_parent)
    mmdebstrap = _need_tool("mmdebstrap", "mmdebstrap")
    bwrap = _need_tool("bwrap", "bubblewrap")
    key = cache_key(names)
    if output is not None:
        final_layout, entry = Path(output).resolve(), Path(output).resolve()
    else:
        entry = images_dir(Path(home)) / key  # type: ignore[arg-type]
        final_layout = entry / LAYOUT_DIR
    lock_dir = images_dir(Path(home)) if home is not None else final_layout.parent
    with _lock(lock_dir / f".lock-{key}"):
        if not force and (final_layout / INFO_FILE).is_file():
            info = ImageInfo.load(final_layout)
            if info.key == key:
                return info
        if output is not None and final_layout.exists() and any(final_layout.iterdir()) and not force:
            raise ConfigError(f"output folder `{final_layout}` is not empty (use --force to replace it)")
        return _build(key, names, entry, final_layout, mmdebstrap, bwrap, progress)


def _build(
    key: str,
    backends: list[str],
    entry: Path,
    final_layout: Path,
    mmdebstrap: str,
    bwrap: str,
    progress: Progress | None,
) -> ImageInfo:
    started = time.monotonic()
    steps: dict[str, float] = {}

    @contextlib.contextmanager
    def step(name: str) -> Iterator[None]:
        if progress:
            progress(name, None)
        t0 = time.monotonic()
        yield
        steps[name] = round(time.monotonic() - t0, 2)
        log.info("image step %s took %.1f s", name, steps[name])
        if progress:
            progress(name, steps[name])

    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = entry.parent / f".staging-{entry.name}-{os.getpid()}-{time.monotonic_ns()}"
    scratch = Path(tempfile.mkdtemp(prefix="agentlite-image-", dir=_scratch_parent()))
    try:
        staging.mkdir()
        layout = staging / LAYOUT_DIR if entry != final_layout else staging
        rootfs = scratch / "rootfs"
        with step("debian"):
            _mmdebstrap(mmdebstrap, rootfs, scratch)
        with step("user"):
            _add_user(rootfs)
        with step("python"):
            _install_python(bwrap, rootfs, scratch / "wheels")
        with step("clis"):
            _install_clis(rootfs, backends)
        with step("inspect"):
            versions = _versions(bwrap, rootfs)
        with step("normalise"):  # after inspect: running the CLIs leaves files in /root
            _normalise(rootfs)
        with step("pack"):
            info = _pack(rootfs, layout, key, backends, versions)
        info.steps = steps
        info.build_seconds = round(time.monotonic() - started, 2)
        info.layout = final_layout
        (layout / INFO_FILE).write_text(json.dumps(info.as_json(), indent=2, sort_keys=True) + "\n")
        if entry.exists():
            doomed = entry.parent / f".removing-{entry.name}-{os.getpid()}-{time.monotonic_ns()}"
            entry.rename(doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        staging.rename(entry)
        return info
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)


def _build_env() -> dict[str, str]:
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH),
        "LC_ALL": "C.UTF-8",
        "TMPDIR": str(_scratch_parent() or tempfile.gettempdir()),
    }
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def _mmdebstrap(mmdebstrap: str, rootfs: Path, scratch: Path) -> None:
    mode = "root" if os.geteuid() == 0 else "unshare"
    argv = [mmdebstrap, f"--mode={mode}", "--variant=apt", "--include=" + ",".join(PACKAGES), "--quiet"]
    argv += [f"--dpkgopt={opt}" for opt in DPKG_OPTIONS]
    argv += [
        '--customize-hook=rm -f "$1"/etc/resolv.conf "$1"/etc/machine-id',
        '--customize-hook=touch "$1"/etc/resolv.conf',
        '--customize-hook=echo agentlite > "$1"/etc/hostname',
        SUITE,
        str(rootfs),
        str(_apt_sources()),
    ]
    _run(argv, env=_build_env(), what="mmdebstrap (the Debian base)")


def _add_user(rootfs: Path) -> None:
    days = SOURCE_DATE_EPOCH // 86400
    etc = rootfs / "etc"
    with open(etc / "passwd", "a") as f:
        f.write(f"{GUEST_USER}:x:{GUEST_UID}:{GUEST_UID}:AgentLite agent:{GUEST_HOME}:/bin/bash\n")
    with open(etc / "group", "a") as f:
        f.write(f"{GUEST_USER}:x:{GUEST_UID}:\n")
    with open(etc / "shadow", "a") as f:
        f.write(f"{GUEST_USER}:*:{days}:0:99999:7:::\n")
    with open(etc / "gshadow", "a") as f:
        f.write(f"{GUEST_USER}:!::\n")
    home = rootfs / GUEST_HOME.lstrip("/")
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o755)
    with contextlib.suppress(PermissionError):
        os.chown(home, GUEST_UID, GUEST_UID)
    # Mount points the boxes use, so a read-only root can take their binds.
    for folder in ("workspace",):
        (rootfs / folder).mkdir(exist_ok=True)


def _host_wheels(wheels: Path) -> tuple[Path, list[str]]:
    """The agentlite wheel and the runner's dependencies as wheels, fetched by the host's pip."""
    wheels.mkdir(parents=True, exist_ok=True)
    root = _project_root()
    if root is None:
        raise ConfigError("agentlite is not installed from a checkout; cannot build its wheel for the image")
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [sys.executable, "-m", "pip", "--no-input"]
    _run(
        [*pip, "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(root)],
        env=env,
        what="building the agentlite wheel",
    )
    pins = _runner_pins()
    _run(
        [*pip, "download", "--quiet", "--only-binary=:all:", "--no-deps", "-d", str(wheels), *pins],
        env=env,
        what="downloading the runner's Python dependencies",
    )
    built = sorted(wheels.glob("agentlite-*.whl"))
    if not built:
        raise ImageBuildFailed("building the agentlite wheel produced no wheel")
    return built[-1], pins


def _chroot_argv(bwrap: str, rootfs: Path, *binds: tuple[str, str]) -> list[str]:
    """bwrap as the real root on a writable rootfs, no network, clean environment (build steps)."""
    argv = [bwrap, "--bind", str(rootfs), "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    argv += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--die-with-parent", "--clearenv"]
    for host, guest in binds:
        argv += ["--ro-bind", host, guest]
    for k, v in {
        "PATH": GUEST_PATH,
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH),
        "PYTHONHASHSEED": "0",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_CACHE_DIR": "1",
    }.items():
        argv += ["--setenv", k, v]
    return [*argv, "--"]


def _install_python(bwrap: str, rootfs: Path, wheels: Path) -> None:
    wheel, pins = _host_wheels(wheels)
    run = _chroot_argv(bwrap, rootfs, (str(wheels), "/wheels"))
    _run([*run, "/usr/bin/python3", "-m", "venv", GUEST_VENV], what="creating the venv in the image")
    pip = [
        f"{GUEST_VENV}/bin/python",
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-index",
        "--find-links",
        "/wheels",
    ]
    _run([*run, *pip, "--no-deps", f"/wheels/{wheel.name}"], what="installing agentlite in the image")
    _run([*run, *pip, *pins], what="installing the runner's dependencies in the image")
    # The host-side command line needs the host-only dependencies; the box runs only the runner.
    (rootfs / GUEST_VENV.lstrip("/") / "bin" / "agentlite").unlink(missing_ok=True)


def _npm_closure(node_modules: Path, roots: Sequence[str]) -> list[str]:
    """The installed packages ``roots`` need (dependencies and the optional ones present here)."""
    lock_path = node_modules.parent / "package-lock.json"
    packages: dict[str, Any] = {}
    if lock_path.is_file():
        packages = json.loads(lock_path.read_text()).get("packages", {})
    seen: set[str] = set()
    todo = [f"node_modules/{name}" for name in roots]
    while todo:
        path = todo.pop()
        if path in seen or not (node_modules.parent / path).is_dir():
            continue
        if "musl" in path.rsplit("/", 1)[-1]:
            continue  # glibc guest: musl builds of native binaries are dead weight
        seen.add(path)
        meta = packages.get(path)
        if meta is None:
            try:
                meta = json.loads((node_modules.parent / path / "package.json").read_text())
            except (OSError, ValueError):
                meta = {}
        deps = {**meta.get("dependencies", {}), **meta.get("optionalDependencies", {})}
        for dep in deps:
            if (found := _resolve(node_modules.parent, path, dep)) is not None:
                todo.append(found)
    # Nested packages travel with their top-level package.
    tops = {p for p in seen if p.count("/node_modules/") == 0}
    return sorted(tops)


def _resolve(root: Path, path: str, dep: str) -> str | None:
    """Where Node finds ``dep`` from the package at ``path``: nested node_modules first, then up."""
    base = path
    while True:
        candidate = f"{base}/node_modules/{dep}"
        if (root / candidate).is_dir():
            return candidate
        cut = base.rfind("/node_modules/")
        if cut < 0:
            break
        base = base[:cut]
    candidate = f"node_modules/{dep}"
    return candidate if (root / candidate).is_dir() else None


def _copy_tree(source: Path, target: Path, links: dict[tuple[int, int], Path]) -> None:
    """Copy keeping symlinks, modes and hard links (claude's binary is hard-linked twice)."""
    st = source.lstat()
    if source.is_symlink():
        target.symlink_to(os.readlink(source))
        return
    if source.is_dir():
        target.mkdir(exist_ok=True)
        for child in sorted(source.iterdir()):
            if "musl" in child.name and child.parent.name.startswith("@"):
                continue
            _copy_tree(child, target / child.name, links)
        os.chmod(target, st.st_mode & 0o7777)
        return
    if st.st_nlink > 1 and (st.st_dev, st.st_ino) in links:
        os.link(links[(st.st_dev, st.st_ino)], target)
        return
    shutil.copyfile(source, target, follow_symlinks=False)
    os.chmod(target, st.st_mode & 0o7777)
    if st.st_nlink > 1:
        links[(st.st_dev, st.st_ino)] = target


def _install_clis(rootfs: Path, backends: Sequence[str]) -> None:
    prefix = _clis_prefix()
    node_modules = prefix / "node_modules"
    roots = [pkg for backend in backends for pkg in BACKEND_PACKAGES[backend]]
    wanted = _npm_closure(node_modules, roots)
    target = rootfs / GUEST_CLIS.lstrip("/")
    (target / "node_modules" / ".bin").mkdir(parents=True)
    links: dict[tuple[int, int], Path] = {}
    for rel in wanted:
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        _copy_tree(prefix / rel, dest, links)
    for name in ("package.json", "package-lock.json"):
        if (prefix / name).is_file():
            shutil.copyfile(prefix / name, target / name)
    # The commands: the host's .bin links whose package came along.
    host_bin = node_modules / ".bin"
    for link in sorted(host_bin.iterdir()) if host_bin.is_dir() else []:
        if not link.is_symlink():
            continue
        dest = os.readlink(link)
        if (target / "node_modules" / ".bin" / dest).exists():
            (target / "node_modules" / ".bin" / link.name).symlink_to(dest)


def _normalise(rootfs: Path) -> None:
    # Host-specific files: mmdebstrap copies the host's resolv.conf and hostname.
    (rootfs / "etc" / "resolv.conf").unlink(missing_ok=True)
    (rootfs / "etc" / "resolv.conf").write_text("")  # a mount point for the host's, bound at start
    (rootfs / "etc" / "hostname").write_text("agentlite\n")
    (rootfs / "etc" / "machine-id").unlink(missing_ok=True)
    for folder in ("tmp", "root", "var/tmp", "var/cache/apt/archives/partial", "var/lib/apt/lists/partial"):
        path = rootfs / folder
        if path.is_dir():
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    with contextlib.suppress(OSError):
        (rootfs / "wheels").rmdir()  # the build's mount point
    for stale in (rootfs / "var/cache/apt").glob("*.bin"):
        stale.unlink()
    for log_file in (rootfs / "var/log").rglob("*"):
        if log_file.is_file():
            log_file.write_bytes(b"")
    extras = rootfs / "usr/local/share/ca-certificates"
    if extras.is_dir():
        for child in extras.iterdir():
            child.unlink()


def _versions(bwrap: str, rootfs: Path) -> dict[str, str | None]:
    run = _chroot_argv(bwrap, rootfs)

    def ask(*argv: str) -> str | None:
        proc = subprocess.run([*run, *argv], capture_output=True, text=True, timeout=60)
        return (proc.stdout.strip().splitlines() or [None])[0] if proc.returncode == 0 else None

    clis = rootfs / GUEST_CLIS.lstrip("/") / "node_modules" / ".bin"
    versions: dict[str, str | None] = {
        "python": ask("/usr/bin/python3", "--version"),
        "node": ask("/usr/bin/node", "--version"),
        "git": ask("/usr/bin/git", "--version"),
        "agentlite": ask(GUEST_PYTHON, "-c", "import importlib.metadata as m; print(m.version('agentlite'))"),
        "debian": (rootfs / "etc/debian_version").read_text().strip(),
    }
    for name in ("codex", "claude"):
        if (clis / name).exists():
            versions[name] = ask(f"{GUEST_CLIS}/node_modules/.bin/{name}", "--version")
    for name in ("codex-acp", "claude-agent-acp"):
        if (clis / name).exists():
            versions[name] = "installed"
    return versions


# -- the OCI packer ------------------------------------------------------------------------------


class _HashingWriter:
    """A write-only file that hashes and counts what passes through to ``target``."""

    def __init__(self, target: BinaryIO | gzip.GzipFile) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass


def _tar_members(tar: tarfile.TarFile, root: Path) -> None:
    """Add ``root``'s tree to ``tar``: sorted names, numeric owners, clamped mtimes."""

    def add(path: Path, arcname: str) -> None:
        info = tar.gettarinfo(str(path), arcname)
        if info is None:  # sockets, fifos: nothing to ship
            return
        info.mtime = min(int(info.mtime), SOURCE_DATE_EPOCH)
        info.uname = info.gname = ""
        if info.isreg():
            with open(path, "rb") as f:
                tar.addfile(info, f)
        else:
            tar.addfile(info)
        if info.isdir():
            if arcname in ("dev", "proc", "sys", "run/lock"):
                return  # device nodes and kernel folders come from the runtime
            for child in sorted(os.listdir(path)):
                add(path / child, f"{arcname}/{child}")

    for child in sorted(os.listdir(root)):
        add(root / child, child)


def _blob(blobs: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    path = blobs / digest
    path.write_bytes(data)
    os.chmod(path, 0o644)
    return f"sha256:{digest}", len(data)


def _canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _pack(
    rootfs: Path, layout: Path, key: str, backends: list[str], versions: dict[str, str | None]
) -> ImageInfo:
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    tmp = blobs / ".layer.tmp"
    with open(tmp, "wb") as raw:
        compressed = _HashingWriter(raw)
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=GZIP_LEVEL
        ) as gz:  # type: ignore[arg-type]
            plain = _HashingWriter(gz)
            with tarfile.open(fileobj=plain, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                _tar_members(tar, rootfs)
    layer_digest = "sha256:" + compressed.sha.hexdigest()
    tmp.rename(blobs / compressed.sha.hexdigest())
    os.chmod(blobs / compressed.sha.hexdigest(), 0o644)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(SOURCE_DATE_EPOCH))
    labels = {f"dev.agentlite.version.{k}": v for k, v in sorted(versions.items()) if v}
    labels["dev.agentlite.guest.backends"] = ",".join(backends)
    labels["dev.agentlite.key"] = key
    config = {
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
        "os": "linux",
        "created": created,
        "config": {
            "User": f"{GUEST_UID}:{GUEST_UID}",
            "Env": [f"{k}={v}" for k, v in GUEST_ENV.items()],
            "WorkingDir": GUEST_HOME,
            "Cmd": ["/bin/bash"],
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + plain.sha.hexdigest()]},
        "history": [{"created": created, "created_by": f"agentlite image build (recipe {RECIPE_VERSION})"}],
    }
    config_digest, config_size = _blob(blobs, _canonical(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": layer_digest, "size": compressed.size}],
        "annotations": {"org.opencontainers.image.created": created},
    }
    manifest_digest, manifest_size = _blob(blobs, _canonical(manifest))
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }
        ],
    }
    (layout / "index.json").write_bytes(_canonical(index))
    (layout / "oci-layout").write_bytes(_canonical({"imageLayoutVersion": "1.0.0"}))
    return ImageInfo(
        key=key,
        layout=layout,
        digest=manifest_digest,
        layer_digest=layer_digest,
        compressed_size=compressed.size,
        uncompressed_size=plain.size,
        backends=backends,
        versions=versions,
        build_seconds=0.0,
    )


# -- the cache: list, remove, find ---------------------------------------------------------------


def list_images(home: Path) -> list[ImageInfo]:
    root = images_dir(home)
    found = []
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        if entry.name.startswith(".") or not (entry / LAYOUT_DIR / INFO_FILE).is_file():
            continue
        with contextlib.suppress(OSError, ValueError, TypeError):
            found.append(ImageInfo.load(entry / LAYOUT_DIR))
    return found


def find_image(
    home: Path, key: str | None = None, backends: Sequence[str] = DEFAULT_BACKENDS
) -> ImageInfo | None:
    """The cached image ``key`` (a unique prefix works), or the one the current inputs would build."""
    images = list_images(home)
    if key is None:
        key = cache_key(backends)
        return next((i for i in images if i.key == key), None)
    matches = [i for i in images if i.key.startswith(key)]
    if len(matches) > 1:
        raise ConfigError(f"image key `{key}` is ambiguous: {', '.join(i.key for i in matches)}")
    return matches[0] if matches else None


def remove_image(home: Path, key: str) -> str:
    info = find_image(home, key)
    if info is None:
        raise ConfigError(f"no image `{key}` in {images_dir(home)}")
    entry = images_dir(home) / info.key
    doomed = entry.parent / f".removing-{info.key}-{os.getpid()}-{time.monotonic_ns()}"
    entry.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)
    return info.key


def disk_usage(path: Path) -> int:
    total, seen = 0, set()
    for folder, _dirs, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(folder, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


# -- the unpacked tree for the sandbox runtime ---------------------------------------------------


def layer_path(layout: Path) -> Path:
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest).read_bytes())
    layers = manifest["layers"]
    if len(layers) != 1:
        raise ConfigError(
            f"`{layout}` has {len(layers)} layers; the sandbox unpacks single-layer images only"
        )
    return layout / "blobs" / "sha256" / layers[0]["digest"].split(":", 1)[1]


def unpack_rootfs(layout: Path, target: Path) -> Path:
    """Unpack the image's layer into ``target`` (once; staged and renamed, so never half-made)."""
    if (target / "etc" / "passwd").is_file():
        return target
    layer = layer_path(layout)
    staging = target.parent / f".staging-{target.name}-{os.getpid()}-{time.monotonic_ns()}"
    staging.mkdir(parents=True)
    try:
        tar = shutil.which("tar") or "/bin/tar"
        argv = [tar, "-xzf", str(layer), "-C", str(staging), "--numeric-owner"]
        if os.geteuid() == 0:
            argv.append("--same-owner")
        _run(argv, what=f"unpacking {layer.name[:12]}")
        try:
            staging.rename(target)
        except OSError:  # another process unpacked it first
            if not (target / "etc" / "passwd").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def image_rootfs_for_sandbox(
    home: Path, *, backends: Sequence[str] = DEFAULT_BACKENDS, progress: Progress | None = None
) -> Path:
    """The unpacked tree of the current image for the sandbox's image mode, building it if missing."""
    info = build_image(home, backends=backends, progress=progress)
    with _lock(images_dir(home) / f".lock-{info.key}"):
        return unpack_rootfs(info.layout, info.layout.parent / ROOTFS_DIR)


def stderr_progress(step: str, seconds: float | None) -> None:
    """Progress for builds started implicitly (not by ``agentlite image build``): one line per step."""
    if seconds is None:
        print(f"agentlite: building the guest image: {step} ...", file=sys.stderr, flush=True)


def sandbox_rootfs_from_env(home: Path) -> Path | None:
    """What ``$AGENTLITE_SANDBOX_ROOTFS`` asks for: ``image`` (the built image, built if missing), an
    unpacked root folder, or an OCI layout (unpacked next to itself); ``None`` when unset/``host``.

    Unset stays host-root mode, although image mode measured the same spawn and first-turn cost. An
    image box's exec loader keeps the box's processes out of its memory until its filter is in, as in
    a host-root box (see ``seccomp.LOADER``), but it runs the image's Python as host root for its
    first steps: image mode is for those who ask for it.
    """
    value = os.environ.get(ENV_SANDBOX_ROOTFS, "").strip()
    if value in ("", "host"):
        return None
    if value == "image":
        return image_rootfs_for_sandbox(home, progress=stderr_progress)
    path = Path(value)
    if (path / "oci-layout").is_file():
        return unpack_rootfs(path, path.parent / f"{path.name}.rootfs")
    if (path / "etc" / "passwd").is_file():
        return path
    raise ConfigError(
        f"{ENV_SANDBOX_ROOTFS}=`{value}` is neither `image`, `host`, an OCI layout nor an unpacked root folder"
    )
