"""GroupQueue rules (reference 5.6 and the group-queue suite), driven by fake async callbacks.

No boxes: the "runs" are coroutines that wait on events the test controls, and follow-ups and close
signals are checked as the files the queue writes under ``<ipc_root>/<folder>/input/``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agentlite.core.errors import ConfigError
from agentlite.core.safefs import UnsafePath
from agentlite.platform.queue import GroupQueue
from conftest import until


async def settle() -> None:
    """Let every ready callback run (a few loop turns)."""
    for _ in range(5):
        await asyncio.sleep(0)


class Gate:
    """Fake runs: each call records itself and blocks until the test opens its gate."""

    def __init__(self, result: bool = True) -> None:
        self.calls: list[str] = []
        self.running: set[str] = set()
        self.max_parallel = 0
        self.gates: dict[str, asyncio.Event] = {}
        self.result = result

    def gate(self, key: str) -> asyncio.Event:
        return self.gates.setdefault(key, asyncio.Event())

    async def run(self, key: str) -> bool:
        self.calls.append(key)
        self.running.add(key)
        self.max_parallel = max(self.max_parallel, len(self.running))
        try:
            await self.gate(key).wait()
        finally:
            self.running.discard(key)
        self.gates.pop(key, None)  # the next run of the same key waits for a fresh gate
        return self.result

    async def process(self, jid: str) -> bool:
        return await self.run(f"msg:{jid}")

    def task(self, jid: str, task_id: str) -> Callable[[], object]:
        async def fn() -> None:
            await self.run(f"task:{task_id}")

        return fn

    def release(self, key: str) -> None:
        self.gate(key).set()


def instant_retries(loop: asyncio.AbstractEventLoop, delays: list[float]) -> Callable[..., asyncio.Handle]:
    """A ``call_later`` that records the queue's retry delays and fires retries at once."""
    real = loop.call_later

    def call_later(delay: float, callback: Callable[..., object], *args: object) -> asyncio.Handle:
        if getattr(callback, "__name__", "") == "_retry":
            delays.append(delay)
            return loop.call_soon(callback, *args)
        return real(delay, callback, *args)

    return call_later


@pytest.fixture
def ipc(tmp_path: Path) -> Path:
    return tmp_path / "ipc"


def close_file(ipc: Path, folder: str) -> Path:
    return ipc / folder / "input" / "_close"


def follow_ups(ipc: Path, folder: str) -> list[str]:
    folder_path = ipc / folder / "input"
    if not folder_path.exists():
        return []
    return [json.loads(p.read_text())["text"] for p in sorted(folder_path.glob("*.json"))]


async def test_one_run_per_group(ipc: Path) -> None:
    q = GroupQueue(ipc_root=ipc)
    g = Gate()
    q.set_process_messages(g.process)
    q.enqueue_message_check("a")
    q.enqueue_message_check("a")
    q.enqueue_message_check("a")
    await until(lambda: g.calls == ["msg:a"])
    assert q.is_active("a") and q.active_count == 1
    g.release("msg:a")
    # The checks that came in while it ran collapse into one follow-up run.
    await until(lambda: g.calls == ["msg:a", "msg:a"] and "msg:a" in g.running)
    g.release("msg:a")
    await until(lambda: not q.is_active("a"))
    await settle()
    assert g.calls == ["msg:a", "msg:a"]
    assert g.max_parallel == 1
    assert q.active_count == 0


async def test_global_cap_and_waiting_groups_drained_in_order(ipc: Path) -> None:
    q = GroupQueue(ipc_root=ipc, max_concurrent=2)
    g = Gate()
    q.set_process_messages(g.process)
    for jid in ("a", "b", "c", "d"):
        q.enqueue_message_check(jid)
    await until(lambda: len(g.running) == 2)
    assert g.calls == ["msg:a", "msg:b"]
    assert q.active_count == 2 and not q.is_active("c")
    g.release("msg:b")
    await until(lambda: "msg:c" in g.running)  # first waiting group gets the freed slot
    assert q.active_count == 2 and not q.is_active("d")
    g.release("msg:a")
    await until(lambda: "msg:d" in g.running)
    g.release("msg:c")
    g.release("msg:d")
    await until(lambda: q.active_count == 0)
    assert g.calls == ["msg:a", "msg:b", "msg:c", "msg:d"]
    assert g.max_parallel == 2


