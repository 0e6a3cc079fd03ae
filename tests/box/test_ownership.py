"""Ownership records: their format, atomic publication, and the verdict on an owner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from agentlite.box.ownership import HostOwnership, RecordStore, Verdict, machine_boot_id, ownership_for


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_record(store: RecordStore, name: str, **fields: object) -> None:
    now = datetime.now(UTC)
    me = psutil.Process()
    record = {
        "name": name,
        "pid": me.pid,
        "boot_id": f"{me.pid}:{int(me.create_time() * 1000)}",
        "machine_boot_id": machine_boot_id(),
        "started_at": iso(now),
        "updated_at": iso(now),
    }
    record.update(fields)
    store.dir.mkdir(parents=True, exist_ok=True)
    store.path(name).write_text(json.dumps({k: v for k, v in record.items() if v is not None}))


def test_published_record_has_the_documented_fields(home: Path) -> None:
    owner = HostOwnership(home)
    owner.register("agentlite-a-g-1")
    try:
        record = json.loads(owner.store.path("agentlite-a-g-1").read_text())
        assert set(record) == {
            "name",
            "pid",
            "boot_id",
            "machine_boot_id",
            "lease",
            "started_at",
            "updated_at",
        }
        assert record["pid"] == os.getpid()
        assert record["boot_id"] == f"{os.getpid()}:{int(psutil.Process().create_time() * 1000)}"
        assert record["machine_boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        assert (
            owner.store.path("agentlite-a-g-1").read_text().startswith('{\n  "name"')
        )  # 2-space pretty JSON
        judgement = owner.store.judge("agentlite-a-g-1")
        assert judgement.verdict is Verdict.LIVE
        assert judgement.reason.startswith(f"owner pid {os.getpid()} alive, heartbeat 0 s old")
        with pytest.raises(FileExistsError):
            HostOwnership(home).register("agentlite-a-g-1")  # another host cannot take the name
    finally:
        owner.unregister("agentlite-a-g-1")
    assert not owner.store.path("agentlite-a-g-1").exists()
    owner.unregister("agentlite-never-registered")  # tolerated


def test_refresh_moves_updated_at_and_keeps_started_at(home: Path) -> None:
    owner = HostOwnership(home)
    owner.register("agentlite-a-g-2")
    before = json.loads(owner.store.path("agentlite-a-g-2").read_text())
    time.sleep(0.01)
    owner.refresh()
    after = json.loads(owner.store.path("agentlite-a-g-2").read_text())
    owner.unregister("agentlite-a-g-2")
    assert after["updated_at"] > before["updated_at"]
    assert after["started_at"] == before["started_at"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "no record"),
        (b'{"name": "agentlite-x-g-1", "pid": 12', "unusable record"),  # truncated
        (b"\x00garbage", "unusable record"),
        (b"", "unusable record"),
        (
            b'{"name": "agentlite-x-g-1", "boot_id": "1:1", "updated_at": "2026-01-01T00:00:00Z"}',
            "`pid`: Field required",
        ),
        (b'{"name": "agentlite-x-g-1", "pid": "12", "boot_id": "1:1", "updated_at": "x"}', "pid"),
        (
            b'{"name": "agentlite-other", "pid": 1, "boot_id": "1:1", "updated_at": "2026-01-01T00:00:00Z"}',
            "another box",
        ),
        (b"[1, 2]", "unusable record"),
    ],
)
def test_unusable_records_mean_no_owner(home: Path, content: bytes | None, reason: str) -> None:
    store = RecordStore(home)
    if content is not None:
        store.dir.mkdir(parents=True)
        store.path("agentlite-x-g-1").write_bytes(content)
    judgement = store.judge("agentlite-x-g-1")
    assert judgement.verdict is Verdict.NONE
    assert reason in judgement.reason


def test_record_from_an_earlier_machine_boot_is_dead(home: Path) -> None:
    store = RecordStore(home)
    write_record(store, "agentlite-x-g-1", machine_boot_id="00000000-0000-0000-0000-000000000000")
    judgement = store.judge("agentlite-x-g-1")
    assert (judgement.verdict, judgement.reason) == (Verdict.DEAD, "record is from an earlier machine boot")


def test_lease_released_means_dead_whatever_pid_and_heartbeat_say(home: Path) -> None:
    store = RecordStore(home)
    store.lease_dir.mkdir(parents=True)
    lease = store.lease_dir / "4242-1.lease"
    lease.touch()  # exists, but nobody holds its lock
    write_record(store, "agentlite-x-g-1", lease=str(lease))  # our own live pid and a fresh heartbeat
    assert store.judge("agentlite-x-g-1").verdict is Verdict.DEAD
    write_record(store, "agentlite-x-g-1", lease="/etc/passwd")
    assert store.judge("agentlite-x-g-1").verdict is Verdict.NONE


def test_missing_lease_file_is_unknown_and_the_pid_rules_decide(home: Path) -> None:
    """A tmp cleaner may delete a live owner's lease file: that alone never means "dead"."""
    store = RecordStore(home)
    missing = str(store.lease_dir / "missing.lease")
    write_record(store, "agentlite-x-g-1", lease=missing)  # our own live pid and a fresh heartbeat
    judgement = store.judge("agentlite-x-g-1")
    assert judgement.verdict is Verdict.LIVE
    assert judgement.reason.startswith("lease file missing; owner pid")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_record(store, "agentlite-x-g-1", lease=missing, pid=gone.pid, boot_id=f"{gone.pid}:1")
    assert store.judge("agentlite-x-g-1").verdict is Verdict.DEAD
    old = iso(datetime.now(UTC) - timedelta(seconds=45))
    write_record(store, "agentlite-x-g-1", lease=missing, updated_at=old)
    assert store.judge("agentlite-x-g-1").verdict is Verdict.DEAD


