"""Who owns a box: heartbeat records, the host's kernel lease, and the verdict on an owner.

A host that runs a box publishes ``<home>/agentlite-active-boxes/<box name>.json``::

    {"name", "pid", "boot_id", "machine_boot_id", "lease", "started_at", "updated_at"}

plus ``"box_home"`` for a BoxLite box: the BoxLite home of its host, where the box lives.

before it creates the box, refreshes it every 5 s while the box lives, and deletes it on every
teardown path. ``boot_id`` is ``"<pid>:<process start ms>"`` (a reused pid has another start time);
``machine_boot_id`` is the kernel's boot id, so a record from before a reboot is never live.

Records are not fsynced: they only mean something within one machine boot (a record from an earlier
boot is dead by its ``machine_boot_id``), and the page cache survives any process crash; the rename
alone keeps readers from ever seeing a partial file.

Each host process also holds an exclusive ``flock`` on its own lease file for its whole life. The
kernel drops the lock however the process dies, so "is the lease still locked?" answers "is the
owner alive?" without clocks or pid arithmetic. Records without a lease fall back to the original
rules: updated within 30 s, pid alive with a start time within 2 s.

Tmp cleaners delete old files and folders. Each heartbeat therefore re-creates what is missing: the
records folder, the owner's own records, and its lease file when the path no longer names the inode
it has locked. Until then a reader treats a missing lease file as unknown (the pid and start-time
rules decide, not "dead"), and a missing records folder as no evidence about any owner. The folder
always appears with a mark of when it was made (:meth:`RecordStore.may_have_lost_record`): a box
older than the folder had its record in a deleted one, so for a few heartbeats after the folder was
made, such a box without a record is not taken for an orphan.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import functools
import json
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from agentlite.box.procs import start_time
from agentlite.core.atomic import create_atomic, write_atomic
from agentlite.core.clock import now_iso
from agentlite.core.errors import ConfigError, describe_validation_error

log = logging.getLogger("agentlite.ownership")

RECORDS_DIR = "agentlite-active-boxes"
HEARTBEAT_INTERVAL = 5.0
#: Overrides the heartbeat interval (seconds) of host processes, for tests and slow machines.
HEARTBEAT_ENV = "AGENTLITE_HEARTBEAT_INTERVAL"
STALE_AFTER = 30.0
START_TIME_TOLERANCE = 2.0
#: The file in a records folder whose mtime says when the folder was made.
CREATED_MARK = ".created"
#: How long after the records folder was made a box older than it, without a record, may still
#: have a live owner whose heartbeat has not yet put its record back.
RECREATED_GRACE = 3 * HEARTBEAT_INTERVAL


def heartbeat_interval() -> float:
    raw = os.environ.get(HEARTBEAT_ENV)
    if raw is None:
        return HEARTBEAT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value <= STALE_AFTER / 3:
        raise ConfigError(f"{HEARTBEAT_ENV}={raw!r}: must be a number of seconds above 0 and at most 10")
    return value


@functools.cache
def machine_boot_id() -> str:
    """The kernel's id of the current boot (changes at every reboot)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def process_boot_id(pid: int) -> str | None:
    """``"<pid>:<start ms>"`` for a live process, else ``None``."""
    started = start_time(pid)
    return None if started is None else f"{pid}:{int(started * 1000)}"


def safe_record_name(box_name: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in box_name)


