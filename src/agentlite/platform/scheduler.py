"""Scheduled tasks: when they are due, how a run is recorded, and the task management API.

Why it is shaped this way: a task run needs a box, so the scheduler never runs anything itself. It
finds due tasks, hands each run to the :class:`~agentlite.platform.queue.GroupQueue` (which enforces one
box per group and the global cap), and around the ``run_task`` callback it records the run, moves
the task to its next slot and emits the task events in the reference order (3.4, 5.9)::

    task.run.queued -> task.run.started -> task.run.succeeded | task.run.failed [-> task.terminated]

Schedules (reference 4.4 and 5.9), all computed in the configured IANA time zone and stored as
UTC ISO strings (``2026-11-25T13:24:47.123Z``), which sort the same way as the instants they name:

- ``cron``: a cron expression; the next occurrence after now, in local time (so ``0 9 * * *``
  means 09:00 local on both sides of a DST change);
- ``interval``: a positive whole number of milliseconds, anchored to the previous *scheduled*
  time rather than to when the run finished, so runs do not drift; missed slots are skipped, not
  replayed;
- ``once``: a local timestamp without ``Z`` or an offset; after its run (success or failure) the
  task is completed and ``task.terminated`` is emitted.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
import string
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from functools import partial
from typing import Any, Literal, Protocol

from pydantic import Field

from agentlite.core.clock import iso_utc, parse_iso
from agentlite.core.errors import ConfigError
from agentlite.core.names import check_task_id
from agentlite.core.schedules import (
    aware_utc,
    compute_next_run,
    resolve_tz,
    validate_schedule as validate_schedule,  # re-exported: one set of rules
)
from agentlite.platform.store import RegisteredGroup, Task, TaskRun, check_group_folder

log = logging.getLogger("agentlite.scheduler")

DEFAULT_POLL_INTERVAL = 60.0
#: When a stored schedule cannot be read at run time, try again this much later (reference 5.9).
FALLBACK_DELAY = timedelta(seconds=60)
#: ``last_result`` keeps this many characters of a run's result.
LAST_RESULT_CHARS = 200
#: A task box is asked to close this long after its result or idle state (reference 5.5).
TASK_CLOSE_DELAY = 10.0

ScheduleType = Literal["cron", "interval", "once"]
ContextMode = Literal["group", "isolated"]
SCHEDULE_TYPES: tuple[str, ...] = ("cron", "interval", "once")
CONTEXT_MODES: tuple[str, ...] = ("group", "isolated")

RunTask = Callable[[Task], Awaitable[str | None]]
Emit = Callable[..., Any]


class TaskStore(Protocol):
    """The part of :class:`agentlite.platform.store.AgentStore` the scheduler uses."""

    def get_registered_groups(self) -> dict[str, RegisteredGroup]: ...
    def create_task(self, t: Task) -> None: ...
    def get_task(self, task_id: str) -> Task | None: ...
    def list_tasks(self, group_folder: str | None = None) -> list[Task]: ...
    def update_task(self, task_id: str, **fields: Any) -> Task | None: ...
    def delete_task(self, task_id: str) -> bool: ...
    def get_due_tasks(self, now: str) -> list[Task]: ...
    def log_task_run(self, run: TaskRun) -> None: ...
    def get_task_runs(self, task_id: str) -> list[TaskRun]: ...


class TaskQueue(Protocol):
    """The part of :class:`agentlite.platform.queue.GroupQueue` the scheduler uses."""

    def enqueue_task(self, jid: str, task_id: str, fn: Callable[[], Awaitable[None]]) -> bool | None: ...


class TaskDetails(Task):
    """A task with its run log, newest run first."""

    runs: list[TaskRun] = Field(default_factory=list)


def new_task_id() -> str:
    """``task-<epoch ms>-<6 random chars>``, the reference's id form."""
    alphabet = string.ascii_lowercase + string.digits
    return f"task-{int(time.time() * 1000)}-{''.join(secrets.choice(alphabet) for _ in range(6))}"


