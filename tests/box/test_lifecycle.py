"""One command's box lifecycle: the record is published before create and cleared on every path."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from agentlite.box.base import BoxInfo, BoxProcess, BoxRuntime, BoxSpec
from agentlite.box.lifecycle import CleanupDecision, Deadline, box_name, cleanup_orphans, run_in_box
from agentlite.box.ownership import RecordStore, Verdict, ownership_for
from agentlite.box.sandbox import SandboxRuntime
from agentlite.core.errors import BoxExecFailed, BoxRemoveFailed, BoxStartFailed


class Faulty(BoxRuntime):
    """The real sandbox runtime with one injected fault, recording what it saw."""

    def __init__(self, inner: SandboxRuntime, home: Path, fault: str | None = None) -> None:
        self.inner, self.home, self.fault, self.name = inner, home, fault, inner.name
        self.record_at_create: dict | None = None
        self.record_during_exec: dict | None = None
        self.removed: list[str] = []

    def _record(self, name: str) -> dict | None:
        path = RecordStore(self.home).path(name)
        return json.loads(path.read_text()) if path.exists() else None

    async def create(self, name: str, spec: BoxSpec) -> BoxInfo:
        self.record_at_create = self._record(name)
        if self.fault == "create":
            raise RuntimeError("no room for a box")
        return await self.inner.create(name, spec)

    async def get(self, name: str) -> BoxInfo | None:
        return await self.inner.get(name)

    async def list(self) -> list[BoxInfo]:
        if self.fault == "list":
            raise OSError("box state folder unreadable")
        return await self.inner.list()

    async def untracked(self) -> list[str]:
        return await self.inner.untracked()

    async def exec(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None
    ) -> BoxProcess:
        self.record_during_exec = self._record(name)
        if self.fault == "exec":
            raise OSError("nsenter: cannot open namespace")
        proc = await self.inner.exec(name, argv, env=env, cwd=cwd)
        if self.fault == "stdin":

            async def broken(data: bytes) -> None:
                raise BrokenPipeError("stdin closed by the box")

            proc.write_stdin = broken  # type: ignore[method-assign]
        return proc

    async def stop(self, name: str) -> None:
        await self.inner.stop(name)

    async def remove(self, name: str, *, force: bool = False) -> None:
        self.removed.append(name)
        if self.fault == "remove":
            raise BoxRemoveFailed(name, "injected removal failure")
        await self.inner.remove(name, force=force)


def assert_clean(home: Path) -> None:
    store = RecordStore(home)
    assert store.record_names() == [], "a record was left behind"
    assert not list(store.dir.glob(".*.tmp"))


async def test_normal_exit_publishes_before_create_and_clears_after(
    sandbox: SandboxRuntime, home: Path
) -> None:
    rt = Faulty(sandbox, home)
    lines: list[bytes] = []
    result = await run_in_box(rt, home, ["sh", "-c", "cat; echo done"], stdin=b"in\n", on_stdout=lines.append)
    assert (result.exit_code, result.timed_out, lines) == (0, False, [b"in\n", b"done\n"])
    assert rt.record_at_create is not None and rt.record_at_create["name"] == result.box
    assert rt.record_during_exec is not None
    assert result.box.startswith("agentlite-cli-main-")
    assert await sandbox.list() == []
    assert_clean(home)


async def test_creation_failure_removes_the_record(sandbox: SandboxRuntime, home: Path) -> None:
    rt = Faulty(sandbox, home, "create")
    with pytest.raises(BoxStartFailed, match="Box creation failed: no room for a box"):
        await run_in_box(rt, home, ["true"])
    assert rt.record_at_create is not None
    assert_clean(home)


@pytest.mark.parametrize(
    ("fault", "message"), [("exec", "Failed to start command"), ("stdin", "Failed to write stdin")]
)
async def test_exec_and_stdin_failures_tear_down(
    sandbox: SandboxRuntime, home: Path, fault: str, message: str
) -> None:
    rt = Faulty(sandbox, home, fault)
    with pytest.raises(BoxExecFailed, match=message):
        await run_in_box(rt, home, ["sleep", "30"], stdin=b"x")
    assert len(rt.removed) == 1
    assert await sandbox.list() == []
    assert_clean(home)


async def test_hard_timeout_kills_then_removes(sandbox: SandboxRuntime, home: Path) -> None:
    result = await run_in_box(sandbox, home, ["sleep", "60"], deadline=Deadline(0.5))
    assert result.timed_out and result.exit_code < 0
    assert result.duration < 30
    assert await sandbox.list() == []
    assert_clean(home)


async def test_rearmed_deadline_lets_a_chatty_command_finish(sandbox: SandboxRuntime, home: Path) -> None:
    deadline = Deadline(1.0)
    result = await run_in_box(
        sandbox,
        home,
        ["sh", "-c", "for i in 1 2 3 4; do echo $i; sleep 0.5; done"],
        on_stdout=lambda _line: deadline.rearm(),
        deadline=deadline,
    )
    assert (result.exit_code, result.timed_out) == (0, False)


async def test_output_handler_exception_is_reraised_after_cleanup(
    sandbox: SandboxRuntime, home: Path
) -> None:
    seen: list[bytes] = []

    async def handler(line: bytes) -> None:
        seen.append(line)
        raise ConnectionError("send failed")

    with pytest.raises(ConnectionError, match="send failed"):
        await run_in_box(sandbox, home, ["sh", "-c", "echo one; echo two; sleep 30"], on_stdout=handler)
    assert seen == [b"one\n"]  # later lines are not handed to a failed handler
    assert await sandbox.list() == []
    assert_clean(home)


async def test_handlers_run_one_at_a_time_in_order(sandbox: SandboxRuntime, home: Path) -> None:
    seen: list[str] = []
    busy = False

    async def handler(line: bytes) -> None:
        nonlocal busy
        assert not busy
        busy = True
        await asyncio.sleep(0.001)
        seen.append(line.decode().strip())
        busy = False

    await run_in_box(sandbox, home, ["seq", "1", "200"], on_stdout=handler)
    assert seen == [str(i) for i in range(1, 201)]


async def test_cancellation_tears_down_and_propagates(sandbox: SandboxRuntime, home: Path) -> None:
    started = asyncio.Event()
    task = asyncio.create_task(
        run_in_box(sandbox, home, ["sh", "-c", "echo up; sleep 60"], on_stdout=lambda _l: started.set())
    )
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await sandbox.list() == []
    assert_clean(home)


async def test_failed_teardown_removal_still_clears_the_record_and_cleanup_reaps(
    sandbox: SandboxRuntime, home: Path
) -> None:
    rt = Faulty(sandbox, home, "remove")
    result = await run_in_box(rt, home, ["true"])
    assert_clean(home)
    assert [b.name for b in await sandbox.list()] == [result.box]  # left running, now unowned
    decisions = await cleanup_orphans(sandbox, home, "cli")
    assert [(d.name, d.action, d.reason, d.removed) for d in decisions] == [
        (result.box, "remove", "removed: no record", True)
    ]
    assert await sandbox.list() == []


async def test_cleanup_counts_what_it_could_not_remove_with_the_reason(
    sandbox: SandboxRuntime, home: Path
) -> None:
    result = await run_in_box(Faulty(sandbox, home, "remove"), home, ["true"])  # left running, unowned
    report = await cleanup_orphans(Faulty(sandbox, home, "remove"), home, "cli")
    assert report.counts() == {"removed": 0, "kept": 0, "failed": 1}
    assert report.failures() == [f"{result.box}: BoxRemoveFailed: injected removal failure"]
    broken = await cleanup_orphans(Faulty(sandbox, home, "list"), home, "cli")  # the sweep itself fails
    assert (list(broken), broken.error, broken.failed) == ([], "OSError: box state folder unreadable", 1)
    assert broken.failures() == ["the sweep itself: OSError: box state folder unreadable"]
    report = await cleanup_orphans(sandbox, home, "cli")
    assert report.counts() == {"removed": 1, "kept": 0, "failed": 0}
    assert await sandbox.list() == []


class OtherHomes(Faulty):
    """A runtime that keeps boxes in other hosts' homes too, answering their sweep from a list."""

    def __init__(self, inner: SandboxRuntime, home: Path, elsewhere: list[str]) -> None:
        super().__init__(inner, home)
        self.elsewhere = elsewhere
        self.sweeps: list[tuple[str, bool]] = []

    async def sweep_other_homes(
        self, prefix: str, *, include_live: bool = False, dry_run: bool = False
    ) -> list[CleanupDecision]:
        self.sweeps.append((prefix, dry_run))
        verb = "would remove" if dry_run else "removed"
        return [
            CleanupDecision(n, "remove", f"{verb}: elsewhere") for n in self.elsewhere if n.startswith(prefix)
        ]


