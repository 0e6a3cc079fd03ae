"""A host restart is a pause: real host processes (the platform with a chat channel) killed with
SIGKILL mid-turn, real sandbox boxes that run on, the real codex CLI against the scripted model on
127.0.0.1 (slow turns through its ``delay``). Each host prints the replies it sent as JSON."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentlite.box.ownership import RecordStore
from agentlite.box.sandbox import SandboxRuntime
from agentlite.platform.store import AgentStore
from agentlite.testing import ModelServer
from conftest import ScriptedHost, needs_agent_clis, until

pytestmark = needs_agent_clis("codex")

REPLY = "hi from the offline model"

#: One host: the platform, agent `svc` with the codex backend and a recording channel. `send` says
#: one message; every host runs until it sent `expect` replies and the agent has no unfinished run
#: and no box record is left, then prints its replies. KILL_ON_SEND: SIGKILL itself in the
#: channel's send (the final is in the ledger, not yet delivered).
HOST_SCRIPT = """
import asyncio, json, logging, os, signal, sys
import agentlite
from agentlite.box.ownership import RecordStore
from agentlite.testing.channels import RecordingChannel

logging.basicConfig(level=logging.INFO, stream=sys.stderr)

def kill_self(chat_id, text):
    os.kill(os.getpid(), signal.SIGKILL)

async def main():
    mode, expect = sys.argv[1], int(sys.argv[2])
    platform = await agentlite.create(workdir={workdir!r}, runtime="sandbox", idle_timeout=30)
    holder = {{}}
    def factory(config):
        holder["c"] = RecordingChannel(config, before_send=kill_self if os.environ.get("KILL_ON_SEND") == "1" else None)
        return holder["c"]
    agent = await platform.get_or_create_agent("svc", backend={{"type": "codex", "base_url": {base_url!r},
                                               "max_retries": 0}}, channels={{"test": factory}})
    await agent.start()
    if "t:main" not in agent.registered_groups():
        agent.register_group("t:main", name="main", folder="main", is_main=True)
    if mode in ("send", "late"):
        await holder["c"].say("t:main", "please answer this" if mode == "send" else "and this too")
    print("ready", flush=True)
    records = RecordStore({workdir!r} + "/.boxlite")
    while (len(holder["c"].sent) < expect or agent.store.runs.unfinished() or records.record_names()
           or not agent.store.runs.list()):
        await asyncio.sleep(0.1)
    print(json.dumps([text for _, text in holder["c"].sent]), flush=True)
    await platform.close()

asyncio.run(main())
"""


@pytest.fixture(autouse=True)
async def no_box_outlives_the_test(tmp_path: Path) -> AsyncIterator[None]:
    """A failing scenario leaves its killed host's box adoptable on purpose; remove it after."""
    yield
    home = tmp_path / "data" / ".boxlite"
    if home.is_dir():
        runtime = SandboxRuntime(home)
        for box in await runtime.list():
            await runtime.remove(box.name, force=True)


@pytest.fixture
async def model() -> AsyncIterator[ModelServer]:
    async with ModelServer(scenario="text") as server:
        yield server


class Host(ScriptedHost):
    """One host process on the shared workdir."""

    @classmethod
    async def start(cls, tmp_path: Path, model: ModelServer, mode: str, expect: int, name: str,
                    **env: str) -> Host:  # fmt: skip
        script = tmp_path / "host.py"
        if not script.exists():
            script.write_text(HOST_SCRIPT.format(workdir=str(tmp_path / "data"),
                                                 base_url=model.openai_base_url))  # fmt: skip
        return await cls.launch(script, mode, str(expect), log=tmp_path / f"{name}.log", env=env)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "agentlite", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=True)  # fmt: skip


def model_calls(model: ModelServer) -> int:
    return sum(1 for r in model.requests if r.path == "/v1/responses")


def ledger(tmp_path: Path) -> list[Any]:
    [agent_dir] = [
        p for p in (tmp_path / "data" / "agents").iterdir() if (p / "store" / "messages.db").exists()
    ]
    with AgentStore(agent_dir / "store" / "messages.db") as store:
        return store.runs.list()


async def nothing_left(tmp_path: Path) -> None:
    assert [b.name for b in await SandboxRuntime(tmp_path / "data" / ".boxlite").list()] == []
    assert RecordStore(tmp_path / "data" / ".boxlite").record_names() == []


async def test_a_host_killed_mid_turn_is_replaced_by_one_that_adopts_the_box(tmp_path: Path,
                                                                             model: ModelServer) -> None:  # fmt: skip
    model.delay = 10.0  # a 10 s turn
    first = await Host.start(tmp_path, model, "send", 1, "first")
    await until(lambda: model_calls(model) == 1, "the turn's model call")
    await asyncio.sleep(2.0)  # the scenario itself: the kill lands 2 s into the turn
    await first.kill()
    model.delay = 0.0
    # While no host runs: listed as adoptable, and a cleanup keeps it for the agent's next start.
    [run] = ledger(tmp_path)
    home = str(tmp_path / "data" / ".boxlite")
    [row] = json.loads(_cli("boxes", "--home", home, "--json").stdout)
    assert row["name"] == run.box and row["adoptable_run"] == run.run_id
    assert "adoptable" in _cli("boxes", "--home", home).stdout
    [decision] = json.loads(_cli("cleanup", "--dry-run", "--home", home, "--json").stdout)
    assert decision["action"] == "keep" and f"adoptable (run {run.run_id}" in decision["reason"]
    second = await Host.start(tmp_path, model, "wait", 1, "second")
    assert await second.replies() == [REPLY]  # exactly one reply, the model's last message
    assert model_calls(model) == 1  # the turn ran once: not a second turn
    [run] = ledger(tmp_path)
    assert run.state == "delivered" and run.final_text == REPLY
    assert run.final_usage is not None and run.final_usage["output_tokens"] > 0  # read from the journal
    assert " adopt: box " in second.log.read_text()
    await nothing_left(tmp_path)


