"""The guest image: built for real with mmdebstrap, packed as an OCI layout, run by both runtimes.

The image is built once per session into a persistent cache (``$AGENTLITE_TEST_IMAGE_HOME``, default
``/var/tmp/agentlite-test-image``), so a warm machine gets it from the cache in well under a second; a
cold build takes about 1.5 minutes here. The reproducibility check builds twice more and is ``slow``.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentlite.box.base import BoxSpec, BoxState
from agentlite.box.probe import sandbox_checks
from agentlite.box.sandbox import SandboxRuntime
from agentlite.core.agent_clis import agent_clis_prefix
from agentlite.core.errors import ConfigError
from agentlite.image import builder as _image
from agentlite.image.builder import ImageBuildFailed, ImageInfo, build_image, image_rootfs_for_sandbox
from agentlite.run.protocol import BackendConfig, ErrorEvent, Event, FrameParser, ResultEvent, RunnerInput

IMAGE_HOME = Path(os.environ.get("AGENTLITE_TEST_IMAGE_HOME", "/var/tmp/agentlite-test-image"))

_why_not = [c.detail for c in sandbox_checks() if not c.ok]
if shutil.which("mmdebstrap") is None:
    _why_not.append("mmdebstrap is not installed (apt-get install -y mmdebstrap)")
if agent_clis_prefix() is None:
    _why_not.append("the agent CLIs are not installed (scripts/install.sh)")
if os.geteuid() != 0:
    _why_not.append("building the image needs root here (mmdebstrap unshare mode needs subuid ranges)")
needs_build = pytest.mark.skipif(bool(_why_not), reason="; ".join(_why_not))
BUILD_TIMEOUT = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def image() -> ImageInfo:
    if _why_not:
        pytest.skip("; ".join(_why_not))
    info = build_image(IMAGE_HOME)
    # The shared cache keeps only the current image (every change to the package makes a new key).
    for stale in _image.list_images(IMAGE_HOME):
        if stale.key != info.key:
            _image.remove_image(IMAGE_HOME, stale.key)
    return info


@pytest.fixture(scope="module")
def rootfs(image: ImageInfo) -> Path:
    return image_rootfs_for_sandbox(IMAGE_HOME)


@pytest.fixture
def image_sandbox(home: Path, rootfs: Path) -> Iterator[SandboxRuntime]:
    yield SandboxRuntime(home, rootfs=rootfs)
    leftover = [b for b in asyncio.run(SandboxRuntime(home).list()) if b.running]
    for box in leftover:
        asyncio.run(SandboxRuntime(home).remove(box.name, force=True))
    assert not leftover, f"test left running boxes: {leftover}"


async def run_in(runtime: SandboxRuntime, box: str, *argv: str, stdin: bytes = b"") -> tuple[int, str, str]:
    proc = await runtime.exec(box, list(argv))
    await proc.write_stdin(stdin)
    await proc.close_stdin()
    out, err = await asyncio.gather(_collect(proc.stdout_lines()), _collect(proc.stderr_lines()))
    return await proc.wait(), out, err


async def _collect(lines: object) -> str:
    return b"".join([line async for line in lines]).decode(errors="replace")  # type: ignore[attr-defined]


# -- bad input: fast, no build -------------------------------------------------------------------


def test_unknown_backend_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown backend `nope`.*codex, claude_code, acp"):
        build_image(tmp_path, backends=["codex", "nope"])
    assert not (tmp_path / "images").exists()


def test_unwritable_output_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="not a writable folder"):
        build_image(output=blocker / "layout")


def test_missing_mmdebstrap_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(ConfigError, match=r"`mmdebstrap` is not installed.*apt-get install -y mmdebstrap"):
        build_image(tmp_path / "home")


@pytest.mark.skipif(
    agent_clis_prefix() is None, reason="the agent CLIs are not installed (scripts/install.sh)"
)
def test_failed_build_leaves_no_half_written_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("mmdebstrap") is None or shutil.which("bwrap") is None:
        pytest.skip("mmdebstrap or bwrap is not installed")
    scratch_before = set(Path("/dev/shm").glob("agentlite-image-*"))

    def broken(mmdebstrap: str, rootfs: Path, scratch: Path) -> None:
        (rootfs / "etc").mkdir(parents=True)
        (rootfs / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
        raise ImageBuildFailed("mmdebstrap (the Debian base) failed (exit 1): E: simulated")

    monkeypatch.setattr(_image, "_mmdebstrap", broken)
    steps: list[tuple[str, float | None]] = []
    with pytest.raises(ImageBuildFailed, match="simulated"):
        build_image(tmp_path / "home", progress=lambda step, s: steps.append((step, s)))
    assert steps == [("debian", None)]
    left = [p.name for p in (tmp_path / "home" / "images").iterdir() if not p.name.startswith(".lock-")]
    assert left == [], f"a failed build left {left}"
    assert _image.list_images(tmp_path / "home") == []
    assert set(Path("/dev/shm").glob("agentlite-image-*")) == scratch_before


def test_cache_key_covers_backends_and_ignores_order() -> None:
    if agent_clis_prefix() is None:
        pytest.skip("the agent CLIs are not installed")
    assert _image.cache_key(["codex", "claude_code"]) == _image.cache_key(["claude_code", "codex"])
    assert _image.cache_key(["codex"]) != _image.cache_key(["codex", "claude_code"])


def test_sandbox_rejects_a_rootfs_that_is_not_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not an unpacked root filesystem"):
        SandboxRuntime(tmp_path / "home", rootfs=tmp_path)


# -- the built image -------------------------------------------------------------------------------


@needs_build
@BUILD_TIMEOUT
def test_build_then_a_second_build_is_a_cache_hit(image: ImageInfo) -> None:
    assert image.layout.is_dir() and (image.layout / "oci-layout").is_file()
    assert image.versions["python"] == "Python 3.11.2"
    assert (image.versions["node"] or "").startswith("v18.")
    assert (image.versions["codex"] or "").startswith("codex-cli ")
    assert "Claude Code" in (image.versions["claude"] or "")
    assert image.versions["agentlite"] == _image._agentlite_version()
    assert image.compressed_size <= 400_000_000, "target: at most 400 MB compressed with both CLIs"
    again = build_image(IMAGE_HOME)
    assert again.cached and again.digest == image.digest and again.key == image.key
    assert [i.key for i in _image.list_images(IMAGE_HOME) if i.key == image.key] == [image.key]


@needs_build
@BUILD_TIMEOUT
def test_layout_is_valid_and_the_layer_has_nothing_of_the_host(image: ImageInfo) -> None:
    layout = image.layout
    blobs = layout / "blobs" / "sha256"
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    [entry] = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    assert entry["digest"] == image.digest

    def blob(digest: str) -> bytes:
        data = (blobs / digest.split(":", 1)[1]).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
        return data

    manifest = json.loads(blob(entry["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    [layer] = manifest["layers"]
    assert layer["mediaType"].endswith("tar+gzip") and layer["digest"] == image.layer_digest
    layer_file = blobs / layer["digest"].split(":", 1)[1]
    assert layer_file.stat().st_size == layer["size"] and layer_file.stat().st_mode & 0o777 == 0o644
    assert config["config"]["User"] == "1000:1000"

    # Host facts that must not be baked in.
    host_extra_cas = [
        b"".join(line.strip() for line in p.read_bytes().splitlines()[1:4])
        for p in Path("/usr/local/share/ca-certificates").glob("**/*.crt")
    ]
    # The hostname only where it would land (it may be a short common word such as "vm").
    hostname = socket.gethostname().encode()
    host_values = {
        v.encode()
        for k, v in os.environ.items()
        if len(v) >= 12
        and k not in ("PATH", "SHELL", "LANG", "TERM", "PWD", "OLDPWD")
        and not v.startswith(("/usr/", "/etc/", "/bin", "/lib"))
        and ("/" in v or any(c.isdigit() for c in v))
    }
    text_roots = ("etc/", "opt/agentlite/pyvenv.cfg", "opt/agentlite/lib/python3.11/site-packages/agentlite-")
    sha_plain = hashlib.sha256()
    names: list[str] = []
    with gzip.open(layer_file) as gz:
        reader = _HashingReader(gz, sha_plain)
        with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                names.append(member.name)
                assert member.mtime <= _image.SOURCE_DATE_EPOCH, member.name
                assert member.uname == "" and member.gname == "", member.name
                assert not member.name.startswith(("dev/", "proc/", "sys/", "tmp/", "wheels")), member.name
                if not member.isreg() or not member.name.startswith(text_roots) or member.size > 2_000_000:
                    continue
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                if member.name == "etc/resolv.conf":
                    assert data == b"", "the host's resolv.conf was baked in"
                if member.name == "etc/hostname":
                    assert data == b"agentlite\n"
                if member.name == "etc/hosts":
                    assert hostname not in data.split()
                if member.name == "etc/ssl/certs/ca-certificates.crt":
                    flat = b"".join(data.split())
                    for ca in host_extra_cas:
                        assert ca not in flat, "a host-only CA certificate was baked in"
                for value in host_values:
                    assert value not in data, f"host value {value[:20]!r}... found in {member.name}"
    assert config["rootfs"]["diff_ids"] == ["sha256:" + sha_plain.hexdigest()]
    assert names == sorted(names, key=lambda n: n.split("/")) or _sorted_walk(names)
    assert not [n for n in names if n.startswith("usr/local/share/ca-certificates/") and n.endswith(".crt")]
    assert "etc/machine-id" not in names
    assert not [n for n in names if "linux-x64-musl" in n], "musl variants cannot run on the glibc guest"
    assert "home/agent" in names and "opt/agent-clis/node_modules/.bin/codex" in names


class _HashingReader:
    def __init__(self, raw: gzip.GzipFile, sha: hashlib._Hash) -> None:
        self.raw, self.sha = raw, sha

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.sha.update(data)
        return data


def _sorted_walk(names: list[str]) -> bool:
    """Entries come in a depth-first walk with each folder's children sorted by name."""
    siblings: dict[str, list[str]] = {}
    for name in names:
        parent, _, leaf = name.rpartition("/")
        siblings.setdefault(parent, []).append(leaf)
    return all(children == sorted(children) for children in siblings.values())