def _takes_kwargs_only(fn: Callable[..., Any]) -> bool:
    """Whether ``emit`` is ``emit(name, **data)`` rather than ``emit(name, payload)``."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) == 1 and any(p.kind is p.VAR_KEYWORD for p in params)


# -- the scheduler -------------------------------------------------------------------------------


class Scheduler:
    """Polls for due tasks, runs them through the queue, and manages tasks.

    ``run_task(task)`` does the real run (a box) and returns the result text or raises; ``emit``
    receives ``(name, payload)`` (or ``(name, **payload)`` if that is its signature). Every payload
    has snake_case keys and carries ``agent_id`` and ``timestamp``. ``groups`` returns the
    registered groups by JID (default: ``store.get_registered_groups``); ``clock`` returns the
    current time (tests move it).
    """

    def __init__(
        self,
        store: TaskStore,
        queue: TaskQueue,
        run_task: RunTask,
        emit: Emit,
        tz: str | tzinfo = "UTC",
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        *,
        agent_id: str = "",
        groups: Callable[[], Mapping[str, RegisteredGroup]] | None = None,
        clock: Callable[[], datetime] | None = None,
        blocked: Callable[[Task], str | None] | None = None,
    ) -> None:
        if poll_interval <= 0:
            raise ConfigError(f"poll interval `{poll_interval}` must be positive")
        self._store = store
        self._queue = queue
        self._run_task = run_task
        self._emit_fn = emit
        self._emit_kwargs = _takes_kwargs_only(emit)
        self._tz = resolve_tz(tz)
        self._poll_interval = float(poll_interval)
        self._agent_id = agent_id
        self._groups = groups or store.get_registered_groups
        self._clock = clock or (lambda: datetime.now(UTC))
        #: Why a due task may not run now (its group paused by a budget), or None.
        self._blocked = blocked
        self._inflight: set[str] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    @property
    def tz(self) -> tzinfo:
        return self._tz

    # -- plumbing ------------------------------------------------------------------------------

    def _now(self) -> datetime:
        return aware_utc(self._clock())

    def _emit(self, name: str, **data: Any) -> None:
        payload = {"agent_id": self._agent_id, "timestamp": iso_utc(self._now()), **data}
        try:
            if self._emit_kwargs:
                self._emit_fn(name, **payload)
            else:
                self._emit_fn(name, payload)
        except Exception:
            log.exception("emitting %s failed", name)

    def _group_by_jid(self, jid: str) -> RegisteredGroup | None:
        return self._groups().get(jid)

    def _group_by_folder(self, folder: str) -> RegisteredGroup | None:
        return next((g for g in self._groups().values() if g.folder == folder), None)

    # -- the loop ------------------------------------------------------------------------------

    async def start(self, spawn: Callable[..., asyncio.Task[Any]] | None = None) -> None:
        """Start polling (under ``spawn``, an owner's supervisor, if given); the first poll happens at once."""
        if self._loop_task is not None and not self._loop_task.done():
            return
        self._stop.clear()
        if spawn is not None:
            self._loop_task = spawn(self._loop(), name="agentlite-scheduler")
        else:
            self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name="agentlite-scheduler")

    async def stop(self) -> None:
        """Stop polling. Runs already handed to the queue are the queue's to finish."""
        self._stop.set()
        if self._loop_task is not None:
            await self._loop_task
            self._loop_task = None

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("scheduler poll failed")
            try:
                await asyncio.wait_for(self._stop.wait(), self._poll_interval)
            except TimeoutError:
                pass

    def poll_once(self) -> list[str]:
        """Queue every due, still-active task once; returns the ids queued by this poll."""
        queued: list[str] = []
        for due in self._store.get_due_tasks(iso_utc(self._now())):
            if due.id in self._inflight:
                continue  # queued or running already; its run moves next_run on
            task = self._store.get_task(due.id)
            if task is None or task.status != "active":
                continue
            self._inflight.add(task.id)
            accepted = self._queue.enqueue_task(task.chat_id, task.id, partial(self._execute, task.id))
            if accepted is False:
                self._inflight.discard(task.id)
                continue
            self._emit("task.run.queued", task_id=task.id, jid=task.chat_id)
            queued.append(task.id)
        return queued

    # -- one run -------------------------------------------------------------------------------

    async def _execute(self, task_id: str) -> None:
        try:
            await self._run_one(task_id)
        finally:
            self._inflight.discard(task_id)

    def _skip(self, task: Task, reason: str, detail: str) -> None:
        self._store.log_task_run(
            TaskRun(task_id=task.id, run_at=iso_utc(self._now()), duration_ms=0, status="error", error=detail)
        )
        self._emit("task.run.skipped", task_id=task.id, jid=task.chat_id, reason=reason, detail=detail)

    async def _run_one(self, task_id: str) -> None:
        task = self._store.get_task(task_id)
        if task is None or task.status != "active":
            detail = "task was deleted" if task is None else f"task status is {task.status}"
            jid = None if task is None else task.chat_id
            self._emit("task.run.skipped", task_id=task_id, jid=jid, reason="not_active", detail=detail)
            return
        try:
            check_group_folder(task.group_folder)
        except ConfigError as exc:
            # A folder that can never be valid: stop trying until someone fixes and resumes it.
            self._store.update_task(task.id, status="paused")
            self._skip(task, "invalid_group_folder", str(exc))
            return
        if self._group_by_folder(task.group_folder) is None:
            self._skip(task, "group_not_found", f"no registered group has folder `{task.group_folder}`")
            return
        why = self._blocked(task) if self._blocked is not None else None
        if why is not None:
            # This slot is skipped, not held: the task comes back at its next slot (a once task ends).
            self._skip(task, "budget_paused", why)
            next_run = self._next_after_run(task, task)
            skipped: dict[str, Any] = {"next_run": next_run, "last_result": f"Skipped: {why}"}
            self._store.update_task(task.id, **skipped, **({} if next_run else {"status": "completed"}))
            return

        self._emit("task.run.started", task_id=task.id, jid=task.chat_id, context_mode=task.context_mode)
        run_at = iso_utc(self._now())
        started = time.monotonic()
        result: str | None = None
        error: str | None = None
        try:
            result = await self._run_task(task)
        except Exception as exc:
            error = str(exc) or type(exc).__name__
            log.warning("task %s run failed: %s", task.id, error)
        duration_ms = round((time.monotonic() - started) * 1000)

        current = self._store.get_task(task.id)
        last_result: str | None = None
        next_run: str | None = None
        if current is None:  # cancelled while it ran: nothing left to update or log against
            pass
        else:
            self._store.log_task_run(
                TaskRun(
                    task_id=task.id,
                    run_at=run_at,
                    duration_ms=duration_ms,
                    status="error" if error is not None else "success",
                    result=result,
                    error=error,
                )
            )
            next_run = self._next_after_run(task, current)
            if error is not None:
                last_result = f"Error: {error}"
            else:
                last_result = result[:LAST_RESULT_CHARS] if result else "Completed"
            fields: dict[str, Any] = {"next_run": next_run, "last_run": run_at, "last_result": last_result}
            if next_run is None:
                fields["status"] = "completed"
            self._store.update_task(task.id, **fields)

        common = {"task_id": task.id, "jid": task.chat_id, "duration_ms": duration_ms, "next_run": next_run}
        if error is None:
            self._emit("task.run.succeeded", **common, result=result)
        else:
            self._emit("task.run.failed", **common, error=error)
        if current is not None and next_run is None:
            self._emit("task.terminated", task_id=task.id, jid=task.chat_id, last_result=last_result)

    def _next_after_run(self, ran: Task, current: Task) -> str | None:
        """The slot after the one that just ran; None ends the task (a once task)."""
        if (current.schedule_type, current.schedule_value) != (ran.schedule_type, ran.schedule_value):
            return current.next_run  # rescheduled while running: the update already set next_run
        if ran.schedule_type == "once":
            return None
        try:
            return compute_next_run(
                ran.schedule_type, ran.schedule_value, self._tz, self._now(), anchor=ran.next_run
            )
        except (ConfigError, ValueError) as exc:
            log.error("task %s schedule unreadable (%s); trying again in a minute", ran.id, exc)
            return iso_utc(self._now() + FALLBACK_DELAY)

    # -- task management -----------------------------------------------------------------------

    def _check_schedule(self, schedule_type: str, value: str) -> str:
        if schedule_type not in SCHEDULE_TYPES:
            raise ConfigError(f"schedule type `{schedule_type}` must be one of cron, interval, once")
        return compute_next_run(schedule_type, value, self._tz, self._now())

    async def create_task(
        self,
        *,
        chat_id: str,
        prompt: str,
        schedule_type: str,
        schedule_value: str,
        context_mode: str = "isolated",
        group_folder: str | None = None,
        task_id: str | None = None,
    ) -> Task:
        """Validate and store a new active task for the group ``chat_id``; emits ``task.created``.

        ``task_id`` is the id a box already told its agent (the MCP tool makes it); None makes one.
        """
        if task_id is not None and self._store.get_task(check_task_id(task_id)) is not None:
            raise ConfigError(f"task id `{task_id}` already exists")
        group = self._group_by_jid(chat_id)
        if group is None:
            raise ConfigError(f"unknown group `{chat_id}`: register it before scheduling tasks for it")
        if group_folder is not None and group_folder != group.folder:
            raise ConfigError(f"group folder `{group_folder}` does not belong to group `{chat_id}`")
        if not prompt.strip():
            raise ConfigError("task prompt `` is empty")
        if context_mode not in CONTEXT_MODES:
            raise ConfigError(f"context mode `{context_mode}` must be group or isolated")
        next_run = self._check_schedule(schedule_type, schedule_value)
        task = Task(
            id=task_id or new_task_id(),
            group_folder=group.folder,
            chat_id=chat_id,
            prompt=prompt,
            schedule_type=schedule_type,  # type: ignore[arg-type]
            schedule_value=schedule_value.strip(),
            context_mode=context_mode,  # type: ignore[arg-type]
            status="active",
            next_run=next_run,
            created_at=iso_utc(self._now()),
        )
        self._store.create_task(task)
        self._emit("task.created", task_id=task.id, jid=task.chat_id, task=task.model_dump())
        return task

    def list_tasks(self, group_folder: str | None = None) -> list[Task]:
        return self._store.list_tasks(group_folder)

    def get_task(self, task_id: str) -> TaskDetails | None:
        """The task with its runs (newest first), or None."""
        task = self._store.get_task(task_id)
        if task is None:
            return None
        return TaskDetails(**task.model_dump(), runs=self._store.get_task_runs(task_id))

    async def update_task(
        self,
        task_id: str,
        *,
        prompt: str | None = None,
        schedule_type: str | None = None,
        schedule_value: str | None = None,
    ) -> Task | None:
        """Change a task's prompt or schedule (next_run is recomputed); None if unknown."""
        task = self._store.get_task(task_id)
        if task is None:
            return None
        changes: dict[str, Any] = {}
        if prompt is not None:
            if not prompt.strip():
                raise ConfigError("task prompt `` is empty")
            changes["prompt"] = prompt
        if schedule_type is not None:
            changes["schedule_type"] = schedule_type
        if schedule_value is not None:
            changes["schedule_value"] = schedule_value.strip()
        if not changes:
            return task
        fields = dict(changes)
        if schedule_type is not None or schedule_value is not None:
            fields["next_run"] = self._check_schedule(
                changes.get("schedule_type", task.schedule_type),
                changes.get("schedule_value", task.schedule_value),
            )
        updated = self._store.update_task(task_id, **fields)
        if updated is None:
            return None
        self._emit(
            "task.updated",
            id=task_id,
            task_id=task_id,
            jid=updated.chat_id,
            changes=changes,
            task=updated.model_dump(),
        )
        return updated

    async def pause_task(self, task_id: str) -> Task | None:
        """Stop a task from running until resumed; None if unknown."""
        task = self._store.get_task(task_id)
        if task is None:
            return None
        if task.status == "completed":
            raise ConfigError(f"task `{task_id}` is completed and cannot be paused")
        updated = self._store.update_task(task_id, status="paused")
        if updated is not None:
            self._emit("task.paused", task_id=task_id, jid=task.chat_id)
        return updated

    async def resume_task(self, task_id: str) -> Task | None:
        """Make a paused task active again; None if unknown.

        A recurring task whose slot passed while it was paused moves to its next future slot (no
        burst of missed runs); a once task keeps its time, so a past one runs at the next poll.
        """
        task = self._store.get_task(task_id)
        if task is None:
            return None
        if task.status == "completed":
            raise ConfigError(f"task `{task_id}` is completed and cannot be resumed")
        fields: dict[str, Any] = {"status": "active"}
        now = self._now()
        if task.schedule_type != "once" and (task.next_run is None or parse_iso(task.next_run) <= now):
            try:
                fields["next_run"] = compute_next_run(
                    task.schedule_type, task.schedule_value, self._tz, now, anchor=task.next_run
                )
            except ConfigError as exc:
                log.error("task %s schedule unreadable on resume (%s)", task_id, exc)
                fields["next_run"] = iso_utc(now + FALLBACK_DELAY)
        updated = self._store.update_task(task_id, **fields)
        if updated is not None:
            self._emit("task.resumed", task_id=task_id, jid=task.chat_id, next_run=updated.next_run)
        return updated

    async def cancel_task(self, task_id: str) -> bool:
        """Delete a task and its run log; False if it did not exist."""
        task = self._store.get_task(task_id)
        if task is None or not self._store.delete_task(task_id):
            return False
        self._emit("task.deleted", task_id=task_id, jid=task.chat_id)
        return True


def store_scheduler(store: TaskStore, *, tz: str | tzinfo, agent_id: str) -> Scheduler:
    """A scheduler over an agent's store alone, to list and change its tasks beside a running
    service (whose scheduler picks the changes up at its next poll); it runs nothing itself."""
    return Scheduler(store, None, None, lambda *a, **k: None, tz=tz, agent_id=agent_id)  # type: ignore[arg-type]
