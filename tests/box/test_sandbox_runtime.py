"""The sandbox runtime against real bubblewrap boxes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from agentlite.box.base import BoxSpec, BoxState, Volume
from agentlite.box.sandbox import SandboxRuntime
from agentlite.core.errors import (
    BoxExecFailed,
    BoxExists,
    BoxNotFound,
    BoxRemoveFailed,
    ConfigError,
)
from conftest import until


async def run(rt: SandboxRuntime, name: str, argv: list[str], stdin: bytes = b"") -> tuple[int, str, str]:
    proc = await rt.exec(name, argv)
    if stdin:
        await proc.write_stdin(stdin)
    await proc.close_stdin()

    async def collect(lines) -> str:  # type: ignore[no-untyped-def]
        return b"".join([line async for line in lines]).decode()

    out, err = await asyncio.gather(collect(proc.stdout_lines()), collect(proc.stderr_lines()))
    return await proc.wait(), out, err


def box_pids(home: Path, name: str) -> list[int]:
    state = json.loads((home / "sandbox" / name / "box.json").read_text())
    init = psutil.Process(state["init_pid"])
    return [init.pid, *(c.pid for c in init.children(recursive=True))]


async def test_create_exec_stream_and_remove(sandbox: SandboxRuntime, home: Path) -> None:
    info = await sandbox.create("agentlite-t-main-1", BoxSpec(env={"GREETING": "hello"}))
    assert info.running
    code, out, err = await run(
        sandbox,
        "agentlite-t-main-1",
        ["sh", "-c", 'read x; echo "$GREETING $x"; echo oops >&2; exit 3'],
        b"box\n",
    )
    assert (code, out, err) == (3, "hello box\n", "oops\n")
    assert [(b.name, b.state) for b in await sandbox.list()] == [("agentlite-t-main-1", BoxState.RUNNING)]
    pids = box_pids(home, "agentlite-t-main-1")
    await sandbox.remove("agentlite-t-main-1", force=True)
    assert await sandbox.get("agentlite-t-main-1") is None
    assert await sandbox.list() == []
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)


async def test_host_home_files_and_environment_are_invisible(
    sandbox: SandboxRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = Path.home() / f".agentlite-test-secret-{uuid.uuid4().hex}"
    secret_file.write_text("ssh-private-key")
    monkeypatch.setenv("AGENTLITE_TEST_SECRET", "cloud-credential")
    try:
        await sandbox.create("agentlite-t-secrets-1", BoxSpec())
        _, out, _ = await run(
            sandbox,
            "agentlite-t-secrets-1",
            ["sh", "-c", f"cat {secret_file} 2>&1; env; ls /root /var /mnt /srv 2>&1; ls -a /tmp"],
        )
    finally:
        secret_file.unlink()
        await sandbox.remove("agentlite-t-secrets-1", force=True)
    assert "ssh-private-key" not in out and "No such file" in out
    assert "cloud-credential" not in out and "AGENTLITE_TEST_SECRET" not in out
    env = dict(
        line.split("=", 1) for line in out.splitlines() if "=" in line and line.split("=", 1)[0].isupper()
    )
    proxy_vars = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"}  # egress, the default mode
    assert set(env) <= {"PATH", "HOME", "LANG", "PWD", "SHLVL", "_", *proxy_vars}, env
    assert "cannot access '/var'" in out and "cannot access '/mnt'" in out


async def test_volumes_read_only_and_writable(sandbox: SandboxRuntime, tmp_path: Path) -> None:
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "in.txt").write_text("data")
    spec = BoxSpec(volumes=[Volume.parse(f"{ro}:/workspace/ro:ro"), Volume(rw, "/workspace/rw")])
    await sandbox.create("agentlite-t-vol-1", spec)
    try:
        code, out, _ = await run(
            sandbox,
            "agentlite-t-vol-1",
            [
                "sh",
                "-c",
                "cat /workspace/ro/in.txt; echo x > /workspace/ro/no 2>&1 || echo refused; echo y > /workspace/rw/out.txt",
            ],
        )
    finally:
        await sandbox.remove("agentlite-t-vol-1", force=True)
    assert code == 0
    assert out.startswith("data") and "refused" in out
    assert (rw / "out.txt").read_text() == "y\n" and not (ro / "no").exists()


async def test_network_off_has_only_loopback(sandbox: SandboxRuntime) -> None:
    await sandbox.create("agentlite-t-net-1", BoxSpec(network=False))
    try:
        _, out, _ = await run(sandbox, "agentlite-t-net-1", ["cat", "/proc/net/dev"])
    finally:
        await sandbox.remove("agentlite-t-net-1", force=True)
    interfaces = {line.split(":")[0].strip() for line in out.splitlines()[2:]}
    assert interfaces == {"lo"}


async def test_commands_have_no_capabilities(sandbox: SandboxRuntime) -> None:
    await sandbox.create("agentlite-t-caps-1", BoxSpec())
    try:
        _, out, _ = await run(sandbox, "agentlite-t-caps-1", ["grep", "CapEff", "/proc/self/status"])
        code, _, err = await run(sandbox, "agentlite-t-caps-1", ["sh", "-c", "echo x > /usr/agentlite-test"])
    finally:
        await sandbox.remove("agentlite-t-caps-1", force=True)
    assert out.split() == ["CapEff:", "0000000000000000"]
    assert code != 0 and "Read-only" in err


async def test_box_outlives_the_host_that_made_it(home: Path, sandbox: SandboxRuntime) -> None:
    script = (
        "import asyncio, sys; from pathlib import Path;"
        "from agentlite.box.sandbox import SandboxRuntime; from agentlite.box.base import BoxSpec;"
        f"asyncio.run(SandboxRuntime(Path({str(home)!r})).create('agentlite-t-orphan-1', BoxSpec()))"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    box = await sandbox.get("agentlite-t-orphan-1")
    assert box is not None and box.running, "a box must survive the exit of the host that created it"
    await sandbox.remove("agentlite-t-orphan-1", force=True)


async def test_kill_stops_the_command_and_what_it_started(sandbox: SandboxRuntime, home: Path) -> None:
    await sandbox.create("agentlite-t-kill-1", BoxSpec())
    try:
        # Durations no other test uses: the command's sleeps can be told apart on the host.
        seconds = ("3007", "3011")
        command = f"sleep {seconds[0]} & echo started; sleep {seconds[1]}; echo never"
        proc = await sandbox.exec("agentlite-t-kill-1", ["sh", "-c", command])

        def command_sleeps() -> list[int]:
            found = []
            for p in psutil.process_iter(["cmdline"]):
                if (p.info["cmdline"] or [])[-1:] in ([seconds[0]], [seconds[1]]) and "sleep" in p.info[
                    "cmdline"
                ][0]:
                    found.append(p.pid)
            return found

        assert await anext(proc.stdout_lines()) == b"started\n"
        await until(lambda: len(command_sleeps()) == 2, "the command's two sleeps to start", 30)
        await proc.kill()
        assert await proc.wait() < 0
        await until(lambda: command_sleeps() == [], "the command's sleeps to go", 30)
        names = [psutil.Process(p).name() for p in box_pids(home, "agentlite-t-kill-1")]
        names = [n for n in names if n != "socat"]  # the init's network bridge stays, by design
        assert "sleep" in names  # the box's own init sleeps: it is not the command's
        assert len(names) == 2, names  # bwrap's pid 1 and the init
    finally:
        await sandbox.remove("agentlite-t-kill-1", force=True)


async def test_stop_keeps_the_box_listed_as_stopped(sandbox: SandboxRuntime) -> None:
    await sandbox.create("agentlite-t-stop-1", BoxSpec())
    await sandbox.stop("agentlite-t-stop-1")
    await sandbox.stop("agentlite-t-stop-1")  # idempotent
    assert (await sandbox.get("agentlite-t-stop-1")).state is BoxState.STOPPED  # type: ignore[union-attr]
    with pytest.raises(BoxExecFailed, match="it is stopped"):
        await sandbox.exec("agentlite-t-stop-1", ["true"])
    await sandbox.remove("agentlite-t-stop-1")
    assert await sandbox.list() == []


async def test_errors_name_the_problem(sandbox: SandboxRuntime) -> None:
    with pytest.raises(BoxNotFound, match="agentlite-t-none"):
        await sandbox.exec("agentlite-t-none", ["true"])
    with pytest.raises(BoxNotFound):
        await sandbox.remove("agentlite-t-none", force=True)
    with pytest.raises(ConfigError, match="does not exist"):
        await sandbox.create("agentlite-t-badvol", BoxSpec(volumes=[Volume(Path("/nonexistent-dir"), "/x")]))
    assert await sandbox.list() == []  # a failed create leaves nothing
    await sandbox.create("agentlite-t-dup-1", BoxSpec())
    try:
        with pytest.raises(BoxExists):
            await sandbox.create("agentlite-t-dup-1", BoxSpec())
        with pytest.raises(BoxRemoveFailed, match="running"):
            await sandbox.remove("agentlite-t-dup-1")
    finally:
        await sandbox.remove("agentlite-t-dup-1", force=True)


async def test_a_reused_init_pid_does_not_count_as_running(sandbox: SandboxRuntime, home: Path) -> None:
    await sandbox.create("agentlite-t-reuse-1", BoxSpec())
    state_file = home / "sandbox" / "agentlite-t-reuse-1" / "box.json"
    state = json.loads(state_file.read_text())
    real = dict(state)
    # Point the box at a live process of ours with a different start time: a reused pid.
    state["init_pid"], state["init_started"] = os.getpid(), state["init_started"] - 100
    state_file.write_text(json.dumps(state))
    try:
        assert (await sandbox.get("agentlite-t-reuse-1")).state is BoxState.STOPPED  # type: ignore[union-attr]
    finally:
        state_file.write_text(json.dumps(real))
        await sandbox.remove("agentlite-t-reuse-1", force=True)
    assert psutil.pid_exists(os.getpid())  # and removal never signalled the reused pid


def test_volume_parse_rejects_bad_specs() -> None:
    assert Volume.parse("/a:/b:ro") == Volume(Path("/a"), "/b", True)
    for bad in ("bad", "/a", "/a:/b:rx", "a:/b", "/a:b", ":/b"):
        with pytest.raises(ConfigError, match="volume"):
            Volume.parse(bad)


async def test_host_paths_under_the_host_tmp_stay_visible(home: Path, tmp_path: Path) -> None:
    """A checkout (and so the venv and agent CLIs) under /tmp must not be hidden by the box's private /tmp."""
    assert str(tmp_path).startswith("/tmp")
    tool = tmp_path / "prefix" / "bin"
    tool.mkdir(parents=True)
    (tool / "marker").write_text("visible")
    runtime = SandboxRuntime(home, extra_ro_paths=[tmp_path / "prefix"])
    await runtime.create("agentlite-t-tmp-1", BoxSpec())
    try:
        code, out, _ = await run(runtime, "agentlite-t-tmp-1", ["cat", str(tool / "marker")])
    finally:
        await runtime.remove("agentlite-t-tmp-1", force=True)
    assert (code, out) == (0, "visible")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root boxes run as another user and need access granted")
async def test_access_lost_between_grant_and_start_is_granted_again(
    sandbox: SandboxRuntime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = tmp_path / "private"
    (private / "data").mkdir(parents=True)
    (private / "data" / "in.txt").write_text("data")
    private.chmod(0o700)
    grant = SandboxRuntime._grant_access
    grants = 0

    def grant_then_lose_it(self: SandboxRuntime, spec: BoxSpec, box_dir: Path) -> None:
        nonlocal grants
        grants += 1
        grant(self, spec, box_dir)
        if grants == 1:
            private.chmod(0o700)  # resets the ACL mask: the box user loses its way in again

    monkeypatch.setattr(SandboxRuntime, "_grant_access", grant_then_lose_it)
    spec = BoxSpec(volumes=[Volume.parse(f"{private / 'data'}:/workspace/data:ro")])
    await sandbox.create("agentlite-t-regrant", spec)
    try:
        code, out, _ = await run(sandbox, "agentlite-t-regrant", ["cat", "/workspace/data/in.txt"])
    finally:
        await sandbox.remove("agentlite-t-regrant", force=True)
    assert grants == 2 and (code, out) == (0, "data")
