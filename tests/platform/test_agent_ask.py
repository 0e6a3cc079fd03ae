"""``Agent.ask``: one turn through the group queue and the turn pipeline, its one ``TurnResult``,
the group's session kept in the agent's store, and a stop that settles a turn still running.
Real SQLite files, real sandbox boxes, the real codex against the built-in model server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import agentlite
from agentlite.box.base import BoxInfo, BoxSpec
from agentlite.box.ownership import RecordStore
from agentlite.box.sandbox import SandboxRuntime
from agentlite.core.errors import BoxError
from agentlite.platform.app import AgentLite
from agentlite.testing import ModelServer
from conftest import needs_codex, until

pytestmark = needs_codex


async def started_agent(workdir: Path, model: ModelServer) -> tuple[agentlite.AgentLite, agentlite.Agent]:
    platform = await agentlite.create(workdir=workdir, runtime="sandbox")
    agent = await platform.create_agent("a", backend={"type": "codex", "base_url": model.openai_base_url})
    await agent.start()
    agent.register_group("q:one", name="one", folder="one", requires_trigger=False)
    return platform, agent


def agent_tasks(agent_id: str) -> list[asyncio.Task]:
    """The tasks still running under the agent's supervisor (named `agent-<id>:...`)."""
    return [t for t in asyncio.all_tasks() if not t.done() and t.get_name().startswith(f"agent-{agent_id}:")]


async def test_ask_returns_one_result_and_the_next_turn_resumes_its_session(
    tmp_path: Path, model: ModelServer
) -> None:
    platform, agent = await started_agent(tmp_path / "data", model)
    seen: list[str] = []
    first = await agent.ask("q:one", "hello", on_event=lambda e: seen.append(e.type), request_id="r1")
    assert (first.id, first.status, first.result) == ("r1", "success", "hi from the offline model")
    assert first.session_id and agent.store.get_session("one", "codex") == first.session_id
    assert first.timings is not None and first.timings.run_s > 0
    assert seen[-1] == "state" and "result" in seen
    second = await agent.ask("q:one", "again")
    assert second.status == "success" and second.session_id == first.session_id
    line = second.line()
    assert line["type"] == "final" and line["session_id"] == first.session_id
    names = {t.get_name().split(":", 1)[1] for t in agent_tasks(agent.id)}
    assert {f"agentlite-loop-{agent.id}", "agentlite-scheduler", "agentlite-ipc-watcher"} <= names
    await platform.close()
    assert agent_tasks(agent.id) == []


async def test_stop_settles_a_running_ask_and_leaves_no_box_and_no_task(
    tmp_path: Path, model: ModelServer
) -> None:
    platform, agent = await started_agent(tmp_path / "data", model)
    asking = asyncio.create_task(agent.ask("q:one", "wait [scenario:hang]"))
    await until(lambda: asking.done() or any(r.scenario == "hang" for r in model.requests), "the model call")
    assert not asking.done(), asking.result()
    queued = asyncio.create_task(agent.ask("q:one", "never runs"))
    await until(lambda: agent.queued_turns("q:one") == 1, "the second ask in the group's queue")
    await agent.stop(reason="shutting down", grace=0)
    running, waiting = await asyncio.wait_for(asyncio.gather(asking, queued), 60)
    assert (running.status, running.error) == ("error", "shutting down")
    assert (waiting.status, waiting.error) == ("error", "shutting down")
    assert agent_tasks(agent.id) == []
    assert await SandboxRuntime(platform.box_home).list() == []
    assert RecordStore(platform.box_home).record_names() == []
    await platform.close()


class FailingCreates(SandboxRuntime):
    """The real sandbox, whose first ``failures`` box creations fail (a host short of resources)."""

    failures = 0
    creates = 0

    async def create(self, name: str, spec: BoxSpec) -> BoxInfo:
        self.creates += 1
        if self.creates <= self.failures:
            raise BoxError(name, f"no room for a box (attempt {self.creates})")
        return await super().create(name, spec)


@pytest.mark.parametrize(
    ("failures", "status"), [(2, "success"), (99, "error")], ids=["recovers", "gives-up"]
)
async def test_a_turn_whose_box_cannot_start_is_retried_then_fails_clearly(
    tmp_path: Path, model: ModelServer, failures: int, status: str
) -> None:
    box_home = tmp_path / "boxes"
    runtime = FailingCreates(box_home)
    runtime.failures = failures
    platform = AgentLite(tmp_path / "data", timezone="UTC", runtime=runtime, max_concurrent=2, box_timeout=300,
                         idle_timeout=300, box_home=box_home)  # fmt: skip
    platform.retry_base = 0.05
    agent = await platform.create_agent("a", backend={"type": "codex", "base_url": model.openai_base_url})
    await agent.start()
    agent.register_group("q:one", name="one", folder="one", requires_trigger=False)
    result = await agent.ask("q:one", "hello")
    assert result.status == status, result
    if status == "success":
        assert runtime.creates == failures + 1 and result.result == "hi from the offline model"
    else:
        assert runtime.creates == 1 + 5  # the first try and the queue's five retries
        assert result.error == "BoxError: no room for a box (attempt 6)"
    await platform.close()
    assert await SandboxRuntime(box_home).list() == [] and RecordStore(box_home).record_names() == []