@needs_build
@BUILD_TIMEOUT
async def test_image_box_has_the_tools_and_runs_as_the_agent_user(image_sandbox: SandboxRuntime) -> None:
    await image_sandbox.create("img-tools", BoxSpec())
    try:
        assert (await image_sandbox.get("img-tools")).state is BoxState.RUNNING  # type: ignore[union-attr]
        code, out, _ = await run_in(image_sandbox, "img-tools", "id", "-u")
        assert (code, out.strip()) == (0, "1000")
        code, out, _ = await run_in(image_sandbox, "img-tools", "sh", "-c", "id -un; echo $HOME; pwd")
        assert out.split() == ["agent", "/home/agent", "/workspace"]
        for argv, expected in (
            (["python3", "--version"], "Python 3.11"),
            (["node", "--version"], "v18."),
            (["codex", "--version"], "codex-cli"),
            (["claude", "--version"], "Claude Code"),
            (["git", "--version"], "git version"),
        ):
            code, out, err = await run_in(image_sandbox, "img-tools", *argv)
            assert code == 0 and expected in out, (argv, out, err)
        # The image is read-only; the box's own folders are not.
        code, _, err = await run_in(image_sandbox, "img-tools", "touch", "/etc/x")
        assert code != 0 and "Read-only" in err
        code, _, _ = await run_in(image_sandbox, "img-tools", "sh", "-c", "touch /workspace/a /tmp/b ~/c")
        assert code == 0
        # No host environment, and nothing of the host's system folders.
        code, out, _ = await run_in(image_sandbox, "img-tools", "env")
        env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        assert env["PATH"].startswith("/opt/agentlite/bin:/opt/agent-clis/node_modules/.bin:")
        assert not {k for k in env if k.startswith(("PIP_", "REQUESTS_", "CURL_", "GIT_SSL"))}
        assert not Path("/work").exists() or (await run_in(image_sandbox, "img-tools", "ls", "/work"))[0] != 0
        # The host's DNS settings are injected at start.
        code, out, _ = await run_in(image_sandbox, "img-tools", "cat", "/etc/resolv.conf")
        assert out == Path("/etc/resolv.conf").read_text()
    finally:
        await image_sandbox.remove("img-tools", force=True)


