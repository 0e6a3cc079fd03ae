"""A sandbox box is a boundary, tried from inside as an attacker would: real boxes, real processes.

Host uid mapping, read-only kernel knobs, no nested user namespaces, the syscall filter, and the
cgroup limits (memory, cpus, pids), /tmp size and the init's output that never reaches the host.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from agentlite.box import cgroups, seccomp
from agentlite.box.base import BoxSpec, Volume
from agentlite.box.sandbox import SandboxRuntime


async def run(rt: SandboxRuntime, name: str, argv: list[str], timeout: float = 120) -> tuple[int, str, str]:
    proc = await rt.exec(name, argv)
    await proc.close_stdin()

    async def collect(lines) -> str:  # type: ignore[no-untyped-def]
        return b"".join([line async for line in lines]).decode(errors="replace")

    out, err = await asyncio.wait_for(
        asyncio.gather(collect(proc.stdout_lines()), collect(proc.stderr_lines())), timeout
    )
    return await proc.wait(), out, err


def state_of(home: Path, name: str) -> dict:  # type: ignore[type-arg]
    return json.loads((home / "sandbox" / name / "box.json").read_text())


def host_uids(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no Uid line for {pid}")


def needs_limit(limit: str) -> pytest.MarkDecorator:
    support = cgroups.probe()
    return pytest.mark.skipif(not support.holds(limit), reason=f"{limit}: {support.missing.get(limit)}")


async def test_kernel_settings_are_read_only_and_the_host_value_stays(sandbox: SandboxRuntime) -> None:
    knob = Path("/proc/sys/fs/lease-break-time")
    before = knob.read_text()
    new = str(int(before) + 1)
    await sandbox.create("agentlite-t-sysctl-1", BoxSpec())
    try:
        code, _, err = await run(
            sandbox,
            "agentlite-t-sysctl-1",
            [
                "sh",
                "-c",
                f"echo {new} > {knob}; echo x > /proc/sys/kernel/core_pattern; echo b > /proc/sysrq-trigger",
            ],
        )
    finally:
        await sandbox.remove("agentlite-t-sysctl-1", force=True)
    assert code != 0
    assert err.count("cannot create") == 3 or "Read-only" in err or "Permission denied" in err, err
    assert knob.read_text() == before


async def test_no_nested_user_namespace(sandbox: SandboxRuntime) -> None:
    program = (
        "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True)\n"
        f"r = libc.unshare({seccomp.CLONE_NEWUSER}); print(r, os.strerror(ctypes.get_errno()))\n"
    )
    await sandbox.create("agentlite-t-userns-1", BoxSpec())
    try:
        _, out, _ = await run(sandbox, "agentlite-t-userns-1", [sys.executable, "-c", program])
        code, _, err = await run(
            sandbox, "agentlite-t-userns-1", ["unshare", "--user", "--map-root-user", "true"]
        )
    finally:
        await sandbox.remove("agentlite-t-userns-1", force=True)
    assert out.strip() == "-1 Operation not permitted"
    assert code != 0 and "Operation not permitted" in err


# Every call of the policy tried from a box, with harmless arguments that would succeed (or fail
# differently) without the filter; each must fail with EPERM (clone3 with ENOSYS).
_TRY_ALL = r"""
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
results = {}
for name, nr, arg, value in json.loads(sys.argv[1]):
    args = [0] * 6
    if arg is not None:
        args[arg] = value
    ctypes.set_errno(0)
    if name in ("clone", "unshare") and arg is not None:
        r = libc.syscall(nr, *args)  # a namespace flag in arg 0 (clone: no stack, so a fork)
        if r == 0 and name == "clone":
            os._exit(0)
    else:
        r = libc.syscall(nr, *args)
    results[f"{name}:{value}"] = (r, ctypes.get_errno())
