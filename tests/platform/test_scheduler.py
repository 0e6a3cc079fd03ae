"""Scheduler: next-run rules (reference 4.4/5.9), task runs and their events, the task API.

The store is a small in-memory fake with the spec's method names (the SQLite store has its own
tests); the queue is the real GroupQueue; the clock is moved by hand, so nothing sleeps for long.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agentlite.core.errors import ConfigError
from agentlite.platform.queue import GroupQueue
from agentlite.platform.scheduler import Scheduler, compute_next_run, iso_utc, validate_schedule
from agentlite.platform.store import RegisteredGroup, Task, TaskRun
from conftest import until

TZ = "America/New_York"
T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)  # 07:00 in New York (EST, UTC-5)


class FakeStore:
    """Just the AgentStore methods the scheduler uses, kept in dicts (copies in and out, like a DB)."""

    def __init__(self) -> None:
        self.groups: dict[str, RegisteredGroup] = {}
        self.tasks: dict[str, Task] = {}
        self.runs: list[TaskRun] = []

    def add_group(self, jid: str, folder: str) -> RegisteredGroup:
        group = RegisteredGroup(jid=jid, name=folder, folder=folder, trigger="@Andy", added_at=iso_utc(T0))
        self.groups[jid] = group
        return group

    def get_registered_groups(self) -> dict[str, RegisteredGroup]:
        return dict(self.groups)

    def create_task(self, t: Task) -> None:
        self.tasks[t.id] = t.model_copy()

    def get_task(self, task_id: str) -> Task | None:
        task = self.tasks.get(task_id)
        return None if task is None else task.model_copy()

    def list_tasks(self, group_folder: str | None = None) -> list[Task]:
        return [t.model_copy() for t in self.tasks.values() if group_folder in (None, t.group_folder)]

    def update_task(self, task_id: str, **fields: Any) -> Task | None:
        task = self.tasks.get(task_id)
        if task is None:
            return None
        self.tasks[task_id] = task.model_copy(update=fields)
        return self.tasks[task_id].model_copy()

    def delete_task(self, task_id: str) -> bool:
        self.runs = [r for r in self.runs if r.task_id != task_id]
        return self.tasks.pop(task_id, None) is not None

    def get_due_tasks(self, now: str) -> list[Task]:
        due = [t for t in self.tasks.values() if t.status == "active" and t.next_run and t.next_run <= now]
        return [t.model_copy() for t in sorted(due, key=lambda t: t.next_run or "")]

    def log_task_run(self, run: TaskRun) -> None:
        self.runs.append(run.model_copy())

    def get_task_runs(self, task_id: str) -> list[TaskRun]:
        return [r.model_copy() for r in reversed(self.runs) if r.task_id == task_id]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Runner:
    """The run_task callback: records tasks, returns ``result`` or raises ``error``."""

    def __init__(
        self, result: str | None = "done", error: Exception | None = None, delay: float = 0.0
    ) -> None:
        self.result = result
        self.error = error
        self.delay = delay
        self.tasks: list[Task] = []

    async def __call__(self, task: Task) -> str | None:
        self.tasks.append(task)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.result


class Env:
    def __init__(self, tmp: Path, runner: Runner | None = None) -> None:
        self.store = FakeStore()
        self.store.add_group("g1@chat", "team")
        self.queue = GroupQueue(ipc_root=tmp / "ipc")
        self.runner = runner or Runner()
        self.clock = Clock(T0)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.scheduler = Scheduler(
            self.store,
            self.queue,
            self.runner,
            lambda name, payload: self.events.append((name, payload)),
            TZ,
            agent_id="ag123456",
            clock=self.clock,
        )

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def last(self, name: str) -> dict[str, Any]:
        return [payload for n, payload in self.events if n == name][-1]

    async def run_due(self) -> list[str]:
        """One poll, then wait for the queue to finish what it started."""
        queued = self.scheduler.poll_once()
        deadline = time.monotonic() + 2.0
        while self.queue.active_count or any(t in self.scheduler._inflight for t in queued):
            assert time.monotonic() < deadline, "queued runs did not finish"
            await asyncio.sleep(0.002)
        return queued


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- next_run rules --------------------------------------------------------------------------------


class TestComputeNextRun:
    def test_cron_runs_in_the_time_zone(self) -> None:
        # 09:00 New York: 14:00Z in winter (EST), 13:00Z once DST starts (8 March 2026).
        assert (
            compute_next_run("cron", "0 9 * * *", TZ, at("2026-03-07T12:00:00Z"))
            == "2026-03-07T14:00:00.000Z"
        )
        assert (
            compute_next_run("cron", "0 9 * * *", TZ, at("2026-03-07T15:00:00Z"))
            == "2026-03-08T13:00:00.000Z"
        )
        assert (
            compute_next_run("cron", "0 9 * * *", "UTC", at("2026-03-07T15:00:00Z"))
            == "2026-03-08T09:00:00.000Z"
        )
        assert compute_next_run("cron", "30 8 * * 1", "Asia/Tokyo", at("2026-01-10T00:00:00Z")) == (
            "2026-01-11T23:30:00.000Z"  # Monday 08:30 in Tokyo is Sunday 23:30Z
        )

    def test_cron_next_is_strictly_after(self) -> None:
        assert (
            compute_next_run("cron", "0 * * * *", "UTC", at("2026-01-10T12:00:00Z"))
            == "2026-01-10T13:00:00.000Z"
        )

    def test_cron_default_after_is_now(self) -> None:
        nxt = datetime.fromisoformat(compute_next_run("cron", "* * * * *", "UTC"))
        assert timedelta(0) < nxt - datetime.now(UTC) <= timedelta(seconds=61)

    def test_interval_anchors_to_the_previous_slot_without_drift(self) -> None:
        anchor = "2026-01-10T12:00:00.000Z"
        # The run finished 5.3 s late: the next slot is still anchor + 60 s.
        assert (
            compute_next_run("interval", "60000", TZ, at("2026-01-10T12:00:05.300Z"), anchor=anchor)
            == "2026-01-10T12:01:00.000Z"
        )
        # Two slots were missed (now is 2.5 intervals later): the next future slot, no replay.
        assert (
            compute_next_run("interval", "60000", TZ, at("2026-01-10T12:02:30Z"), anchor=anchor)
            == "2026-01-10T12:03:00.000Z"
        )
        # Exactly on a slot: that slot is not in the future, so the one after.
        assert (
            compute_next_run("interval", "60000", TZ, at("2026-01-10T12:02:00Z"), anchor=anchor)
            == "2026-01-10T12:03:00.000Z"
        )

    def test_interval_without_anchor_counts_from_after(self) -> None:
        assert (
            compute_next_run("interval", "1500", TZ, at("2026-01-10T12:00:00Z")) == "2026-01-10T12:00:01.500Z"
        )

    def test_once_is_a_local_time_in_the_zone(self) -> None:
        assert compute_next_run("once", "2026-02-01T15:30:00", "Europe/Berlin") == "2026-02-01T14:30:00.000Z"
        assert compute_next_run("once", "2026-07-01T15:30:00", "Europe/Berlin") == "2026-07-01T13:30:00.000Z"
        # A past time is valid: it is simply due.
        assert compute_next_run("once", "2020-01-01T00:00:00", "UTC", T0) == "2020-01-01T00:00:00.000Z"

    @pytest.mark.parametrize(
        ("schedule_type", "value"),
        [
            ("cron", "61 * * * *"),
            ("cron", "bogus"),
            ("cron", "* * *"),
            ("interval", "0"),
            ("interval", "-5000"),
            ("interval", "1.5"),
            ("interval", "soon"),
            ("once", "2026-02-01T15:30:00Z"),
            ("once", "2026-02-01T15:30:00+02:00"),
            ("once", "next tuesday"),
        ],
    )
    def test_invalid_values_raise_config_error_naming_them(self, schedule_type: str, value: str) -> None:
        with pytest.raises(ConfigError) as info:
            validate_schedule(schedule_type, value, TZ)
        assert f"`{value}`" in str(info.value)

    def test_empty_cron_and_unknown_type_and_zone(self) -> None:
        with pytest.raises(ConfigError, match="cron expression"):
            validate_schedule("cron", "  ")
        with pytest.raises(ConfigError, match="`weekly`"):
            validate_schedule("weekly", "1")
        with pytest.raises(ConfigError, match="`Mars/Olympus`"):
            validate_schedule("cron", "* * * * *", "Mars/Olympus")


# -- task API and runs -----------------------------------------------------------------------------


def every_payload_is_stamped(events: list[tuple[str, dict[str, Any]]]) -> None:
    for name, payload in events:
        assert payload["agent_id"] == "ag123456", name
        assert payload["timestamp"].endswith("Z"), name


async def test_crud_and_run_event_order(env: Env) -> None:
    task = await env.scheduler.create_task(
        chat_id="g1@chat",
        prompt="water the plants",
        schedule_type="once",
        schedule_value="2026-01-10T09:00:00",
    )
    assert task.status == "active" and task.group_folder == "team" and task.context_mode == "isolated"
    assert task.next_run == "2026-01-10T14:00:00.000Z"  # 09:00 EST
    assert task.id.startswith("task-")
    paused = await env.scheduler.pause_task(task.id)
    assert paused is not None and paused.status == "paused"
    assert env.scheduler.poll_once() == []  # paused tasks are not due
    resumed = await env.scheduler.resume_task(task.id)
    assert resumed is not None and resumed.status == "active"
    # Move it into the past so it is due now.
    updated = await env.scheduler.update_task(task.id, schedule_value="2026-01-10T06:00:00")
    assert updated is not None and updated.next_run == "2026-01-10T11:00:00.000Z"
    env.clock.advance(seconds=2)
    assert await env.run_due() == [task.id]

    assert env.names() == [
        "task.created",
        "task.paused",
        "task.resumed",
        "task.updated",
        "task.run.queued",
        "task.run.started",
        "task.run.succeeded",
        "task.terminated",
    ]
    every_payload_is_stamped(env.events)
    created = env.last("task.created")["task"]
    assert (
        created["id"] == task.id
        and created["schedule_type"] == "once"
        and created["prompt"] == "water the plants"
    )
    upd = env.last("task.updated")
    assert upd["id"] == task.id
    assert upd["changes"] == {"schedule_value": "2026-01-10T06:00:00"}
    assert upd["task"]["next_run"] == "2026-01-10T11:00:00.000Z"
    assert env.last("task.resumed")["next_run"] == "2026-01-10T14:00:00.000Z"
    assert env.last("task.run.started")["context_mode"] == "isolated"
    ok = env.last("task.run.succeeded")
    assert ok["result"] == "done" and ok["next_run"] is None and isinstance(ok["duration_ms"], int)
    assert env.last("task.terminated")["last_result"] == "done"

    final = env.store.get_task(task.id)
    assert final is not None
    assert final.status == "completed" and final.next_run is None
    assert final.last_run == "2026-01-10T12:00:02.000Z" and final.last_result == "done"
    assert [r.status for r in env.store.runs] == ["success"]
    assert [t.id for t in env.runner.tasks] == [task.id]


async def test_group_context_mode_is_reported(env: Env) -> None:
    task = await env.scheduler.create_task(
        chat_id="g1@chat", prompt="p", schedule_type="interval", schedule_value="1000", context_mode="group"
    )
    env.clock.advance(seconds=1)
    await env.run_due()
    assert env.last("task.run.started")["context_mode"] == "group"
    assert env.runner.tasks[0].context_mode == "group" and env.runner.tasks[0].id == task.id


async def test_failed_run_reports_error_and_duration_and_once_still_terminates(tmp_path: Path) -> None:
    env = Env(tmp_path, Runner(error=RuntimeError("box exploded"), delay=0.02))
    task = await env.scheduler.create_task(
        chat_id="g1@chat", prompt="p", schedule_type="once", schedule_value="2026-01-10T06:00:00"
    )
    await env.run_due()
    assert env.names()[-3:] == ["task.run.started", "task.run.failed", "task.terminated"]
    failed = env.last("task.run.failed")
    assert failed["error"] == "box exploded"
    assert failed["duration_ms"] >= 15
    assert failed["next_run"] is None
    assert env.last("task.terminated")["last_result"] == "Error: box exploded"
    final = env.store.get_task(task.id)
    assert final is not None and final.status == "completed" and final.last_result == "Error: box exploded"
    (run,) = env.store.runs
    assert run.status == "error" and run.error == "box exploded" and run.duration_ms >= 15


async def test_recurring_success_stays_active_with_an_anchored_next_run(tmp_path: Path) -> None:
    env = Env(tmp_path, Runner(result="x" * 500))
    task = await env.scheduler.create_task(
        chat_id="g1@chat", prompt="p", schedule_type="interval", schedule_value="60000"
    )
    assert task.next_run == "2026-01-10T12:01:00.000Z"
    env.clock.advance(minutes=3, seconds=30)  # three slots passed while the host was busy
    await env.run_due()
    assert "task.terminated" not in env.names()
    ok = env.last("task.run.succeeded")
    assert ok["next_run"] == "2026-01-10T12:04:00.000Z"  # anchored at 12:01, next future slot
    final = env.store.get_task(task.id)
    assert final is not None and final.status == "active" and final.next_run == "2026-01-10T12:04:00.000Z"
    assert final.last_result == "x" * 200


async def test_recurring_cron_moves_to_the_next_local_occurrence(env: Env) -> None:
    task = await env.scheduler.create_task(
        chat_id="g1@chat", prompt="p", schedule_type="cron", schedule_value="0 9 * * *"
    )
    assert task.next_run == "2026-01-10T14:00:00.000Z"
    env.clock.now = at("2026-01-10T14:00:00.500Z")
    await env.run_due()
    final = env.store.get_task(task.id)
    assert final is not None and final.status == "active" and final.next_run == "2026-01-11T14:00:00.000Z"
    assert env.last("task.run.succeeded")["next_run"] == "2026-01-11T14:00:00.000Z"


async def test_empty_result_is_recorded_as_completed(tmp_path: Path) -> None:
    env = Env(tmp_path, Runner(result=None))
    task = await env.scheduler.create_task(
        chat_id="g1@chat", prompt="p", schedule_type="interval", schedule_value="1000"
    )
    env.clock.advance(seconds=1)
    await env.run_due()
    final = env.store.get_task(task.id)
    assert final is not None and final.last_result == "Completed"
    assert env.last("task.run.succeeded")["result"] is None


async def test_skipped_when_group_not_found(env: Env) -> None:
    task = await env.scheduler.create_task(
        chat_id="g1@chat", prompt="p", schedule_type="interval", schedule_value="1000"
    )
    del env.store.groups["g1@chat"]
    env.clock.advance(seconds=2)
    await env.run_due()
    assert env.names()[-2:] == ["task.run.queued", "task.run.skipped"]
    skipped = env.last("task.run.skipped")
    assert skipped["reason"] == "group_not_found" and "`team`" in skipped["detail"]
    assert env.runner.tasks == []
    (run,) = env.store.runs
    assert run.status == "error" and run.task_id == task.id
    final = env.store.get_task(task.id)
    assert final is not None and final.status == "active"


async def test_invalid_group_folder_skips_and_pauses(env: Env) -> None:
    env.store.add_group("bad@chat", "global")
    env.store.create_task(
        Task(
            id="task-1-abcdef",
            group_folder="global",
            chat_id="bad@chat",
            prompt="p",
            schedule_type="interval",
            schedule_value="1000",
            next_run=iso_utc(T0),
            created_at=iso_utc(T0),
        )
    )
    await env.run_due()
    skipped = env.last("task.run.skipped")
    assert skipped["reason"] == "invalid_group_folder" and skipped["detail"]
    assert env.runner.tasks == []
    final = env.store.get_task("task-1-abcdef")
    assert final is not None and final.status == "paused"
    assert [r.status for r in env.store.runs] == ["error"]
    every_payload_is_stamped(env.events)


async def test_task_paused_after_queueing_is_skipped_as_not_active(env: Env) -> None:
    captured: list[Callable[[], Any]] = []

    class HoldingQueue:
        def enqueue_task(self, jid: str, task_id: str, fn: Callable[[], Any]) -> bool:
            captured.append(fn)
            return True

    scheduler = Scheduler(
        env.store,
        HoldingQueue(),
        env.runner,
        lambda n, p: env.events.append((n, p)),
        TZ,
        agent_id="ag123456",
        clock=env.clock,
    )
    task = await scheduler.create_task(
        chat_id="g1@chat", prompt="p", schedule_type="interval", schedule_value="1000"
    )
    env.clock.advance(seconds=1)
    assert scheduler.poll_once() == [task.id]
    assert scheduler.poll_once() == []  # already queued: not queued (or announced) twice
    await scheduler.pause_task(task.id)
    await captured[0]()
    assert env.last("task.run.skipped")["reason"] == "not_active"
    assert env.runner.tasks == []
    assert env.names().count("task.run.queued") == 1


async def test_due_task_running_long_is_not_queued_again(tmp_path: Path) -> None:
    env = Env(tmp_path, Runner(delay=0.05))
    task = await env.scheduler.create_task(
        chat_id="g1@chat", prompt="p", schedule_type="interval", schedule_value="1000"
    )
    env.clock.advance(seconds=1)
    assert env.scheduler.poll_once() == [task.id]
    await until(lambda: env.runner.tasks, "the task run to start", 30, interval=0.001)
    assert env.scheduler.poll_once() == []  # while it runs (0.05 s)
    await env.run_due()
    assert env.names().count("task.run.queued") == 1
    assert len(env.runner.tasks) == 1


async def test_cancel_emits_task_deleted(env: Env) -> None:
    task = await env.scheduler.create_task(
        chat_id="g1@chat", prompt="p", schedule_type="cron", schedule_value="0 9 * * *"
    )
    assert await env.scheduler.cancel_task(task.id)
    assert env.names() == ["task.created", "task.deleted"]
    assert env.last("task.deleted")["task_id"] == task.id
    assert env.store.get_task(task.id) is None
    assert not await env.scheduler.cancel_task(task.id)
    assert env.names() == ["task.created", "task.deleted"]


async def test_get_task_lists_runs_newest_first(tmp_path: Path) -> None:
    env = Env(tmp_path)
    outcomes = iter(["first", "second"])
    env.runner.result = None

    async def run(task: Task) -> str | None:
        return next(outcomes)

    env.scheduler._run_task = run
    task = await env.scheduler.create_task(
        chat_id="g1@chat", prompt="p", schedule_type="interval", schedule_value="1000"
    )
    for _ in range(2):
        env.clock.advance(seconds=1)
        await env.run_due()
    details = env.scheduler.get_task(task.id)
    assert details is not None and details.id == task.id
    assert [r.result for r in details.runs] == ["second", "first"]
    assert env.scheduler.get_task("task-missing") is None
    assert [t.id for t in env.scheduler.list_tasks("team")] == [task.id]
    assert env.scheduler.list_tasks("other") == []


@pytest.mark.parametrize(
    ("schedule_type", "value"),
    [
        ("cron", "not a cron"),
        ("interval", "0"),
        ("interval", "abc"),
        ("once", "2026-01-10T06:00:00Z"),
        ("daily", "1"),
    ],
)
async def test_create_rejects_invalid_schedules(env: Env, schedule_type: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        await env.scheduler.create_task(
            chat_id="g1@chat", prompt="p", schedule_type=schedule_type, schedule_value=value
        )
    assert "`" in str(info.value)
    assert env.store.tasks == {} and env.events == []


async def test_create_rejects_unknown_group_and_bad_context(env: Env) -> None:
    with pytest.raises(ConfigError, match="`nobody@chat`"):
        await env.scheduler.create_task(
            chat_id="nobody@chat", prompt="p", schedule_type="interval", schedule_value="1"
        )
    with pytest.raises(ConfigError, match="`shared`"):
        await env.scheduler.create_task(
            chat_id="g1@chat", prompt="p", schedule_type="interval", schedule_value="1", context_mode="shared"
        )
    with pytest.raises(ConfigError, match="`elsewhere`"):
        await env.scheduler.create_task(
            chat_id="g1@chat",
            prompt="p",
            schedule_type="interval",
            schedule_value="1",
            group_folder="elsewhere",
        )
    assert env.store.tasks == {} and env.events == []


async def test_update_validates_and_reports_unknown(env: Env) -> None:
    task = await env.scheduler.create_task(
        chat_id="g1@chat", prompt="p", schedule_type="interval", schedule_value="1000"
    )
    with pytest.raises(ConfigError, match="`61 \\* \\* \\* \\*`"):
        await env.scheduler.update_task(task.id, schedule_type="cron", schedule_value="61 * * * *")
    unchanged = env.store.get_task(task.id)
    assert unchanged is not None and unchanged.schedule_type == "interval"
    updated = await env.scheduler.update_task(
        task.id, schedule_type="cron", schedule_value="0 9 * * *", prompt="q"
    )
    assert updated is not None and updated.next_run == "2026-01-10T14:00:00.000Z" and updated.prompt == "q"
    assert env.last("task.updated")["changes"] == {
        "prompt": "q",
        "schedule_type": "cron",
        "schedule_value": "0 9 * * *",
    }
    assert await env.scheduler.update_task("task-missing", prompt="x") is None
    assert await env.scheduler.pause_task("task-missing") is None
    assert await env.scheduler.resume_task("task-missing") is None


async def test_resume_moves_a_stale_recurring_slot_forward(env: Env) -> None:
    task = await env.scheduler.create_task(
        chat_id="g1@chat", prompt="p", schedule_type="interval", schedule_value="60000"
    )
    await env.scheduler.pause_task(task.id)
    env.clock.advance(minutes=10, seconds=30)
    resumed = await env.scheduler.resume_task(task.id)
    assert resumed is not None and resumed.next_run == "2026-01-10T12:11:00.000Z"
    assert env.last("task.resumed")["next_run"] == "2026-01-10T12:11:00.000Z"


async def test_completed_task_cannot_be_paused_or_resumed(env: Env) -> None:
    task = await env.scheduler.create_task(
        chat_id="g1@chat", prompt="p", schedule_type="once", schedule_value="2026-01-10T06:00:00"
    )
    await env.run_due()
    with pytest.raises(ConfigError, match=task.id):
        await env.scheduler.pause_task(task.id)
    with pytest.raises(ConfigError, match=task.id):
        await env.scheduler.resume_task(task.id)


async def test_loop_polls_at_start_and_stops(tmp_path: Path) -> None:
    env = Env(tmp_path)
    env.scheduler = Scheduler(
        env.store,
        env.queue,
        env.runner,
        lambda n, p: env.events.append((n, p)),
        TZ,
        poll_interval=0.02,
        agent_id="ag123456",
        clock=env.clock,
    )
    task = await env.scheduler.create_task(
        chat_id="g1@chat", prompt="p", schedule_type="interval", schedule_value="1000"
    )
    env.clock.advance(seconds=1)
    await env.scheduler.start()
    deadline = time.monotonic() + 1.0
    while "task.run.succeeded" not in env.names():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    env.clock.advance(seconds=1)  # due again: the next poll (20 ms later) runs it again
    while env.names().count("task.run.succeeded") < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    await env.scheduler.stop()
    await env.queue.shutdown(grace=1.0)
    assert all(t.id == task.id for t in env.runner.tasks)


async def test_keyword_style_emit_is_supported(tmp_path: Path) -> None:
    env = Env(tmp_path)
    seen: list[tuple[str, dict[str, Any]]] = []

    def emit(name: str, **data: Any) -> None:
        seen.append((name, data))

    scheduler = Scheduler(env.store, env.queue, env.runner, emit, TZ, agent_id="ag123456", clock=env.clock)
    task = await scheduler.create_task(
        chat_id="g1@chat", prompt="p", schedule_type="interval", schedule_value="1000"
    )
    assert seen == [
        (
            "task.created",
            {
                "agent_id": "ag123456",
                "timestamp": "2026-01-10T12:00:00.000Z",
                "task_id": task.id,
                "jid": "g1@chat",
                "task": task.model_dump(),
            },
        )
    ]


async def test_failing_listener_does_not_break_a_run(tmp_path: Path) -> None:
    env = Env(tmp_path)

    def emit(name: str, payload: dict[str, Any]) -> None:
        raise RuntimeError("listener broke")

    env.scheduler._emit_fn = emit
    task = await env.scheduler.create_task(
        chat_id="g1@chat", prompt="p", schedule_type="once", schedule_value="2026-01-10T06:00:00"
    )
    await env.run_due()
    final = env.store.get_task(task.id)
    assert final is not None and final.status == "completed"


def test_bad_time_zone_and_poll_interval(tmp_path: Path) -> None:
    store = FakeStore()
    queue = GroupQueue(ipc_root=tmp_path)
    with pytest.raises(ConfigError, match="`Nowhere/Town`"):
        Scheduler(store, queue, Runner(), lambda n, p: None, "Nowhere/Town")
    with pytest.raises(ConfigError, match="`0`"):
        Scheduler(store, queue, Runner(), lambda n, p: None, "UTC", poll_interval=0)