@needs_build
@BUILD_TIMEOUT
async def test_runner_answers_bad_input_with_an_error_event(image_sandbox: SandboxRuntime) -> None:
    await image_sandbox.create("img-runner", BoxSpec())
    try:
        # The host's interpreter path is mapped to the image's venv Python, as run_agent uses it.
        code, out, err = await run_in(
            image_sandbox, "img-runner", sys.executable, "-m", "agentlite.guest.runner", stdin=b"{not json"
        )
        parser = FrameParser()
        events = [e for line in out.splitlines(keepends=True) for e in parser.feed(line)]
        assert [type(e) for e in events if isinstance(e, ErrorEvent)] == [ErrorEvent], (out, err)
        assert code != 0
        code, out, _ = await run_in(
            image_sandbox, "img-runner", "python", "-c", "import agentlite, sys; print(agentlite.__file__)"
        )
        assert out.startswith("/opt/agentlite/lib/python3.11/site-packages/agentlite/"), out
    finally:
        await image_sandbox.remove("img-runner", force=True)


@needs_build
@BUILD_TIMEOUT
async def test_https_the_host_trusts_works_from_an_image_box(image_sandbox: SandboxRuntime) -> None:
    await image_sandbox.create("img-https", BoxSpec())
    try:
        script = (
            "import ssl, sys, urllib.error, urllib.request\n"
            "try:\n"
            "    urllib.request.urlopen('https://pypi.org/simple/pip/', timeout=20).read(100)\n"
            "    print('ok')\n"
            "except urllib.error.URLError as e:\n"
            "    print('ssl' if isinstance(e.reason, ssl.SSLError) else 'offline', e)\n"
        )
        _code, out, err = await run_in(image_sandbox, "img-https", "python3", "-c", script)
        if out.startswith("offline"):
            pytest.skip(f"no network from this machine: {out.strip()}")
        assert out.strip() == "ok", (out, err)
    finally:
        await image_sandbox.remove("img-https", force=True)


