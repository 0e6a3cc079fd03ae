"""No box escapes tracking: many lifecycles at once, boxes whose state was deleted, and ownership
records that survive tmp cleaners deleting them under a live owner (a real second process)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import HostProcess

from agentlite.box.base import BoxSpec
from agentlite.box.lifecycle import cleanup_orphans, run_in_box
from agentlite.box.ownership import HEARTBEAT_ENV, RecordStore, Verdict, ownership_for
from agentlite.box.procs import BOX_MARKER_ENV, one_scan_per_pass, processes_marked
from agentlite.box.sandbox import SandboxRuntime
from conftest import until_sync

AGENTLITE = [sys.executable, "-m", "agentlite"]


def box_processes(home: Path) -> dict[int, str]:
    """Every box process under ``home``, tracked or not, found by the marker only our boxes carry."""
    return processes_marked(BOX_MARKER_ENV, str(home.resolve() / "sandbox") + os.sep)


def state_folders(home: Path) -> list[str]:
    root = home / "sandbox"
    caches = (".etc-", ".seccomp-")  # shared by every box, kept
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(caches)) if root.is_dir() else []


@pytest.fixture
def cpu_hogs() -> Iterator[None]:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


# -- many lifecycles in one host process ------------------------------------------------------------


async def _lifecycles(
    runtime: SandboxRuntime, home: Path, total: int, parallel: int, spec: BoxSpec
) -> list[object]:
    gate = asyncio.Semaphore(parallel)

    async def one(i: int) -> object:
        async with gate:
            lines: list[bytes] = []
            result = await run_in_box(
                runtime,
                home,
                ["sh", "-c", f"echo box {i}"],
                agent_id="load",
                group=f"g{i % 10}",
                spec=spec,
                on_stdout=lines.append,
            )
            return (result.exit_code, lines)

    return await asyncio.gather(*(one(i) for i in range(total)), return_exceptions=True)


async def _assert_lifecycles_leave_nothing(home: Path, total: int, parallel: int, spec: BoxSpec) -> None:
    runtime = SandboxRuntime(home)
    outcomes = await _lifecycles(runtime, home, total, parallel, spec)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert errors == [], f"{len(errors)} of {total} lifecycles failed, first: {errors[:1]!r}"
    assert outcomes == [(0, [f"box {i}\n".encode()]) for i in range(total)]
    assert await runtime.list() == []
    assert box_processes(home) == {}, "box processes left running (tracked or not)"
    assert state_folders(home) == []
    assert RecordStore(home).record_names() == []


# About 10 s here without a network, about 35 s with the default one (a host-side helper per box):
# the egress case runs smaller by default, in full with ``-m slow``.
@pytest.mark.parametrize(
    ("network", "total", "parallel"),
    [("none", 200, 20), ("egress", 40, 10), pytest.param("egress", 200, 20, marks=pytest.mark.slow)],
)
async def test_many_lifecycles_at_a_time_under_cpu_load_leave_nothing(
    sandbox: SandboxRuntime, home: Path, cpu_hogs: None, network: str, total: int, parallel: int
) -> None:
    await _assert_lifecycles_leave_nothing(home, total, parallel, BoxSpec(network_mode=network))


# -- untracked boxes ------------------------------------------------------------------------------


async def test_a_box_whose_state_was_deleted_is_found_and_reaped_as_untracked(
    sandbox: SandboxRuntime, home: Path
) -> None:
    RecordStore(home).dir.mkdir(parents=True)
    name = "agentlite-u-lost-1"
    await sandbox.create(name, BoxSpec())  # the default network: a host-side helper as well
    state = json.loads((home / "sandbox" / name / "box.json").read_text())
    shutil.rmtree(home / "sandbox" / name)  # a tmp cleaner, or a crash between steps
    assert await sandbox.list() == []
    assert await sandbox.untracked() == [name]
    assert {state["bwrap_pid"], state["egress_pid"]} <= set(box_processes(home)), "the box still runs"

    listed = subprocess.run(
        [*AGENTLITE, "boxes", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "AGENTLITE_HOME": str(home)},
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert [(r["name"], r["state"]) for r in json.loads(listed.stdout)] == [(name, "untracked")]

    dry = await cleanup_orphans(sandbox, home, "u", dry_run=True)
    assert [(d.name, d.action, d.reason) for d in dry] == [
        (name, "remove", "would remove: untracked (box processes without state), no record")
    ]
    assert box_processes(home), "a dry run changes nothing"
    decisions = await cleanup_orphans(sandbox, home, "u")
    assert [(d.name, d.action, d.removed) for d in decisions] == [(name, "remove", True)]
    assert "untracked" in decisions[0].reason
    assert box_processes(home) == {}
    assert await sandbox.untracked() == []


def _marked_sleeper(marker: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], env={**os.environ, BOX_MARKER_ENV: marker})


async def test_a_cleanup_pass_scans_for_marked_processes_once_and_only_for_itself(tmp_path: Path) -> None:
    prefix = f"{tmp_path}{os.sep}"
    first, later = _marked_sleeper(f"{prefix}a"), None
    try:
        with one_scan_per_pass():
            assert set(processes_marked(BOX_MARKER_ENV, prefix, reuse=True)) == {first.pid}
            later = _marked_sleeper(f"{prefix}b")
            # The pass answers from its scan (the threads it hands work to as well) ...
            reused = await asyncio.to_thread(processes_marked, BOX_MARKER_ENV, prefix, reuse=True)
            assert set(reused) == {first.pid}
            # ... a caller that needs what runs now still scans, and so does another task's call.
            assert set(processes_marked(BOX_MARKER_ENV, prefix)) == {first.pid, later.pid}

            async def elsewhere() -> set[int]:
                with one_scan_per_pass():
                    return set(processes_marked(BOX_MARKER_ENV, prefix, reuse=True))

            assert await asyncio.create_task(elsewhere()) == {first.pid, later.pid}
            gate = asyncio.Event()

            async def outliving() -> set[int]:  # started in the pass, asking after it ended
                await gate.wait()
                return set(processes_marked(BOX_MARKER_ENV, prefix, reuse=True))

            outlived = asyncio.create_task(outliving())
            first.kill()
            first.wait()
            assert processes_marked(BOX_MARKER_ENV, prefix, reuse=True) == {}, "an ended process is dropped"
        assert set(processes_marked(BOX_MARKER_ENV, prefix, reuse=True)) == {later.pid}, "no pass: a scan"
        gate.set()
        assert await outlived == {later.pid}
    finally:
        for proc in (first, later):
            if proc is not None:
                proc.kill()
                proc.wait()


async def test_one_cleanup_pass_reaps_several_untracked_boxes(sandbox: SandboxRuntime, home: Path) -> None:
    RecordStore(home).dir.mkdir(parents=True)
    names = [f"agentlite-u-lost-{i}" for i in range(3)]
    for name in names:
        await sandbox.create(name, BoxSpec())
        shutil.rmtree(home / "sandbox" / name)
    assert await sandbox.untracked() == names
    decisions = await cleanup_orphans(sandbox, home, "u")
    assert sorted((d.name, d.action, d.removed) for d in decisions) == [(n, "remove", True) for n in names]
    assert box_processes(home) == {}


async def test_an_untracked_box_of_a_live_owner_is_kept(sandbox: SandboxRuntime, home: Path) -> None:
    name = "agentlite-u-owned-1"
    owner = ownership_for(home)
    owner.register(name)
    try:
        await sandbox.create(name, BoxSpec(network=False))
        shutil.rmtree(home / "sandbox" / name)
        decisions = await cleanup_orphans(sandbox, home, "u")
        assert [(d.name, d.action) for d in decisions] == [(name, "keep")]
        assert decisions[0].reason.startswith("kept: untracked, owner pid")
        # Its owner's own teardown still reaches it.
        await sandbox.remove(name, force=True)
        assert box_processes(home) == {}
    finally:
        owner.unregister(name)


# -- tmp cleaners under a live owner ----------------------------------------------------------------


@pytest.fixture
def fast_heartbeat(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setenv(HEARTBEAT_ENV, "0.5")
    return 0.5


def _live_owner(hosts: list[HostProcess], home: Path, agent: str) -> tuple[HostProcess, str, Path]:
    host = HostProcess(home, agent, hold=120, cleanup_first=False)
    hosts.append(host)
    host.wait_for("during_exec")
    assert host.box is not None
    record = json.loads(RecordStore(home).path(host.box).read_text())
    return host, host.box, Path(record["lease"])


def _lease_back(store: RecordStore, lease: Path) -> bool:
    return store._lease_held(str(lease)) is True


async def _owner_dies_and_box_goes(
    sandbox: SandboxRuntime, home: Path, host: HostProcess, box: str, agent: str
) -> None:
    host.kill9()
    decisions = await cleanup_orphans(sandbox, home, agent)
    assert [(d.name, d.action, d.removed) for d in decisions] == [(box, "remove", True)]
    assert box_processes(home) == {}


async def test_deleted_lease_file_keeps_the_box_and_comes_back_within_a_heartbeat(
    sandbox: SandboxRuntime, home: Path, hosts: list[HostProcess], fast_heartbeat: float
) -> None:
    host, box, lease = _live_owner(hosts, home, "tmpl")
    store = RecordStore(home)
    host.signal(signal.SIGSTOP)  # no heartbeat repairs anything while we look
    lease.unlink()
    decisions = await cleanup_orphans(sandbox, home, "tmpl")
    assert [(d.name, d.action) for d in decisions] == [(box, "keep")]
    assert "lease file missing" in decisions[0].reason
    host.signal(signal.SIGCONT)
    # One heartbeat, with a wide margin for a loaded machine.
    until_sync(
        lambda: _lease_back(store, lease), "the lease is re-created and locked", 10 * fast_heartbeat + 10
    )
    judgement = store.judge(box)
    assert judgement.verdict is Verdict.LIVE and "missing" not in judgement.reason
    await _owner_dies_and_box_goes(sandbox, home, host, box, "tmpl")


async def test_deleted_records_folder_keeps_the_box_and_comes_back_within_a_heartbeat(
    sandbox: SandboxRuntime, home: Path, hosts: list[HostProcess], fast_heartbeat: float
) -> None:
    host, box, lease = _live_owner(hosts, home, "tmpr")
    store = RecordStore(home)
    host.signal(signal.SIGSTOP)  # no heartbeat repairs anything while we look
    shutil.rmtree(store.dir)
    decisions = await cleanup_orphans(sandbox, home, "tmpr")
    assert [(d.name, d.action) for d in decisions] == [(box, "keep")]
    assert "records folder is missing" in decisions[0].reason
    # Another host makes the folder anew first (its first box): the live owner's box is older than
    # the folder, so its missing record is not taken for a dead owner either.
    newcomer = ownership_for(home)
    newcomer.register("agentlite-other-g-1")
    try:
        decisions = await cleanup_orphans(sandbox, home, "tmpr")
    finally:
        newcomer.unregister("agentlite-other-g-1")
    assert [(d.name, d.action) for d in decisions] == [(box, "keep")]
    assert "newer than the box" in decisions[0].reason
    host.signal(signal.SIGCONT)
    until_sync(
        lambda: store.read_raw(box) is not None and _lease_back(store, lease),
        "the record and the lease are re-created",
        10 * fast_heartbeat + 10,
    )
    decisions = await cleanup_orphans(sandbox, home, "tmpr")
    assert [(d.name, d.action) for d in decisions] == [(box, "keep")]
    assert decisions[0].reason.startswith(f"kept: owner pid {host.proc.pid} alive")
    await _owner_dies_and_box_goes(sandbox, home, host, box, "tmpr")


def test_a_bad_heartbeat_interval_is_refused(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    from agentlite.box.ownership import HostOwnership
    from agentlite.core.errors import ConfigError

    monkeypatch.setenv(HEARTBEAT_ENV, "soon")
    with pytest.raises(ConfigError, match="AGENTLITE_HEARTBEAT_INTERVAL='soon'"):
        HostOwnership(home)


async def test_removing_a_box_with_damaged_state_still_kills_its_processes(
    sandbox: SandboxRuntime, home: Path
) -> None:
    name = "agentlite-u-damaged-1"
    await sandbox.create(name, BoxSpec())
    (home / "sandbox" / name / "box.json").write_text("{truncated")
    assert box_processes(home)
    await sandbox.remove(name, force=True)
    assert box_processes(home) == {}, "the box's processes outlived its state"
    assert state_folders(home) == []