async def test_a_host_killed_between_the_ledger_and_the_chat_delivers_once_after_restart(
    tmp_path: Path, model: ModelServer
) -> None:
    first = await Host.start(tmp_path, model, "send", 1, "first", KILL_ON_SEND="1")
    assert await first.proc.wait() == -signal.SIGKILL  # killed in the channel's send
    [run] = ledger(tmp_path)
    assert run.state == "final_ready" and run.final_text == REPLY
    second = await Host.start(tmp_path, model, "wait", 1, "second")
    assert await second.replies() == [REPLY]
    assert model_calls(model) == 1
    [run] = ledger(tmp_path)
    assert run.state == "delivered"
    await nothing_left(tmp_path)


async def test_host_and_box_killed_the_run_is_abandoned_and_a_new_run_answers_once(tmp_path: Path,
                                                                                  model: ModelServer) -> None:  # fmt: skip
    model.delay = 10.0
    first = await Host.start(tmp_path, model, "send", 1, "first")
    await until(lambda: model_calls(model) == 1, "the turn's model call")
    await first.kill()
    [run] = ledger(tmp_path)
    assert run.box is not None
    await SandboxRuntime(tmp_path / "data" / ".boxlite").stop(run.box)
    model.delay = 0.0
    second = await Host.start(tmp_path, model, "wait", 1, "second")
    assert await second.replies() == [REPLY]
    first_run, second_run = ledger(tmp_path)
    assert first_run.run_id == run.run_id and first_run.state == "abandoned"
    assert second_run.state == "delivered" and second_run.final_text == REPLY
    assert model_calls(model) == 2  # the interrupted call, then the new run's
    await nothing_left(tmp_path)


async def test_a_superseded_copys_late_final_is_refused(tmp_path: Path, model: ModelServer) -> None:
    model.delay = 6.0
    first = await Host.start(tmp_path, model, "send", 0, "first")
    await until(lambda: model_calls(model) == 1, "the turn's model call")
    first.proc.send_signal(signal.SIGSTOP)  # paused, not dead: its lease is still held
    try:
        [run] = ledger(tmp_path)
        assert run.box is not None
        # A tmp cleaner takes the paused host's record: the box looks ownerless to a second host.
        assert RecordStore(tmp_path / "data" / ".boxlite").delete(run.box)
        second = await Host.start(tmp_path, model, "wait", 1, "second")
        assert await second.replies() == [REPLY]  # the adopter delivered the final
    finally:
        first.proc.send_signal(signal.SIGCONT)
    # The paused copy wakes with the same final on its pipe: refused, never delivered.
    assert await first.replies() == []
    assert "refused a final" in first.log.read_text()
    [run] = ledger(tmp_path)
    assert run.state == "delivered" and model_calls(model) == 1
    await nothing_left(tmp_path)


async def test_with_adoption_off_a_live_box_is_reaped_and_the_message_runs_again(tmp_path: Path,
                                                                                model: ModelServer) -> None:  # fmt: skip
    model.delay = 10.0
    first = await Host.start(tmp_path, model, "send", 1, "first", AGENTLITE_ADOPT_RUNS="0")
    await until(lambda: model_calls(model) == 1, "the turn's model call")
    await first.kill()
    model.delay = 0.0
    second = await Host.start(tmp_path, model, "wait", 1, "second", AGENTLITE_ADOPT_RUNS="0")
    assert await second.replies() == [REPLY]
    first_run, second_run = ledger(tmp_path)
    assert first_run.state == "abandoned" and "adoption is turned off" in (first_run.note or "")
    assert second_run.state == "delivered"
    await nothing_left(tmp_path)


async def test_a_message_arriving_while_the_adopted_box_runs_waits_for_it(tmp_path: Path,
                                                                          model: ModelServer) -> None:  # fmt: skip
    model.delay = 6.0
    first = await Host.start(tmp_path, model, "send", 1, "first")
    await until(lambda: model_calls(model) == 1, "the turn's model call")
    await first.kill()
    second = await Host.start(tmp_path, model, "late", 2, "second")  # says a second message at once
    model.delay = 0.0
    assert await second.replies() == [REPLY, REPLY]
    adopted, later = ledger(tmp_path)
    assert adopted.state == later.state == "delivered" and adopted.box != later.box
    # The group's queue held the new message until the adopted box was done: never two boxes at once.
    assert later.state_times["starting"] >= adopted.state_times["delivered"]
    await nothing_left(tmp_path)