async def test_max_concurrent_is_at_least_one(ipc: Path) -> None:
    q = GroupQueue(ipc_root=ipc, max_concurrent=0)
    g = Gate()
    q.set_process_messages(g.process)
    q.enqueue_message_check("a")
    q.enqueue_message_check("b")
    await until(lambda: g.calls == ["msg:a"])
    await settle()
    assert q.max_concurrent == 1 and g.calls == ["msg:a"]
    g.release("msg:a")
    await until(lambda: "msg:b" in g.running)
    g.release("msg:b")
    await until(lambda: q.active_count == 0)


async def test_tasks_drain_before_messages(ipc: Path) -> None:
    q = GroupQueue(ipc_root=ipc)
    g = Gate()
    q.set_process_messages(g.process)
    q.enqueue_message_check("a")
    await until(lambda: "msg:a" in g.running)
    q.enqueue_message_check("a")  # pending messages
    assert q.enqueue_task("a", "t1", g.task("a", "t1"))
    assert q.enqueue_task("a", "t2", g.task("a", "t2"))
    assert (q.queued_tasks("a"), q.queued_tasks("elsewhere")) == (2, 0)
    g.release("msg:a")
    await until(lambda: "task:t1" in g.running)
    assert q.queued_tasks("a") == 1
    g.release("task:t1")
    await until(lambda: "task:t2" in g.running)
    assert q.queued_tasks("a") == 0
    g.release("task:t2")
    await until(lambda: "msg:a" in g.running)
    g.release("msg:a")
    await until(lambda: q.active_count == 0)
    assert g.calls == ["msg:a", "task:t1", "task:t2", "msg:a"]


async def test_waiting_group_runs_its_tasks_before_its_messages(ipc: Path) -> None:
    q = GroupQueue(ipc_root=ipc, max_concurrent=1)
    g = Gate()
    q.set_process_messages(g.process)
    q.enqueue_message_check("a")
    await until(lambda: "msg:a" in g.running)
    q.enqueue_message_check("b")
    q.enqueue_task("b", "tb", g.task("b", "tb"))
    g.release("msg:a")
    await until(lambda: "task:tb" in g.running)
    g.release("task:tb")
    await until(lambda: "msg:b" in g.running)
    g.release("msg:b")
    await until(lambda: q.active_count == 0)
    assert g.calls == ["msg:a", "task:tb", "msg:b"]


