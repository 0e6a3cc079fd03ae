"""Lifecycle faults with real host processes on one home: each test names the failure it reproduces."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
from tests.conftest import HostProcess, until

from agentlite.box.base import BoxSpec
from agentlite.box.lifecycle import cleanup_orphans
from agentlite.box.ownership import OwnerRecord, RecordStore, Verdict, machine_boot_id
from agentlite.box.sandbox import SandboxRuntime


def box_processes(home: Path, box: str) -> list[int]:
    state = json.loads((home / "sandbox" / box / "box.json").read_text())
    init = psutil.Process(state["init_pid"])
    return [init.pid, *(c.pid for c in init.children(recursive=True))]


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def start_host(hosts: list[HostProcess], home: Path, agent: str, **kwargs: object) -> HostProcess:
    host = HostProcess(home, agent, **kwargs)  # type: ignore[arg-type]
    hosts.append(host)
    return host


async def test_two_hosts_at_once_b_keeps_a_live_box(sandbox: SandboxRuntime, home: Path, hosts) -> None:  # type: ignore[no-untyped-def]
    """Host B starting up while host A runs: B's startup cleanup keeps A's box; A finishes normally."""
    a = start_host(hosts, home, "shared", group="a", hold=4)
    a.wait_for("during_exec")
    b = start_host(hosts, home, "shared", group="b", hold=0.5)
    cleanup = b.wait_for("cleanup")
    assert [(d["name"], d["action"]) for d in cleanup["decisions"]] == [(a.box, "keep")]
    assert cleanup["decisions"][0]["reason"].startswith(f"kept: owner pid {a.proc.pid} alive")
    assert b.finish()["exit_code"] == 0
    done = a.finish()
    assert (done["exit_code"], done["output"]) == (0, ["started", "finished"])
    assert await sandbox.list() == []
    assert RecordStore(home).record_names() == []


@pytest.mark.parametrize(
    "phase", ["before_create", "before_exec", "during_exec", "before_remove", "after_remove"]
)
async def test_kill_9_of_a_host_leaves_an_orphan_that_cleanup_reaps(
    sandbox: SandboxRuntime,
    home: Path,
    hosts,
    phase: str,  # type: ignore[no-untyped-def]
) -> None:
    """kill -9 of the owner at any point: the next cleanup removes its box, every process of it, and its record."""
    hold = 0.2 if phase.endswith("remove") else 60
    host = start_host(hosts, home, "victim", hold=hold, pause_at=phase, cleanup_first=False)
    host.wait_for(phase)
    box = host.box
    assert box is not None
    pids = box_processes(home, box) if (await sandbox.get(box)) is not None else []
    host.kill9()
    decisions = await cleanup_orphans(sandbox, home, "victim")
    assert all(d.action == "remove" for d in decisions) and decisions
    assert "lease released" in decisions[0].reason or phase == "after_remove"
    assert await sandbox.list() == []
    assert alive(pids) == []
    assert RecordStore(home).record_names() == []


async def test_reused_pid_and_earlier_boot_records_are_removed(sandbox: SandboxRuntime, home: Path) -> None:
    """A fresh record naming a live process with another start time (pid reuse), and one from another boot."""
    store = RecordStore(home)
    store.dir.mkdir(parents=True)
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    live_other = psutil.Process(os.getppid())  # alive, but not the process that started the box
    started_ms = int(live_other.create_time() * 1000)
    await sandbox.create("agentlite-r-reused-1", BoxSpec())
    store.path("agentlite-r-reused-1").write_text(
        json.dumps(
            {
                "name": "agentlite-r-reused-1",
                "pid": live_other.pid,
                "boot_id": f"{live_other.pid}:{started_ms - 9000}",
                "updated_at": now,
                "started_at": now,
                "machine_boot_id": machine_boot_id(),
            }
        )
    )
    await sandbox.create("agentlite-r-reboot-1", BoxSpec())
    me = psutil.Process()
    store.path("agentlite-r-reboot-1").write_text(
        json.dumps(
            {
                "name": "agentlite-r-reboot-1",
                "pid": me.pid,
                "boot_id": f"{me.pid}:{int(me.create_time() * 1000)}",
                "updated_at": now,
                "started_at": now,
                "machine_boot_id": "another-boot",
            }
        )
    )
    decisions = {d.name: d.reason for d in await cleanup_orphans(sandbox, home, "r")}
    assert decisions == {
        "agentlite-r-reused-1": f"removed: pid {live_other.pid} reused (start time differs by 9 s)",
        "agentlite-r-reboot-1": "removed: record is from an earlier machine boot",
    }
    assert await sandbox.list() == []
    assert store.record_names() == []


@pytest.mark.parametrize(
    "damage",
    ["truncated", "corrupt", "wrong_name", "missing_field", "missing"],
)
async def test_damaged_or_missing_records_mean_the_box_is_removed(
    sandbox: SandboxRuntime,
    home: Path,
    hosts,
    damage: str,  # type: ignore[no-untyped-def]
) -> None:
    """A host killed after its record was damaged: the box has no usable owner and is removed."""
    host = start_host(hosts, home, "dmg", hold=60, pause_at="during_exec", cleanup_first=False)
    host.wait_for("during_exec")
    box = host.box
    assert box is not None
    store = RecordStore(home)
    path = store.path(box)
    record = json.loads(path.read_text())
    host.signal(signal.SIGSTOP)  # no heartbeat may repair the damage while we look
    if damage == "truncated":
        path.write_text(path.read_text()[:40])
    elif damage == "corrupt":
        path.write_bytes(b"\x00\xff{{")
    elif damage == "wrong_name":
        path.write_text(json.dumps({**record, "name": "agentlite-dmg-other-1"}))
    elif damage == "missing_field":
        path.write_text(json.dumps({k: v for k, v in record.items() if k != "pid"}))
    else:
        path.unlink()
    decisions = await cleanup_orphans(sandbox, home, "dmg")
    assert [(d.name, d.action, d.removed) for d in decisions] == [(box, "remove", True)]
    assert await sandbox.list() == []
    assert store.record_names() == []


async def test_stopped_owner_keeps_its_box_until_it_really_dies(
    sandbox: SandboxRuntime, home: Path, hosts
) -> None:  # type: ignore[no-untyped-def]
    """kill -STOP of the owner for longer than the staleness: kept (lease held); after kill -9: removed.

    The staleness is shortened (2 s instead of 30 s) rather than waited for: the same rule, judged
    on a heartbeat that really stopped."""
    stale_after = 2.0
    host = start_host(hosts, home, "sleepy", hold=120, cleanup_first=False)
    host.wait_for("during_exec")
    box = host.box
    assert box is not None
    host.signal(signal.SIGSTOP)
    store = RecordStore(home)

    def heartbeat_age() -> float:
        raw = store.read_raw(box)
        age = OwnerRecord.model_validate_json(raw).heartbeat_age(time.time()) if raw else None
        return age or 0.0

    await until(lambda: heartbeat_age() > stale_after + 1, "the stopped owner's heartbeat to grow old", 60)
    decisions = await cleanup_orphans(sandbox, home, "sleepy", stale_after=stale_after)
    assert [(d.name, d.action, d.verdict) for d in decisions] == [(box, "keep", Verdict.STALE)]
    assert "alive (lease held), heartbeat" in decisions[0].reason
    age = int(decisions[0].reason.split("heartbeat ")[1].split(" s")[0])
    assert age >= stale_after
    host.kill9()
    decisions = await cleanup_orphans(sandbox, home, "sleepy")  # at once: no waiting for staleness
    assert [(d.name, d.action, d.removed) for d in decisions] == [(box, "remove", True)]
    assert await sandbox.list() == []


async def test_race_hosts_creating_while_others_clean_up(sandbox: SandboxRuntime, home: Path, hosts) -> None:  # type: ignore[no-untyped-def]
    """Several hosts create boxes while cleaners sweep in a tight loop: no live box is ever removed."""
    cleaner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import asyncio, sys, time; from pathlib import Path\n"
            "from agentlite.box.lifecycle import cleanup_orphans; from agentlite.box.sandbox import SandboxRuntime\n"
            f"home = Path({str(home)!r}); rt = SandboxRuntime(home); end = time.time() + 12; n = 0\n"
            "while time.time() < end:\n"
            "    asyncio.run(cleanup_orphans(rt, home, 'race')); n += 1\n"
            "print(n)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for wave in range(3):
            wave_hosts = [start_host(hosts, home, "race", group=f"w{wave}h{i}", hold=1.0) for i in range(3)]
            for host in wave_hosts:
                done = host.finish()
                assert (done["exit_code"], done["output"]) == (0, ["started", "finished"]), done
    finally:
        sweeps, _ = cleaner.communicate(timeout=60)
    assert int(sweeps) > 5
    assert await sandbox.list() == []
    assert RecordStore(home).record_names() == []


async def test_heartbeats_stay_fresh_under_cpu_load(sandbox: SandboxRuntime, home: Path, hosts) -> None:  # type: ignore[no-untyped-def]
    """5 boxes on this 2-core machine with CPU hogs running: no record is ever older than 10 s."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(4)]
    try:
        owners = [
            start_host(hosts, home, "load", group=f"g{i}", hold=40, cleanup_first=False) for i in range(5)
        ]
        for host in owners:
            host.wait_for("during_exec")
        store = RecordStore(home)
        worst = 0.0
        end = time.monotonic() + 16  # three heartbeat periods
        while time.monotonic() < end:
            for name in store.record_names():
                judgement = store.judge(name)
                assert judgement.heartbeat_age is not None, judgement.reason
                worst = max(worst, judgement.heartbeat_age)
            await asyncio.sleep(0.25)
        assert len(store.record_names()) == 5
        assert worst <= 10, f"a record reached {worst:.1f} s"
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    for host in hosts:
        host.kill9()
    await cleanup_orphans(sandbox, home, "load")