async def test_cleanup_visits_the_other_homes_a_runtime_has(sandbox: SandboxRuntime, home: Path) -> None:
    assert await sandbox.sweep_other_homes("agentlite-cli-") == []  # one home for all hosts: nothing
    runtime = OtherHomes(sandbox, home, ["agentlite-cli-x-1", "agentlite-cli-x-10", "agentlite-other-1"])
    report = await cleanup_orphans(runtime, home, "cli")
    assert sorted(d.name for d in report) == ["agentlite-cli-x-1", "agentlite-cli-x-10"]
    # One name: planned first, and left alone while another box's name starts with it.
    runtime.sweeps.clear()
    (only,) = await cleanup_orphans(runtime, home, "cli", only="agentlite-cli-x-1")
    assert (only.name, only.action, runtime.sweeps) == (
        "agentlite-cli-x-1",
        "keep",
        [("agentlite-cli-x-1", True)],
    )


def test_box_names_follow_the_reference() -> None:
    assert box_name("main", "team chat/1", 1700000000000) == "agentlite-main-team-chat-1-1700000000000"
    assert box_name(None, "g", 5) == "agentlite-g-5"


async def test_names_never_collide_between_hosts(home: Path, sandbox: SandboxRuntime) -> None:
    names = await asyncio.gather(*(run_in_box(sandbox, home, ["true"], group="same") for _ in range(6)))
    assert len({r.box for r in names}) == 6