async def test_retry_backoff_doubles_from_the_base_then_gives_up(
    ipc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    q = GroupQueue(ipc_root=ipc)  # the default base: 5 s
    calls: list[str] = []

    async def failing(jid: str) -> bool:
        calls.append(jid)
        return False

    q.set_process_messages(failing)
    loop = asyncio.get_running_loop()
    delays: list[float] = []

    monkeypatch.setattr(loop, "call_later", instant_retries(loop, delays))
    q.enqueue_message_check("a")
    await until(lambda: len(calls) == 6 and q.active_count == 0)
    await settle()
    assert delays == [5.0, 10.0, 20.0, 40.0, 80.0]
    assert len(calls) == 6  # the first attempt plus five retries, then dropped


async def test_retries_really_wait_and_reset_after_giving_up(ipc: Path) -> None:
    base = 0.004
    q = GroupQueue(ipc_root=ipc, retry_base=base)
    stamps: list[float] = []

    async def failing(jid: str) -> bool:
        stamps.append(time.monotonic())
        raise RuntimeError("box failed")  # an exception counts as a failure too

    q.set_process_messages(failing)
    q.enqueue_message_check("a")
    await until(lambda: len(stamps) == 6, timeout=2.0)
    await asyncio.sleep(base * 40)
    assert len(stamps) == 6
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    for n, gap in enumerate(gaps, start=1):
        assert gap >= base * 2 ** (n - 1) * 0.9
    # The next inbound message starts a fresh cycle.
    q.enqueue_message_check("a")
    await until(lambda: len(stamps) >= 8, timeout=2.0)
    await q.shutdown(grace=0)


async def test_success_resets_the_retry_count(ipc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    q = GroupQueue(ipc_root=ipc, retry_base=1.0)
    outcomes = itertools.chain([False, False, True, False], itertools.repeat(True))
    calls: list[str] = []

    async def process(jid: str) -> bool:
        calls.append(jid)
        return next(outcomes)

    q.set_process_messages(process)
    loop = asyncio.get_running_loop()
    delays: list[float] = []

    monkeypatch.setattr(loop, "call_later", instant_retries(loop, delays))
    q.enqueue_message_check("a")
    await until(lambda: len(calls) == 3 and q.active_count == 0)
    q.enqueue_message_check("a")  # a new message after the success: fails once
    await until(lambda: len(calls) == 5 and q.active_count == 0)
    assert delays == [1.0, 2.0, 1.0]
    await q.shutdown(grace=0)


async def test_nothing_is_enqueued_after_shutdown(ipc: Path) -> None:
    q = GroupQueue(ipc_root=ipc)
    g = Gate()
    q.set_process_messages(g.process)
    await q.shutdown(grace=0)
    q.enqueue_message_check("a")
    assert not q.enqueue_task("a", "t1", g.task("a", "t1"))
    await settle()
    assert g.calls == [] and q.active_count == 0 and q.shutting_down


async def test_shutdown_detaches_running_work_after_grace(ipc: Path) -> None:
    q = GroupQueue(ipc_root=ipc)
    g = Gate()
    q.set_process_messages(g.process)
    q.enqueue_message_check("a")
    q.enqueue_task("b", "t1", g.task("b", "t1"))
    await until(lambda: len(g.running) == 2)
    q.enqueue_task("b", "t2", g.task("b", "t2"))  # queued behind t1: dropped by shutdown
    started = time.monotonic()
    await q.shutdown(grace=0.05)
    assert time.monotonic() - started >= 0.045
    # Not cancelled: the runs are still going and finish on their own.
    assert g.running == {"msg:a", "task:t1"} and q.is_active("a")
    g.release("msg:a")
    g.release("task:t1")
    await until(lambda: q.active_count == 0)
    await settle()
    assert g.calls == ["msg:a", "task:t1"]


async def test_shutdown_returns_early_when_runs_finish(ipc: Path) -> None:
    q = GroupQueue(ipc_root=ipc)
    g = Gate()
    q.set_process_messages(g.process)
    q.enqueue_message_check("a")
    await until(lambda: "msg:a" in g.running)
    asyncio.get_running_loop().call_later(0.01, g.release, "msg:a")
    # A grace ten times the wait: returning at all means it returned when the run ended.
    await asyncio.wait_for(q.shutdown(grace=600.0), 60)
    assert q.active_count == 0 and g.calls == ["msg:a"]


async def test_running_or_queued_task_is_not_enqueued_twice(ipc: Path) -> None:
    q = GroupQueue(ipc_root=ipc)
    g = Gate()
    q.set_process_messages(g.process)
    assert q.enqueue_task("a", "t1", g.task("a", "t1"))
    await until(lambda: "task:t1" in g.running)
    assert not q.enqueue_task("a", "t1", g.task("a", "t1"))  # running
    assert q.enqueue_task("a", "t2", g.task("a", "t2"))
    assert not q.enqueue_task("a", "t2", g.task("a", "t2"))  # queued
    g.release("task:t1")
    await until(lambda: "task:t2" in g.running)
    g.release("task:t2")
    await until(lambda: q.active_count == 0)
    await settle()
    assert g.calls == ["task:t1", "task:t2"]
    # Once finished, the same id may run again (its next slot).
    assert q.enqueue_task("a", "t1", g.task("a", "t1"))
    await until(lambda: "task:t1" in g.running)
    g.release("task:t1")
    await until(lambda: q.active_count == 0)


async def test_failing_task_does_not_block_the_group(ipc: Path) -> None:
    q = GroupQueue(ipc_root=ipc)
    g = Gate()
    q.set_process_messages(g.process)

    async def broken() -> None:
        raise RuntimeError("task blew up")

    q.enqueue_task("a", "bad", broken)
    q.enqueue_message_check("a")
    await until(lambda: "msg:a" in g.running)
    g.release("msg:a")
    await until(lambda: q.active_count == 0)


class TestIdlePreemption:
    async def start_message_run(self, ipc: Path) -> tuple[GroupQueue, Gate]:
        q = GroupQueue(ipc_root=ipc)
        g = Gate()
        q.set_process_messages(g.process)
        q.enqueue_message_check("a")
        await until(lambda: "msg:a" in g.running)
        q.register_box("a", "fa")
        return q, g

    async def finish(self, q: GroupQueue, g: Gate) -> None:
        def drained() -> bool:
            for key in list(g.running):
                g.release(key)
            return q.active_count == 0

        await until(drained)

    async def test_task_for_busy_group_does_not_preempt(self, ipc: Path) -> None:
        q, g = await self.start_message_run(ipc)
        q.enqueue_task("a", "t1", g.task("a", "t1"))
        assert not close_file(ipc, "fa").exists()
        await self.finish(q, g)

    async def test_task_for_idle_group_closes_its_stdin(self, ipc: Path) -> None:
        q, g = await self.start_message_run(ipc)
        q.notify_idle("a")
        assert not close_file(ipc, "fa").exists()  # idle alone does not close
        q.enqueue_task("a", "t1", g.task("a", "t1"))
        assert close_file(ipc, "fa").exists()
        g.release("msg:a")
        await until(lambda: "task:t1" in g.running)
        g.release("task:t1")
        await until(lambda: q.active_count == 0)

    async def test_going_idle_with_a_pending_task_closes_stdin(self, ipc: Path) -> None:
        q, g = await self.start_message_run(ipc)
        q.enqueue_task("a", "t1", g.task("a", "t1"))
        assert not close_file(ipc, "fa").exists()
        q.notify_idle("a")
        assert close_file(ipc, "fa").exists()
        await self.finish(q, g)

    async def test_follow_up_message_clears_idle_state(self, ipc: Path) -> None:
        q, g = await self.start_message_run(ipc)
        q.notify_idle("a")
        assert q.send_message("a", "one more thing")
        q.enqueue_task("a", "t1", g.task("a", "t1"))
        assert not close_file(ipc, "fa").exists()
        assert follow_ups(ipc, "fa") == ["one more thing"]
        await self.finish(q, g)

    async def test_message_check_for_idle_group_does_not_preempt(self, ipc: Path) -> None:
        q, g = await self.start_message_run(ipc)
        q.notify_idle("a")
        q.enqueue_message_check("a")
        assert not close_file(ipc, "fa").exists()
        await self.finish(q, g)


async def test_send_message_writes_a_follow_up_into_the_live_box(ipc: Path) -> None:
    q = GroupQueue(ipc_root=ipc)
    g = Gate()
    q.set_process_messages(g.process)
    assert not q.send_message("a", "nobody there")  # no active group
    q.enqueue_message_check("a")
    await until(lambda: "msg:a" in g.running)
    assert not q.send_message("a", "no box yet")  # active, but no box registered
    q.register_box("a", "fa")
    assert q.send_message("a", "hello <there>")
    assert follow_ups(ipc, "fa") == ["hello <there>"]
    g.release("msg:a")
    await until(lambda: q.active_count == 0)
    assert not q.send_message("a", "too late")  # the run ended; its box is gone


async def test_task_box_refuses_follow_up_messages(ipc: Path) -> None:
    q = GroupQueue(ipc_root=ipc)
    g = Gate()
    q.set_process_messages(g.process)
    q.enqueue_task("a", "t1", g.task("a", "t1"))
    await until(lambda: "task:t1" in g.running)
    q.register_box("a", "fa", is_task=True)
    assert not q.send_message("a", "hi")
    assert follow_ups(ipc, "fa") == []
    # The caller then queues a message check; it runs after the task.
    q.enqueue_message_check("a")
    g.release("task:t1")
    await until(lambda: "msg:a" in g.running)
    q.register_box("a", "fa")
    assert q.send_message("a", "now it works")
    g.release("msg:a")
    await until(lambda: q.active_count == 0)


async def test_close_stdin_only_for_an_active_group(ipc: Path) -> None:
    q = GroupQueue(ipc_root=ipc)
    g = Gate()
    q.set_process_messages(g.process)
    q.close_stdin("a")
    assert not (ipc / "fa").exists()
    q.enqueue_message_check("a")
    await until(lambda: "msg:a" in g.running)
    q.register_box("a", "fa")
    q.close_stdin("a")
    assert close_file(ipc, "fa").exists()
    g.release("msg:a")
    await until(lambda: q.active_count == 0)


async def test_schedule_close_fires_after_the_delay_and_is_dropped_at_run_end(ipc: Path) -> None:
    q = GroupQueue(ipc_root=ipc)
    g = Gate()
    q.set_process_messages(g.process)
    q.enqueue_task("a", "t1", g.task("a", "t1"))
    await until(lambda: "task:t1" in g.running)
    q.register_box("a", "fa", is_task=True)
    q.schedule_close("a", 0.02)
    assert not close_file(ipc, "fa").exists()
    await until(lambda: close_file(ipc, "fa").exists())
    close_file(ipc, "fa").unlink()
    q.schedule_close("a", 0.02)
    g.release("task:t1")
    await until(lambda: q.active_count == 0)
    await asyncio.sleep(0.05)
    assert not close_file(ipc, "fa").exists()


@pytest.mark.parametrize("folder", ["", ".", "..", "a/b", "..\\x"])
def test_register_box_refuses_unsafe_folders(ipc: Path, folder: str) -> None:
    q = GroupQueue(ipc_root=ipc)
    with pytest.raises(ConfigError, match="`"):
        q.register_box("a", folder)


def test_rejects_negative_retry_settings(ipc: Path) -> None:
    with pytest.raises(ConfigError, match=r"`-1\.0`"):
        GroupQueue(ipc_root=ipc, retry_base=-1.0)
    with pytest.raises(ConfigError, match="`-2`"):
        GroupQueue(ipc_root=ipc, max_retries=-2)


async def test_at_the_cap_an_idle_box_gives_its_slot_to_a_waiting_group(tmp_path: Path) -> None:
    """Better than the reference: a newcomer does not wait for another group's idle timeout."""
    queue = GroupQueue(max_concurrent=1, ipc_root=tmp_path)
    release = asyncio.Event()
    started: list[str] = []

    async def process(jid: str) -> bool:
        started.append(jid)
        queue.register_box(jid, jid.split(":")[1])
        if jid == "t:a":
            queue.notify_idle(jid)
            await release.wait()
        return True

    queue.set_process_messages(process)
    queue.enqueue_message_check("t:a")
    await asyncio.sleep(0.05)
    queue.enqueue_message_check("t:b")
    assert (tmp_path / "a" / "input" / "_close").exists()  # the idle box was asked to end
    release.set()
    await asyncio.sleep(0.05)
    assert started == ["t:a", "t:b"]
    await queue.shutdown(0.1)


async def test_a_closing_box_takes_no_follow_ups(tmp_path: Path) -> None:
    """After ``_close`` the runner ends; a follow-up written then would never be read."""
    queue = GroupQueue(max_concurrent=2, ipc_root=tmp_path)
    release = asyncio.Event()

    async def process(jid: str) -> bool:
        queue.register_box(jid, "a")
        await release.wait()
        return True

    queue.set_process_messages(process)
    queue.enqueue_message_check("t:a")
    await asyncio.sleep(0.05)
    assert queue.send_message("t:a", "first follow-up")
    queue.close_stdin("t:a")
    assert not queue.send_message("t:a", "too late")
    release.set()
    await queue.shutdown(0.1)


async def test_a_symlinked_input_folder_gets_no_follow_up_and_no_close(ipc: Path, tmp_path: Path) -> None:
    host_folder = tmp_path / "host-folder"
    host_folder.mkdir()
    (ipc / "fa").mkdir(parents=True, exist_ok=True)
    os.symlink(host_folder, ipc / "fa" / "input")  # what a box can do to its own IPC folder
    refused: list[UnsafePath] = []
    q = GroupQueue(ipc_root=ipc, on_refused=refused.append)
    g = Gate()
    q.set_process_messages(g.process)
    q.enqueue_message_check("a")
    await until(lambda: "msg:a" in g.running)
    q.register_box("a", "fa")
    assert not q.send_message("a", "hello")  # not a silent success
    q.close_stdin("a")
    assert os.listdir(host_folder) == []
    assert [(Path(e.path).name, e.reason) for e in refused] == [("input", "is a symlink")] * 2
    g.release("msg:a")
    await until(lambda: q.active_count == 0)