@needs_build
@BUILD_TIMEOUT
async def test_codex_turn_with_a_tool_call_in_image_mode(
    image_sandbox: SandboxRuntime, home: Path, tmp_path: Path
) -> None:
    from agentlite.box.ownership import RecordStore
    from agentlite.run.box_run import run_agent
    from agentlite.testing import ModelServer

    events: list[Event] = []
    async with ModelServer(scenario="tool") as server:
        config = BackendConfig(
            type="codex", base_url=server.openai_base_url, model="fake-model", max_retries=0
        )
        run_input = RunnerInput(
            prompt="write it", group_folder="main", chat_id="c1", is_main=True, backend=config
        )
        outcome = await run_agent(
            image_sandbox,
            home,
            run_input,
            workspace=tmp_path / "ws",
            on_event=events.append,
            single_turn=True,
            timeout=120,
            idle_timeout=5,
        )
    assert outcome.status == "success", (outcome, outcome.log_path and outcome.log_path.read_text()[-3000:])
    assert len([e for e in events if isinstance(e, ResultEvent)]) == 1
    assert (tmp_path / "ws" / "out.txt").read_text().strip() == "probe"
    assert await image_sandbox.list() == []
    assert RecordStore(home).record_names() == []


@needs_build
@BUILD_TIMEOUT
async def test_boxlite_accepts_the_layout(image: ImageInfo, tmp_path: Path) -> None:
    from agentlite.box.boxlite import BoxliteRuntime
    from agentlite.core.errors import BoxNotFound

    runtime = BoxliteRuntime(tmp_path / "blhome", rootfs_path=image.layout)
    info = await runtime.create("agentlite-img-1", BoxSpec(memory_mib=512, cpus=1))
    assert info.state is BoxState.CONFIGURED
    assert [b.name for b in await runtime.list()] == ["agentlite-img-1"]
    await runtime.remove("agentlite-img-1", force=True)
    assert await runtime.list() == []
    with pytest.raises(BoxNotFound):
        await runtime.remove("agentlite-img-1", force=True)
    # Booting needs hardware virtualization; see test_boxlite_runtime.py for the (skipped) boot test.


