"""The supervisor that owns an agent's background work: failures are contained, cancellation is
never swallowed, close stops what is left, and an agent's stop leaves none of its tasks behind."""

from __future__ import annotations

import asyncio
import logging

import pytest

from agentlite.core.supervisor import Supervisor, SupervisorClosed


async def test_a_failing_task_is_logged_and_its_siblings_go_on(caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor("t")
    await supervisor.start()
    sibling_done = asyncio.Event()

    async def fails() -> None:
        raise RuntimeError("boom")

    async def sibling() -> None:
        await asyncio.sleep(0)
        sibling_done.set()

    with caplog.at_level(logging.ERROR, logger="agentlite.supervisor"):
        failing = supervisor.spawn(fails(), name="fails")
        supervisor.spawn(sibling(), name="sibling")
        await asyncio.wait_for(sibling_done.wait(), 10)
        await asyncio.wait_for(asyncio.shield(failing), 10)
    assert any("background task fails failed" in r.getMessage() for r in caplog.records)
    assert supervisor.running
    await supervisor.aclose()


async def test_close_cancels_what_is_left_and_waits_for_its_cleanup() -> None:
    supervisor = Supervisor("t")
    await supervisor.start()
    started, cleaned = asyncio.Event(), asyncio.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits
            cleaned.set()

    task = supervisor.spawn(forever(), name="forever")
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.wait_for(supervisor.aclose(), 10)
    assert cleaned.is_set() and task.cancelled()
    assert supervisor.tasks() == []
    with pytest.raises(SupervisorClosed):
        supervisor.spawn(asyncio.sleep(0), name="late")


async def test_cancelling_the_closer_is_not_swallowed() -> None:
    supervisor = Supervisor("t")
    await supervisor.start()
    release = asyncio.Event()

    async def slow_cleanup() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()

    supervisor.spawn(slow_cleanup(), name="slow")
    await asyncio.sleep(0)
    closer = asyncio.create_task(supervisor.aclose())
    await asyncio.sleep(0)
    closer.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await closer