print(json.dumps(results))
"""


async def test_every_denied_syscall_fails_with_eperm(sandbox: SandboxRuntime) -> None:
    import pyseccomp

    calls = []
    for rule in seccomp.POLICY:
        try:
            nr = pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, rule.syscall)
        except (ValueError, RuntimeError, OSError):
            continue
        calls.append((rule.syscall, nr, rule.arg, rule.value if rule.arg is not None else None))
    await sandbox.create("agentlite-t-seccomp-1", BoxSpec())
    try:
        code, out, err = await run(
            sandbox, "agentlite-t-seccomp-1", [sys.executable, "-c", _TRY_ALL, json.dumps(calls)]
        )
        _, status, _ = await run(
            sandbox, "agentlite-t-seccomp-1", ["grep", "-E", "^(Seccomp|NoNewPrivs):", "/proc/self/status"]
        )
        _, init_status, _ = await run(
            sandbox, "agentlite-t-seccomp-1", ["grep", "^Seccomp:", "/proc/1/status"]
        )
    finally:
        await sandbox.remove("agentlite-t-seccomp-1", force=True)
    assert code == 0, err
    results = json.loads(out)
    assert len(results) >= 40
    for rule in seccomp.POLICY:
        key = f"{rule.syscall}:{rule.value if rule.arg is not None else None}"
        if key in results:
            assert results[key] == [-1, rule.errno], (key, results[key])
    assert status.split() == ["NoNewPrivs:", "1", "Seccomp:", "2"]
    assert init_status.split() == ["Seccomp:", "2"]


async def test_box_processes_have_an_unprivileged_host_uid(sandbox: SandboxRuntime, home: Path) -> None:
    await sandbox.create("agentlite-t-uid-1", BoxSpec())
    try:
        proc = await sandbox.exec("agentlite-t-uid-1", ["sleep", "30"])
        deadline = time.monotonic() + 30
        while not (
            sleepers := [c for c in psutil.Process(proc.pid).children(recursive=True) if c.name() == "sleep"]
        ):
            assert time.monotonic() < deadline, "the exec'd command never started"
            await asyncio.sleep(0.02)
        exec_uids = host_uids(sleepers[0].pid)
        state = state_of(home, "agentlite-t-uid-1")
        init_uids = host_uids(state["init_pid"])
        bwrap_uids = host_uids(state["bwrap_pid"])
        _, inside, _ = await run(sandbox, "agentlite-t-uid-1", ["id", "-u"])
        await proc.kill()
    finally:
        await sandbox.remove("agentlite-t-uid-1", force=True)
    expected = state["box_uid"]
    assert expected != 0
    assert init_uids == [expected] * 4 and exec_uids == [expected] * 4 and bwrap_uids == [expected] * 4
    assert inside.strip() == "0"  # root inside, as before; nobody on the host


async def test_a_volume_stays_writable_and_host_files_in_it_readable(
    sandbox: SandboxRuntime, tmp_path: Path
) -> None:
    # tmp_path sits under a 0700 folder of root: the box user still reaches and writes it.
    volume = tmp_path / "deep" / "rw"
    (volume / "sub").mkdir(parents=True)
    (volume / "sub" / "host.txt").write_text("from host")
    await sandbox.create("agentlite-t-rw-1", BoxSpec(volumes=[Volume(volume, "/workspace/rw")]))
    try:
        (volume / "later.txt").write_text("written after the box started")
        code, out, err = await run(
            sandbox,
            "agentlite-t-rw-1",
            [
                "sh",
                "-c",
                "cd /workspace/rw && cat sub/host.txt later.txt && echo box > sub/box.txt && mkdir d && echo y > d/f && rm later.txt",
            ],
        )
    finally:
        await sandbox.remove("agentlite-t-rw-1", force=True)
    assert code == 0, err
    assert out == "from hostwritten after the box started"
    assert (volume / "sub" / "box.txt").read_text() == "box\n" and (volume / "d" / "f").read_text() == "y\n"
    assert not (volume / "later.txt").exists()


async def test_a_box_cannot_write_into_the_host_init_log(sandbox: SandboxRuntime, home: Path) -> None:
    await sandbox.create("agentlite-t-log-1", BoxSpec())
    try:
        await run(
            sandbox,
            "agentlite-t-log-1",
            ["sh", "-c", "for f in /proc/1/fd/* /proc/2/fd/*; do yes flood | head -c 100000 > $f; done"],
        )
        size = (home / "sandbox" / "agentlite-t-log-1" / "init.log").stat().st_size
    finally:
        await sandbox.remove("agentlite-t-log-1", force=True)
    assert size == 0


async def test_tmp_has_a_size(sandbox: SandboxRuntime) -> None:
    await sandbox.create("agentlite-t-tmpsize-1", BoxSpec(tmp_mib=8))
    try:
        code, _, err = await run(
            sandbox, "agentlite-t-tmpsize-1", ["sh", "-c", "head -c 20000000 /dev/zero > /tmp/big"]
        )
    finally:
        await sandbox.remove("agentlite-t-tmpsize-1", force=True)
    assert code != 0 and "No space left" in err


@needs_limit("memory")
async def test_memory_limit_kills_the_allocation_and_the_host_goes_on(sandbox: SandboxRuntime) -> None:
    await sandbox.create("agentlite-t-oom-1", BoxSpec(memory_mib=256))
    try:
        code, _, _ = await run(
            sandbox,
            "agentlite-t-oom-1",
            [sys.executable, "-c", "b = bytearray(1 << 30); b[::4096] = b'x' * len(b[::4096])"],
        )
        assert sandbox.out_of_memory("agentlite-t-oom-1")
        after, out, _ = await run(sandbox, "agentlite-t-oom-1", ["echo", "alive"])
    finally:
        await sandbox.remove("agentlite-t-oom-1", force=True)
    assert code == -9 or code == 137
    assert (after, out) == (0, "alive\n")  # the box, and so the host, goes on
    assert sandbox.out_of_memory("agentlite-t-oom-1")  # still known after removal


@needs_limit("pids")
async def test_pids_limit_stops_a_fork_loop(sandbox: SandboxRuntime) -> None:
    program = (
        "import os, time\nn = 0\n"
        "try:\n    while n < 1000:\n        if os.fork() == 0:\n            time.sleep(30); os._exit(0)\n        n += 1\n"
        "except OSError as e:\n    print(n, e.strerror)\n"
    )
    await sandbox.create("agentlite-t-pids-1", BoxSpec(pids=64))
    try:
        _, out, _ = await run(sandbox, "agentlite-t-pids-1", [sys.executable, "-c", program])
    finally:
        await sandbox.remove("agentlite-t-pids-1", force=True)
    started, _, why = out.strip().partition(" ")
    assert int(started) < 64 and why == "Resource temporarily unavailable", out


@needs_limit("cpus")
async def test_one_cpu_box_uses_at_most_about_one_core(sandbox: SandboxRuntime, home: Path) -> None:
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs at least two cores to tell one core from more")
    await sandbox.create("agentlite-t-cpu-1", BoxSpec(cpus=1))
    try:
        group = cgroups.BoxCgroup.from_json(state_of(home, "agentlite-t-cpu-1")["cgroup"])
        assert group is not None
        spin = "import os, time\nfor _ in range(3):\n    if os.fork() == 0:\n        t = time.time()\n        while time.time() - t < 3: pass\n        os._exit(0)\nfor _ in range(3): os.wait()\n"
        before, started = group.cpu_seconds(), time.monotonic()
        code, _, err = await run(sandbox, "agentlite-t-cpu-1", [sys.executable, "-c", spin])
        used, wall = (group.cpu_seconds() or 0) - (before or 0), time.monotonic() - started
    finally:
        await sandbox.remove("agentlite-t-cpu-1", force=True)
    assert code == 0, err
    assert used > 0.5, "the busy loop was not accounted to the box's cgroup"
    assert used / wall < 1.3, f"{used:.2f} s of CPU in {wall:.2f} s: more than one core"


async def test_cgroup_is_removed_with_the_box(sandbox: SandboxRuntime, home: Path) -> None:
    await sandbox.create("agentlite-t-cgrm-1", BoxSpec())
    group = cgroups.BoxCgroup.from_json(state_of(home, "agentlite-t-cgrm-1")["cgroup"])
    await sandbox.remove("agentlite-t-cgrm-1", force=True)
    if group is None:
        assert cgroups.probe().version is None, "cgroups are available here but the box got none"
        pytest.skip("no cgroups here")
    assert not any(p.exists() for p in group.paths.values())


@needs_limit("memory")
async def test_a_run_out_of_memory_ends_in_one_clear_error(
    sandbox: SandboxRuntime, home: Path, tmp_path: Path
) -> None:
    """The real codex runs a command that allocates 1 GiB in a 256 MiB box: one error event, and
    the outcome names the limit instead of a bare exit code."""
    from agentlite.core.agent_clis import agent_clis_bin
    from agentlite.run.box_run import run_agent
    from agentlite.run.protocol import BackendConfig, ErrorEvent, Event, RunnerInput
    from agentlite.testing import ModelServer

    bin_dir = agent_clis_bin()
    if bin_dir is None or not (bin_dir / "codex").exists():
        pytest.skip("agent CLI codex not installed in agent-clis/")
    events: list[Event] = []
    async with ModelServer(scenario="shell") as server:
        server.command = "python3 -c 'b = bytearray(1 << 30)'"
        config = BackendConfig(
            type="codex", base_url=server.openai_base_url, model="fake-model", max_retries=0
        )
        run_input = RunnerInput(prompt="go", group_folder="main", chat_id="c1", is_main=True, backend=config)
        outcome = await run_agent(sandbox, home, run_input, workspace=tmp_path / "ws", on_event=events.append,
                                  single_turn=True, timeout=120, idle_timeout=5, spec=BoxSpec(memory_mib=256))  # fmt: skip
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert (outcome.status, outcome.error) == ("error", "box ran out of memory (256 MiB)")
    assert len(errors) == 1
    assert await sandbox.list() == []