@needs_build
@BUILD_TIMEOUT
def test_cli_list_inspect_rm(image: ImageInfo, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
        return subprocess.run(
            [sys.executable, "-m", "agentlite", "image", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    listed = cli("list", "--json", "--home", str(IMAGE_HOME))
    assert listed.returncode == 0, listed.stderr
    assert image.key in [row["key"] for row in json.loads(listed.stdout)]
    inspected = cli("inspect", image.key[:8], "--json", "--home", str(IMAGE_HOME))
    data = json.loads(inspected.stdout)
    assert data["digest"] == image.digest and data["versions"]["node"] == image.versions["node"]
    assert data["disk_size"] > 100_000_000
    hit = cli("build", "--home", str(IMAGE_HOME))
    assert hit.returncode == 0 and "cache hit" in hit.stderr and image.digest in hit.stdout
    bad = cli("build", "--backends", "codex,nope", "--home", str(tmp_path))
    assert bad.returncode == 2 and "unknown backend `nope`" in bad.stderr
    missing = cli("rm", "0000dead", "--home", str(tmp_path))
    assert missing.returncode == 2 and "no image `0000dead`" in missing.stderr
    # rm on a copy of the cache entry, so the shared cache stays warm.
    copy_home = tmp_path / "copyhome"
    (copy_home / "images" / image.key).mkdir(parents=True)
    shutil.copytree(image.layout, copy_home / "images" / image.key / "oci", copy_function=os.link)
    removed = cli("rm", image.key, "--home", str(copy_home))
    assert removed.returncode == 0 and image.key in removed.stdout
    assert not (copy_home / "images" / image.key).exists()


def _small_tree(root: Path, order: list[str], mtime: float) -> Path:
    """A tree with folders, files, an executable and a symlink, made in ``order``, all at ``mtime``."""
    contents = {
        "etc/hostname": b"agentlite\n",
        "usr/bin/tool": b"#!/bin/sh\necho hi\n",
        "home/a/notes": b"x" * 5000,
    }
    for name in order:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(contents[name])
    (root / "usr/bin/tool").chmod(0o755)
    (root / "usr/bin/alias").symlink_to("tool")
    for path in [*root.rglob("*"), root]:
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    return root


def test_packing_the_same_tree_twice_gives_the_same_digest(tmp_path: Path) -> None:
    """The small version of the reproducibility check (two full builds are ``slow``): the packing
    step alone, on trees made in another order at other times, gives the same digests."""
    names = ["etc/hostname", "usr/bin/tool", "home/a/notes"]
    one = _small_tree(tmp_path / "one", names, time.time())
    two = _small_tree(tmp_path / "two", list(reversed(names)), time.time() - 3600)
    packed = [
        _image._pack(tree, tmp_path / f"{tree.name}-oci", "k", ["codex"], {"node": "v1"})
        for tree in (one, two)
    ]
    assert packed[0].digest == packed[1].digest and packed[0].layer_digest == packed[1].layer_digest
    (two / "home/a/notes").write_bytes(b"y" * 5000)  # one byte of content more or less is another image
    changed = _image._pack(two, tmp_path / "changed-oci", "k", ["codex"], {"node": "v1"})
    assert changed.layer_digest != packed[0].layer_digest


@pytest.mark.slow
@needs_build
@pytest.mark.timeout(1800)
def test_two_builds_give_the_same_manifest_digest(image: ImageInfo, tmp_path: Path) -> None:
    first = build_image(output=tmp_path / "one")
    second = build_image(output=tmp_path / "two")
    assert first.digest == second.digest == image.digest


def test_open_runtime_uses_the_image_when_asked(
    rootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``AGENTLITE_SANDBOX_ROOTFS`` selects image mode through the same door every command uses."""
    from agentlite.image.guest_root import open_configured_runtime as open_runtime

    monkeypatch.setenv("AGENTLITE_SANDBOX_ROOTFS", str(rootfs))
    runtime, choice = open_runtime(tmp_path / "home", "sandbox")
    assert choice.name == "sandbox" and runtime._rootfs == rootfs  # type: ignore[attr-defined]
    monkeypatch.setenv("AGENTLITE_SANDBOX_ROOTFS", "host")
    runtime, _ = open_runtime(tmp_path / "home", "sandbox")
    assert runtime._rootfs is None  # type: ignore[attr-defined]
    monkeypatch.setenv("AGENTLITE_SANDBOX_ROOTFS", str(tmp_path))
    with pytest.raises(ConfigError, match="neither `image`"):
        open_runtime(tmp_path / "home", "sandbox")


def test_sandbox_default_stays_host_root_where_the_image_is_built(
    rootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unset: host-root mode even with a built image (image mode only when asked); nothing is built."""
    from agentlite.image.guest_root import open_configured_runtime as open_runtime

    monkeypatch.delenv("AGENTLITE_SANDBOX_ROOTFS", raising=False)
    runtime, _ = open_runtime(IMAGE_HOME, "sandbox")
    assert runtime._rootfs is None  # type: ignore[attr-defined]
    monkeypatch.setenv("AGENTLITE_SANDBOX_ROOTFS", "image")
    runtime, _ = open_runtime(IMAGE_HOME, "sandbox")
    assert runtime._rootfs == rootfs  # type: ignore[attr-defined]
    monkeypatch.delenv("AGENTLITE_SANDBOX_ROOTFS")
    runtime, _ = open_runtime(tmp_path / "home", "sandbox")
    assert runtime._rootfs is None  # type: ignore[attr-defined]
    assert not (tmp_path / "home" / "images").exists()  # nothing was built
