"""Regression tests for behaviour bugs of the platform found while using it: each one through a real
platform (SQLite store, sandbox boxes, the real codex CLI against the offline model on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import agentlite
from agentlite.box.ownership import RecordStore
from agentlite.run.retry import RetryPolicy
from agentlite.testing.model_server import ModelServer
from conftest import needs_codex

sys.path.insert(0, str(Path(__file__).parent))
from test_platform import started

pytestmark = needs_codex


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[agentlite.AgentLite]:
    async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox", timezone="UTC",
                                      idle_timeout=20, scheduler_poll_interval=0.3) as p:  # fmt: skip
        p.retry_base = 0.2
        yield p
    assert RecordStore(tmp_path / "data" / ".boxlite").record_names() == []  # no box left


async def wait_for(condition: Any, what: str, timeout: float = 60.0) -> None:
    """Poll ``condition()`` until it is true or ``timeout`` passes (then fail naming ``what``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_failed_run_emits_run_error_with_the_error_text(
    platform: agentlite.AgentLite, model: ModelServer
) -> None:
    agent, _channel = await started(platform, model)
    agent.retry_policy = RetryPolicy(max_retries=0)  # one failed attempt is the whole turn
    agent.register_group("t:main", name="main", folder="main", is_main=True)
    model.scenario = "error500"
    errors: list[dict[str, Any]] = []
    agent.on("run.error", lambda e: errors.append(e.data))
    result = await agent.ask("t:main", "hello")
    assert result.status == "error" and result.error
    await wait_for(lambda: errors, "a run.error event")
    assert errors[0]["jid"] == "t:main" and errors[0]["folder"] == "main"
    assert errors[0]["error"] == result.error and "Codex exited with code 1" in errors[0]["error"]
    assert errors[0]["run_id"]
    await agent.stop()
