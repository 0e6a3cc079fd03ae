"""Per-group run queue: one live run per group, a global cap, retries, and idle preemption.

Why a queue at all: every run owns a box (a VM), and a chat group must never have two boxes
writing the same session and workspace at once, while the host as a whole must not boot more VMs
than it can hold. The queue owns no boxes itself. It decides *when* the callbacks it is given run,
and talks to a live box only through files in the box's IPC folder
(``<ipc_root>/<folder>/input/``): follow-up messages and the ``_close`` signal.

Rules (reference 5.6):

- at most one active run per group, and at most ``max_concurrent`` runs overall;
- a group's queued tasks run before its pending messages, and groups waiting for a free slot are
  served in arrival order when one frees up;
- a message run that fails (returns ``False`` or raises) is retried after
  ``retry_base * 2**(n-1)`` seconds for n = 1..``max_retries``, then dropped; the next inbound
  message starts a fresh cycle;
- a task already running or queued under the same id is not queued again;
- a box that said it is idle is asked to close when a task is waiting for its group (preemption),
  so the task does not wait for the idle timeout;
- a task box takes no follow-up messages (a task is a single turn): :meth:`GroupQueue.send_message`
  returns ``False`` and the caller queues a message check instead;
- after :meth:`GroupQueue.shutdown` nothing new is taken; running work is detached, not cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlite.core.errors import ConfigError
from agentlite.core.names import check_group_folder
from agentlite.core.safefs import UnsafePath
from agentlite.run.runner_input import request_close, write_follow_up

log = logging.getLogger("agentlite.queue")

DEFAULT_MAX_CONCURRENT = 5
DEFAULT_RETRY_BASE = 5.0
DEFAULT_MAX_RETRIES = 5

ProcessMessages = Callable[[str], Awaitable[bool]]
TaskFn = Callable[[], Awaitable[None]]
Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[Any]"]


@dataclass
class _QueuedTask:
    task_id: str
    fn: TaskFn


@dataclass
class _Group:
    """What the queue knows about one chat group (keyed by its JID)."""

    active: bool = False
    idle_waiting: bool = False
    #: ``_close`` was written: the box ends after its turn and must get no more follow-ups.
    closing: bool = False
    is_task: bool = False
    running_task_id: str | None = None
    pending_messages: bool = False
    pending_tasks: list[_QueuedTask] = field(default_factory=list)
    folder: str | None = None
    retry_count: int = 0
    retry_timer: asyncio.TimerHandle | None = None
    close_timer: asyncio.TimerHandle | None = None


class GroupQueue:
    """Schedules message and task runs per group; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT,
        ipc_root: Path,
        retry_base: float = DEFAULT_RETRY_BASE,
        max_retries: int = DEFAULT_MAX_RETRIES,
        on_refused: Callable[[UnsafePath], None] | None = None,
        spawn: Spawn | None = None,
    ) -> None:
        if retry_base < 0:
            raise ConfigError(f"retry base `{retry_base}` must not be negative")
        if max_retries < 0:
            raise ConfigError(f"max retries `{max_retries}` must not be negative")
        self._on_refused = on_refused
        #: Where runs are started: the owner's supervisor (:mod:`agentlite.core.supervisor`), or a bare
        #: task of the running loop.
        self._spawn_run = spawn
        self._max_concurrent = max(1, int(max_concurrent))
        self._ipc_root = Path(ipc_root)
        self._retry_base = float(retry_base)
        self._max_retries = int(max_retries)
        self._groups: dict[str, _Group] = {}
        self._waiting: list[str] = []
        self._active_count = 0
        self._process_messages: ProcessMessages | None = None
        self._shutting_down = False
        self._runs: set[asyncio.Task[None]] = set()

    # -- configuration and state -------------------------------------------------------------

    def set_process_messages(self, fn: ProcessMessages) -> None:
        """Set the callback that handles a group's pending messages; it returns success."""
        self._process_messages = fn

    @property
    def active_count(self) -> int:
        """How many runs hold a slot right now."""
        return self._active_count

    @property
    def max_concurrent(self) -> int:
        return self._max_concurrent

    @property
    def max_retries(self) -> int:
        return self._max_retries

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def is_active(self, jid: str) -> bool:
        """Whether a run (message or task) is live for the group."""
        group = self._groups.get(jid)
        return bool(group and group.active)

    def is_idle(self, jid: str) -> bool:
        """Whether the group's live box finished its turn and only waits for input."""
        group = self._groups.get(jid)
        return bool(group and group.active and group.idle_waiting)

    def queued_tasks(self, jid: str) -> int:
        """How many tasks (turns asked for, scheduled runs) wait for the group's current run to end."""
        group = self._groups.get(jid)
        return len(group.pending_tasks) if group else 0

    def _group(self, jid: str) -> _Group:
        group = self._groups.get(jid)
        if group is None:
            group = self._groups[jid] = _Group()
        return group

    def _at_capacity(self) -> bool:
        return self._active_count >= self._max_concurrent

    def _wait_for_slot(self, jid: str) -> None:
        if jid not in self._waiting:
            self._waiting.append(jid)

    # -- enqueueing --------------------------------------------------------------------------

    def enqueue_message_check(self, jid: str) -> None:
        """Ask for the group's pending messages to be processed as soon as the rules allow."""
        if self._shutting_down:
            log.debug("queue shut down; message check for %s dropped", jid)
            return
        group = self._group(jid)
        if group.active:
            group.pending_messages = True
            return
        if self._at_capacity():
            group.pending_messages = True
            self._wait_for_slot(jid)
            self._preempt_an_idle_box(jid)
            return
        self._start_messages(jid, group)

    def enqueue_task(self, jid: str, task_id: str, fn: TaskFn) -> bool:
        """Queue the run of a scheduled task; returns whether it was accepted.

        A task whose id is already running or queued for the group is not accepted twice (the
        scheduler may see it due again before the first run has finished).
        """
        if self._shutting_down:
            log.debug("queue shut down; task %s for %s dropped", task_id, jid)
            return False
        group = self._group(jid)
        if group.running_task_id == task_id or any(t.task_id == task_id for t in group.pending_tasks):
            log.debug("task %s already running or queued for %s", task_id, jid)
            return False
        queued = _QueuedTask(task_id, fn)
        if group.active:
            group.pending_tasks.append(queued)
            if group.idle_waiting:
                # The live box is only waiting for more input: ask it to finish now.
                self.close_stdin(jid)
            return True
        if self._at_capacity():
            group.pending_tasks.append(queued)
            self._wait_for_slot(jid)
            return True
        self._start_task(jid, group, queued)
        return True

    # -- talking to the live box ---------------------------------------------------------------

    def register_box(self, jid: str, folder: str, *, is_task: bool = False) -> None:
        """Record the IPC folder of the box now serving the group (``<ipc_root>/<folder>``)."""
        group = self._group(jid)
        group.folder = check_group_folder(folder)  # it becomes a path under ipc_root
        if is_task:
            group.is_task = True

    def notify_idle(self, jid: str) -> None:
        """The group's box finished a turn and waits for input; preempt it if a task waits."""
        group = self._group(jid)
        group.idle_waiting = True
        if group.pending_tasks or self._someone_waits_for_a_slot(jid):
            self.close_stdin(jid)

    def _someone_waits_for_a_slot(self, jid: str) -> bool:
        return any(other != jid for other in self._waiting)

    def _preempt_an_idle_box(self, waiting_jid: str) -> None:
        """At the cap, a box that only waits for follow-ups gives its slot to a group with work
        (better than the reference, where the newcomer waited for the idle timeout)."""
        for other, state in self._groups.items():
            if other != waiting_jid and state.active and state.idle_waiting and not state.is_task:
                self.close_stdin(other)
                return

    def send_message(self, jid: str, text: str) -> bool:
        """Hand ``text`` to the group's live box as a follow-up; ``False`` if there is none.

        Task boxes refuse follow-ups: a task is a single turn, and a chat message must not be
        answered inside it.
        """
        group = self._groups.get(jid)
        if group is None or not group.active or group.folder is None or group.is_task or group.closing:
            return False
        try:
            write_follow_up(self._ipc_root / group.folder, text)
        except UnsafePath as exc:
            self._report_refused(exc)
            return False
        except OSError as exc:
            log.warning("could not write follow-up for %s: %s", jid, exc)
            return False
        group.idle_waiting = False
        return True

    def close_stdin(self, jid: str) -> None:
        """Ask the group's live box to end after its current turn (writes ``_close``)."""
        group = self._groups.get(jid)
        if group is None or not group.active or group.folder is None:
            return
        group.closing = True
        try:
            request_close(self._ipc_root / group.folder)
        except UnsafePath as exc:
            self._report_refused(exc)
        except OSError as exc:
            log.warning("could not write close signal for %s: %s", jid, exc)

    def _report_refused(self, exc: UnsafePath) -> None:
        # The box planted something in its input folder: nothing was written; say so.
        log.warning("%s", exc)
        if self._on_refused is not None:
            self._on_refused(exc)

    def schedule_close(self, jid: str, delay: float) -> None:
        """Close the group's live box after ``delay`` seconds (re-arming any earlier timer).

        Used for task boxes, which are closed a little while after their result (reference 5.5)
        rather than waiting for the idle timeout. The timer is dropped when the run ends.
        """
        group = self._groups.get(jid)
        if group is None or not group.active:
            return
        if group.close_timer is not None:
            group.close_timer.cancel()
        group.close_timer = asyncio.get_running_loop().call_later(delay, self.close_stdin, jid)

    # -- running -----------------------------------------------------------------------------

    def _claim(self, group: _Group, *, is_task: bool, task_id: str | None) -> None:
        group.active = True
        group.closing = False
        group.idle_waiting = False
        group.is_task = is_task
        group.running_task_id = task_id
        self._active_count += 1

    def _release(self, group: _Group) -> None:
        group.active = False
        group.idle_waiting = False
        group.is_task = False
        group.running_task_id = None
        group.folder = None
        if group.close_timer is not None:
            group.close_timer.cancel()
            group.close_timer = None
        self._active_count -= 1

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = (
            self._spawn_run(coro)
            if self._spawn_run is not None
            else asyncio.get_running_loop().create_task(coro)
        )
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)

    def _start_messages(self, jid: str, group: _Group) -> None:
        group.pending_messages = False
        self._claim(group, is_task=False, task_id=None)
        self._spawn(self._run_messages(jid, group))

    def _start_task(self, jid: str, group: _Group, queued: _QueuedTask) -> None:
        self._claim(group, is_task=True, task_id=queued.task_id)
        self._spawn(self._run_task(jid, group, queued))

    async def _run_messages(self, jid: str, group: _Group) -> None:
        try:
            if self._process_messages is None:
                log.error("no message processor set; messages for %s not processed", jid)
                ok = True
            else:
                ok = await self._process_messages(jid)
        except Exception:
            log.exception("processing messages for %s failed", jid)
            ok = False
        finally:
            self._release(group)
        if ok:
            group.retry_count = 0
        else:
            self._schedule_retry(jid, group)
        self._drain_group(jid, group)

    async def _run_task(self, jid: str, group: _Group, queued: _QueuedTask) -> None:
        try:
            await queued.fn()
        except Exception:
            log.exception("task %s for %s failed", queued.task_id, jid)
        finally:
            self._release(group)
        self._drain_group(jid, group)

    def _schedule_retry(self, jid: str, group: _Group) -> None:
        if self._shutting_down:
            return
        group.retry_count += 1
        if group.retry_count > self._max_retries:
            log.error(
                "messages for %s failed %d retries; dropped until the next message", jid, self._max_retries
            )
            group.retry_count = 0
            return
        delay = self._retry_base * 2 ** (group.retry_count - 1)
        log.info("retrying messages for %s in %gs (retry %d)", jid, delay, group.retry_count)
        if group.retry_timer is not None:
            group.retry_timer.cancel()
        group.retry_timer = asyncio.get_running_loop().call_later(delay, self._retry, jid, group)

    def _retry(self, jid: str, group: _Group) -> None:
        group.retry_timer = None
        self.enqueue_message_check(jid)

    def _drain_group(self, jid: str, group: _Group) -> None:
        """A slot just freed: the group's own work first (tasks, then messages), then others."""
        if self._shutting_down:
            return
        if not group.active and not self._at_capacity():
            if group.pending_tasks:
                self._start_task(jid, group, group.pending_tasks.pop(0))
                return
            if group.pending_messages:
                self._start_messages(jid, group)
                return
        self._drain_waiting()

    def _drain_waiting(self) -> None:
        while self._waiting and not self._at_capacity() and not self._shutting_down:
            jid = self._waiting.pop(0)
            group = self._group(jid)
            if group.active:
                continue  # its pending work is drained when its own run ends
            if group.pending_tasks:
                self._start_task(jid, group, group.pending_tasks.pop(0))
            elif group.pending_messages:
                self._start_messages(jid, group)

    # -- shutdown ----------------------------------------------------------------------------

    async def shutdown(self, grace: float = 10.0, *, cancel: bool = False) -> None:
        """Stop taking work; give running callbacks up to ``grace`` seconds, then detach them, or
        with ``cancel`` cancel them and wait for their (bounded) teardown.

        Detached boxes are not killed or cancelled here: they end through their own idle or hard
        timeout and are cleaned up by their run. Queued and retrying work is dropped.
        """
        self._shutting_down = True
        self._waiting.clear()
        for jid, group in self._groups.items():
            if group.retry_timer is not None:
                group.retry_timer.cancel()
                group.retry_timer = None
            group.pending_tasks.clear()
            group.pending_messages = False
            if group.active and not cancel:
                log.info("detaching live run for %s (folder %s)", jid, group.folder)
        running = [t for t in self._runs if not t.done()]
        if running and grace > 0:
            _, still = await asyncio.wait(running, timeout=grace)
            running = list(still)
        if running and cancel:
            log.info("stopping %d live run(s)", len(running))
            for run in running:
                run.cancel()
            # Each run's teardown is bounded (TERM, a wait, KILL; see agentlite.box.lifecycle).
            await asyncio.gather(*running, return_exceptions=True)
        elif running:
            log.info("%d run(s) still going after %gs; left detached", len(running), grace)