class OwnerRecord(BaseModel):
    """The content of one ownership record file."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    name: str
    pid: int
    boot_id: str
    updated_at: str
    machine_boot_id: str | None = None
    lease: str | None = None
    started_at: str | None = None
    #: The BoxLite home the box lives in (each host has its own); None for other runtimes.
    box_home: str | None = None

    def heartbeat_age(self, now: float) -> float | None:
        try:
            updated = datetime.fromisoformat(self.updated_at.replace("Z", "+00:00"))
        except ValueError:
            return None
        return now - updated.timestamp()


class Verdict(enum.StrEnum):
    """What a reader concludes about a box's owner."""

    # The owner's lease is locked (or, without a lease, pid, start time and heartbeat all check out).
    LIVE = "live"
    # The owner's lease is locked but its heartbeat is older than 30 s: a stalled or suspended host.
    STALE = "stale"
    # The record names an owner that is gone: lease released, pid gone or reused, older boot.
    DEAD = "dead"
    # No usable record: missing, truncated, corrupt, wrong name or missing fields.
    NONE = "none"

    @property
    def keeps_box(self) -> bool:
        return self in (Verdict.LIVE, Verdict.STALE)


@dataclass(frozen=True)
class Judgement:
    """A verdict on one box's owner, with the record it was read from and a reason for people."""

    verdict: Verdict
    reason: str
    record: OwnerRecord | None = None
    heartbeat_age: float | None = None


LeaseState = bool | Literal["missing"] | None