class TestCleanup:
    async def test_keeps_live_removes_orphans_and_stays_in_its_agent(
        self, sandbox: SandboxRuntime, home: Path
    ) -> None:
        owner = ownership_for(home)
        owner.register("agentlite-a-live-1")
        for name in ("agentlite-a-live-1", "agentlite-a-orphan-1", "agentlite-b-orphan-1"):
            await sandbox.create(name, BoxSpec())
        decisions = {d.name: d for d in await cleanup_orphans(sandbox, home, "a")}
        assert set(decisions) == {"agentlite-a-live-1", "agentlite-a-orphan-1"}
        assert decisions["agentlite-a-live-1"].action == "keep"
        assert decisions["agentlite-a-live-1"].reason.startswith("kept: owner pid")
        assert decisions["agentlite-a-orphan-1"].action == "remove"
        assert {b.name for b in await sandbox.list()} == {"agentlite-a-live-1", "agentlite-b-orphan-1"}
        # Agent deletion removes live boxes too, and clears our own record.
        decisions = {d.name: d for d in await cleanup_orphans(sandbox, home, "a", include_live=True)}
        assert decisions["agentlite-a-live-1"].removed
        assert not owner.owns("agentlite-a-live-1")
        assert RecordStore(home).record_names() == []
        await sandbox.remove("agentlite-b-orphan-1", force=True)

    async def test_dry_run_changes_nothing(self, sandbox: SandboxRuntime, home: Path) -> None:
        RecordStore(home).dir.mkdir(parents=True)  # a home hosts have used (see the tmp-cleaner tests)
        await sandbox.create("agentlite-a-orphan-1", BoxSpec())
        decisions = await cleanup_orphans(sandbox, home, "a", dry_run=True)
        assert [(d.action, d.reason, d.removed) for d in decisions] == [
            ("remove", "would remove: no record", False)
        ]
        assert [b.name for b in await sandbox.list()] == ["agentlite-a-orphan-1"]
        await sandbox.remove("agentlite-a-orphan-1", force=True)

    async def test_a_removal_that_raises_clears_the_record_and_goes_on(
        self, sandbox: SandboxRuntime, home: Path
    ) -> None:
        store = RecordStore(home)
        for name in ("agentlite-a-x-1", "agentlite-a-x-2"):
            await sandbox.create(name, BoxSpec())
            store.dir.mkdir(parents=True, exist_ok=True)
            store.path(name).write_text("{truncated")
        rt = Faulty(sandbox, home, "remove")
        decisions = await cleanup_orphans(rt, home, "a")
        assert rt.removed == ["agentlite-a-x-1", "agentlite-a-x-2"]
        assert all(
            d.action == "remove" and not d.removed and "injected" in (d.error or "") for d in decisions
        )
        assert store.record_names() == []
        await cleanup_orphans(sandbox, home, "a")
        assert await sandbox.list() == []

    async def test_never_raises(self, home: Path) -> None:
        class Broken(SandboxRuntime):
            async def list(self) -> list[BoxInfo]:
                raise OSError("runtime down")

        assert await cleanup_orphans(Broken(home), home, "a") == []

    async def test_dead_records_without_a_box_are_cleared_live_ones_kept(
        self, sandbox: SandboxRuntime, home: Path
    ) -> None:
        store = RecordStore(home)
        ownership_for(home).register("agentlite-a-pending-1")  # published, box not created yet
        store.path("agentlite-a-gone-1").write_text("{}")
        decisions = await cleanup_orphans(sandbox, home, "a")
        assert [(d.name, d.action) for d in decisions] == [("agentlite-a-gone-1", "remove")]
        assert store.judge("agentlite-a-pending-1").verdict is Verdict.LIVE
        ownership_for(home).unregister("agentlite-a-pending-1")