def test_held_lease_with_old_heartbeat_is_stale_and_kept(home: Path) -> None:
    owner = ownership_for(home)
    store = RecordStore(home)
    old = datetime.now(UTC) - timedelta(seconds=45)
    write_record(store, "agentlite-x-g-1", lease=str(owner.lease_path), updated_at=iso(old))
    judgement = store.judge("agentlite-x-g-1")
    assert judgement.verdict is Verdict.STALE and judgement.verdict.keeps_box
    assert "alive (lease held), heartbeat 45 s old" in judgement.reason


def test_lease_held_by_another_process_counts_as_live(home: Path) -> None:
    store = RecordStore(home)
    store.lease_dir.mkdir(parents=True)
    lease = store.lease_dir / "other.lease"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import fcntl, os, sys, time; fd = os.open({str(lease)!r}, os.O_RDWR | os.O_CREAT);"
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        write_record(store, "agentlite-x-g-1", pid=holder.pid, boot_id=f"{holder.pid}:1", lease=str(lease))
        assert store.judge("agentlite-x-g-1").verdict is Verdict.LIVE
        assert store.sweep_leases(older_than=0) == 0 and lease.exists()  # a held lease is never swept
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()  # type: ignore[union-attr]
    judgement = store.judge("agentlite-x-g-1")
    assert judgement.verdict is Verdict.DEAD and "lease released" in judgement.reason
    assert store.sweep_leases() == 0 and lease.exists()  # too young to sweep
    assert store.sweep_leases(older_than=0) == 1 and not lease.exists()


class TestWithoutLease:
    """Records with no lease fall back to the reference rules: fresh, pid alive, same start time."""

    def test_fresh_record_of_a_live_pid_with_matching_start_is_live(self, home: Path) -> None:
        store = RecordStore(home)
        write_record(store, "agentlite-x-g-1")
        assert store.judge("agentlite-x-g-1").verdict is Verdict.LIVE

    def test_reused_pid_is_dead(self, home: Path) -> None:
        store = RecordStore(home)
        started = int(psutil.Process().create_time() * 1000)
        write_record(store, "agentlite-x-g-1", boot_id=f"{os.getpid()}:{started - 9000}")
        judgement = store.judge("agentlite-x-g-1")
        assert (judgement.verdict, judgement.reason) == (
            Verdict.DEAD,
            f"pid {os.getpid()} reused (start time differs by 9 s)",
        )
        write_record(store, "agentlite-x-g-1", boot_id=f"{os.getpid()}:1")  # the reference's own case
        assert store.judge("agentlite-x-g-1").verdict is Verdict.DEAD

    def test_start_within_two_seconds_matches(self, home: Path) -> None:
        store = RecordStore(home)
        started = int(psutil.Process().create_time() * 1000)
        write_record(store, "agentlite-x-g-1", boot_id=f"{os.getpid()}:{started + 1500}")
        assert store.judge("agentlite-x-g-1").verdict is Verdict.LIVE

    def test_stale_heartbeat_is_dead(self, home: Path) -> None:
        store = RecordStore(home)
        write_record(store, "agentlite-x-g-1", updated_at=iso(datetime.now(UTC) - timedelta(seconds=31)))
        assert store.judge("agentlite-x-g-1").verdict is Verdict.DEAD

    def test_dead_pid_and_mismatched_boot_id_are_dead(self, home: Path) -> None:
        store = RecordStore(home)
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        write_record(store, "agentlite-x-g-1", pid=gone.pid, boot_id=f"{gone.pid}:1")
        assert store.judge("agentlite-x-g-1").reason == f"owner pid {gone.pid} gone"
        write_record(store, "agentlite-x-g-1", boot_id="1:1")  # boot id names another pid
        assert store.judge("agentlite-x-g-1").verdict is Verdict.DEAD
        write_record(store, "agentlite-x-g-1", boot_id="nonsense")
        assert store.judge("agentlite-x-g-1").verdict is Verdict.DEAD


def test_a_reader_never_sees_a_partial_record(home: Path) -> None:
    """Atomic records: a tight-loop reader against a writer rewriting the record in another process."""
    owner = HostOwnership(home)
    owner.register("agentlite-a-g-atomic")
    path = owner.store.path("agentlite-a-g-atomic")
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from agentlite.box.ownership import HostOwnership\n"
            f"o = HostOwnership(Path({str(home)!r})); o.register('agentlite-b-g-atomic')\n"
            "import json; p = o.store.path('agentlite-b-g-atomic')\n"
            "print('go', flush=True)\n"
            "for _ in range(3000): o.refresh()\n"
            "o.unregister('agentlite-b-g-atomic')",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdout.readline() == "go\n"
    other = home / "agentlite-active-boxes" / "agentlite-b-g-atomic.json"
    reads = partial = 0
    while writer.poll() is None:
        owner.refresh()  # this process rewrites its own record too
        for target in (path, other):
            try:
                data = target.read_bytes()
            except FileNotFoundError:
                continue
            reads += 1
            try:
                json.loads(data)
            except ValueError:
                partial += 1
    writer.stdout.close()
    owner.unregister("agentlite-a-g-atomic")
    assert writer.returncode == 0
    assert reads > 100 and partial == 0
    assert not list(owner.store.dir.glob(".*.tmp")), "temp files left behind"