class RecordStore:
    """The ownership records and leases under one home folder."""

    def __init__(self, home: Path, *, stale_after: float = STALE_AFTER) -> None:
        self.dir = Path(home).resolve() / RECORDS_DIR
        self.lease_dir = self.dir / "leases"
        #: Seconds after which a heartbeat is old: a live lease holder's box is then ``stale``
        #: (kept), a record without a lease ``dead`` (tests shorten it instead of waiting 30 s).
        self.stale_after = stale_after

    def path(self, box_name: str) -> Path:
        return self.dir / f"{safe_record_name(box_name)}.json"

    def read_raw(self, box_name: str) -> bytes | None:
        try:
            return self.path(box_name).read_bytes()
        except FileNotFoundError:
            return None

    def ensure_dir(self) -> bool:
        """Make the records folder if it is missing; True when this call made it. It appears at once
        with its creation mark, so no reader sees it unmarked."""
        if self.dir.is_dir():
            return False
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        staging = self.dir.with_name(f".{RECORDS_DIR}-{os.getpid()}-{secrets.token_hex(4)}")
        staging.mkdir()
        (staging / CREATED_MARK).write_text(now_iso())
        try:
            staging.rename(self.dir)
            return True
        except OSError:  # another process made it first
            shutil.rmtree(staging, ignore_errors=True)
            return False

    def may_have_lost_record(self, box_created_at: float | None, now: float | None = None) -> bool:
        """Whether a box without a record may still have a live owner whose record a tmp cleaner
        deleted: the records folder is missing, or it was made less than :data:`RECREATED_GRACE`
        seconds ago and the box is older than it (or of unknown age)."""
        now = time.time() if now is None else now
        try:
            folder_made = (self.dir / CREATED_MARK).stat().st_mtime
        except FileNotFoundError:
            return not self.dir.is_dir()
        if now - folder_made >= RECREATED_GRACE:
            return False
        return box_created_at is None or box_created_at < folder_made

    def record_names(self) -> list[str]:
        """Box names of every record file (from the file name; the content may be unusable)."""
        if not self.dir.is_dir():
            return []
        return sorted(p.name[: -len(".json")] for p in self.dir.glob("*.json") if not p.name.startswith("."))

    def delete(self, box_name: str) -> bool:
        try:
            self.path(box_name).unlink()
            return True
        except FileNotFoundError:
            return False

    def judge(
        self, box_name: str, now: float | None = None, lease_cache: dict[str, LeaseState] | None = None
    ) -> Judgement:
        """Decide whether the owner of ``box_name`` is alive. Reads only; changes nothing.

        ``lease_cache`` lets one sweep check each lease once (a host's boxes share its lease).
        """
        now = time.time() if now is None else now
        raw = self.read_raw(box_name)
        if raw is None:
            return Judgement(Verdict.NONE, "no record")
        try:
            record = OwnerRecord.model_validate_json(raw)
        except ValidationError as exc:
            return Judgement(
                Verdict.NONE, f"unusable record ({describe_validation_error(exc, 'record', first_only=True)})"
            )
        if record.name != box_name:
            return Judgement(Verdict.NONE, f"record names another box ({record.name!r})", record)
        age = record.heartbeat_age(now)
        if age is None:
            return Judgement(Verdict.NONE, f"record has a bad updated_at ({record.updated_at!r})", record)
        ago = f"heartbeat {age:.0f} s old"
        if record.machine_boot_id is not None and record.machine_boot_id != machine_boot_id():
            return Judgement(Verdict.DEAD, "record is from an earlier machine boot", record, age)
        if record.lease is not None:
            if lease_cache is None:
                held = self._lease_held(record.lease)
            elif record.lease in lease_cache:
                held = lease_cache[record.lease]
            else:
                held = lease_cache[record.lease] = self._lease_held(record.lease)
            if held is None:
                return Judgement(Verdict.NONE, "record names a lease outside this home", record, age)
            if held == "missing":
                # A tmp cleaner may have deleted it under a live owner (which re-creates it at its
                # next heartbeat): the pid and start-time rules decide, not "dead".
                fallback = self._judge_without_lease(record, age)
                return Judgement(fallback.verdict, f"lease file missing; {fallback.reason}", record, age)
            if not held:
                return Judgement(Verdict.DEAD, f"owner pid {record.pid} gone (lease released)", record, age)
            if age > self.stale_after:
                return Judgement(
                    Verdict.STALE, f"owner pid {record.pid} alive (lease held), {ago}", record, age
                )
            return Judgement(Verdict.LIVE, f"owner pid {record.pid} alive, {ago}", record, age)
        return self._judge_without_lease(record, age)

    def _judge_without_lease(self, record: OwnerRecord, age: float) -> Judgement:
        if age > self.stale_after:
            return Judgement(Verdict.DEAD, f"heartbeat {age:.0f} s old (no lease)", record, age)
        pid_text, _, start_text = record.boot_id.partition(":")
        if (
            not (pid_text.isdigit() and start_text.isdigit())
            or int(pid_text) != record.pid
            or record.pid <= 0
        ):
            return Judgement(
                Verdict.DEAD, f"boot id {record.boot_id!r} does not match pid {record.pid}", record, age
            )
        actual = start_time(record.pid)
        if actual is None:
            return Judgement(Verdict.DEAD, f"owner pid {record.pid} gone", record, age)
        drift = abs(actual * 1000 - int(start_text)) / 1000
        if drift > START_TIME_TOLERANCE:
            return Judgement(
                Verdict.DEAD, f"pid {record.pid} reused (start time differs by {drift:.0f} s)", record, age
            )
        return Judgement(
            Verdict.LIVE, f"owner pid {record.pid} alive, heartbeat {age:.0f} s old", record, age
        )

    def _lease_held(self, lease: str) -> LeaseState:
        """True when some process holds the lease's lock, False when nobody does, ``"missing"`` when
        the file is gone, None when the path is not one of ours."""
        path = Path(lease)
        if path.parent != self.lease_dir or not path.name.endswith(".lease"):
            return None
        try:
            return flock_held(path)
        except FileNotFoundError:
            return "missing"

    def sweep_leases(self, older_than: float = 10.0) -> int:
        """Delete lease files nobody holds (their hosts are gone). Returns how many.

        Young files are skipped: a host creates its lease file an instant before it locks it.
        """
        removed = 0
        if not self.lease_dir.is_dir():
            return 0
        cutoff = time.time() - older_than
        for path in self.lease_dir.glob("*.lease"):
            try:
                if path.stat().st_mtime > cutoff:
                    continue
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            # Unlinked while we hold the lock, so no owner can be holding this inode.
            path.unlink(missing_ok=True)
            os.close(fd)
            removed += 1
        return removed

    def sweep_temp_files(self, older_than: float = 60.0) -> None:
        """Delete temp files left by writers that died mid-write."""
        if not self.dir.is_dir():
            return
        cutoff = time.time() - older_than
        for path in self.dir.glob(".*.tmp"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                pass


class HostOwnership:
    """This process's ownership of boxes under one home: its lease, its records, its heartbeat.

    One per (process, home); get it with :func:`ownership_for`. The heartbeat runs in a daemon
    thread, so a busy or blocked event loop cannot let records go stale while the host lives.
    """

    def __init__(self, home: Path) -> None:
        self.store = RecordStore(home)
        self.pid = os.getpid()
        self.boot_id = process_boot_id(self.pid) or f"{self.pid}:0"
        self.machine_boot_id = machine_boot_id()
        self.heartbeat_interval = heartbeat_interval()
        # Guards the records (the heartbeat thread rewrites them while the loop registers).
        self._lock = threading.Lock()
        self._records: dict[str, OwnerRecord] = {}
        # Guards the lease descriptor and path, and starting the heartbeat thread.
        self._lease_lock = threading.RLock()
        self._lease_fd: int | None = None
        self._lease_path: Path | None = None
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def lease_path(self) -> Path:
        self._ensure_lease()
        assert self._lease_path is not None
        return self._lease_path

    def _ensure_lease(self) -> None:
        with self._lease_lock:
            if self._lease_fd is not None:
                return
            self.store.ensure_dir()
            self.store.lease_dir.mkdir(parents=True, exist_ok=True)
            # Unique per instance, so the only other locker is a cleanup checking it for microseconds.
            while True:
                name = f"{self.boot_id.replace(':', '-')}-{secrets.token_hex(4)}.lease"
                fd = _lock_new_lease(self.store.lease_dir / name)
                if fd is not None:
                    break
            self._lease_fd, self._lease_path = fd, self.store.lease_dir / name

    def _repair_lease(self) -> None:
        """Re-create and re-lock the lease file when its path no longer names our locked inode (a
        tmp cleaner unlinked it); records keep naming the same path."""
        with self._lease_lock:
            if self._lease_fd is None or self._lease_path is None:
                return
            try:
                if os.stat(self._lease_path).st_ino == os.fstat(self._lease_fd).st_ino:
                    return
            except FileNotFoundError:
                pass
            self.store.ensure_dir()
            self.store.lease_dir.mkdir(parents=True, exist_ok=True)
            fd = None
            for _attempt in range(100):  # a sweep unlinks only old files: this settles at once
                fd = _lock_new_lease(self._lease_path)
                if fd is not None:
                    break
            if fd is None:
                log.warning("could not re-create lease %s", self._lease_path)
                return
            old, self._lease_fd = self._lease_fd, fd
            os.close(old)
            log.warning("lease file %s was missing; re-created and locked it", self._lease_path)

    def owns(self, box_name: str) -> bool:
        with self._lock:
            return box_name in self._records

    def register(self, box_name: str, *, box_home: Path | None = None) -> None:
        """Publish this process's record for ``box_name`` (before the box exists) and keep it fresh.

        Raises FileExistsError when a record for that name already exists.
        """
        self._ensure_lease()
        if self.store.ensure_dir():
            self._repair_lease()  # the folder was deleted, and our lease with it
        now = now_iso()
        record = OwnerRecord(
            name=box_name,
            pid=self.pid,
            boot_id=self.boot_id,
            machine_boot_id=self.machine_boot_id,
            lease=str(self._lease_path),
            started_at=now,
            updated_at=now,
            box_home=None if box_home is None else str(box_home),
        )
        with self._lock:
            if box_name in self._records:
                return
            create_atomic(self.store.path(box_name), _dump(record), fsync=False)
            self._records[box_name] = record
        self._start_heartbeat()

    def adopt(self, box_name: str, *, box_home: Path | None = None) -> None:
        """Take over the record of a live box whose owner is gone: this process becomes its owner
        (new pid, new lease), in one rename over the old record, and keeps it fresh."""
        self._ensure_lease()
        if self.store.ensure_dir():
            self._repair_lease()
        now = now_iso()
        record = OwnerRecord(name=box_name, pid=self.pid, boot_id=self.boot_id, machine_boot_id=self.machine_boot_id,
                             lease=str(self._lease_path), started_at=now, updated_at=now,
                             box_home=None if box_home is None else str(box_home))  # fmt: skip
        with self._lock:
            write_atomic(self.store.path(box_name), _dump(record), fsync=False)
            self._records[box_name] = record
        self._start_heartbeat()

    def unregister(self, box_name: str) -> None:
        """Stop refreshing and delete the record. Safe for names this process never registered."""
        with self._lock:
            self._records.pop(box_name, None)
            self.store.delete(box_name)

    def refresh(self) -> None:
        """Rewrite every record this process owns with a new ``updated_at``, first re-creating the
        records folder and the lease file if something deleted them."""
        with self._lock:
            names = list(self._records)
        if not names:
            return
        try:
            if self.store.ensure_dir():
                log.warning("records folder %s was missing; re-created it", self.store.dir)
            self._repair_lease()
        except OSError as exc:
            log.warning("heartbeat could not repair the records folder %s: %s", self.store.dir, exc)
        for name in names:
            # One record at a time under the lock: unregister never waits for a whole round, and a
            # record is never rewritten after it was unregistered.
            with self._lock:
                record = self._records.get(name)
                if record is None:
                    continue
                fresh = record.model_copy(update={"updated_at": now_iso()})
                try:
                    try:
                        write_atomic(self.store.path(name), _dump(fresh), fsync=False)
                    except FileNotFoundError:  # the folder went during this round
                        self.store.ensure_dir()
                        write_atomic(self.store.path(name), _dump(fresh), fsync=False)
                    self._records[name] = fresh
                except OSError as exc:
                    log.warning("heartbeat write failed box=%s error=%s", name, exc)

    def stop_heartbeat(self) -> None:
        """Stop refreshing records (they go stale; the lease still says this process is alive)."""
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _start_heartbeat(self) -> None:
        with self._lease_lock:
            if self._wake.is_set() or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._beat, name="agentlite-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._wake.wait(self.heartbeat_interval):
            if os.getpid() != self.pid:  # a forked child must not refresh its parent's records
                return
            try:
                self.refresh()
            except Exception:
                # One bad round must not end the heartbeat: the records would go stale for good.
                log.exception("heartbeat round failed; trying again in %.1f s", self.heartbeat_interval)


def flock_held(path: Path) -> bool:
    """Whether some process holds an flock on the existing file ``path``, probed without blocking
    (FileNotFoundError when it is gone)."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)  # also drops the lock if we just took it
    return False


def _lock_new_lease(path: Path) -> int | None:
    """Open (creating) and lock ``path``; None when a sweep unlinked it between open and lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(0.001)  # a cleanup holds it for microseconds while it checks
    try:
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            return fd
    except FileNotFoundError:
        pass
    os.close(fd)
    return None


def _dump(record: OwnerRecord) -> bytes:
    # ``box_home`` only where the runtime gives each host its own home (BoxLite).
    fields = record.model_dump(exclude={"box_home"} if record.box_home is None else None)
    return json.dumps(fields, indent=2).encode()


_by_home: dict[Path, HostOwnership] = {}
_by_home_lock = threading.Lock()


def ownership_for(home: Path) -> HostOwnership:
    """This process's :class:`HostOwnership` for ``home`` (one lease per process and home)."""
    key = Path(home).resolve()
    with _by_home_lock:
        owner = _by_home.get(key)
        if owner is None or owner.pid != os.getpid():
            owner = _by_home[key] = HostOwnership(key)
        return owner
