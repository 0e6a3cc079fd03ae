"""``agentlite host --jsonl`` as a front of the platform: finals per id and in group order, sessions
that survive a SIGKILLed host, the startup sweep of what it left, and a clean close on SIGINT.
A real host process, real boxes, the real codex against the built-in model server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from agentlite.box.ownership import RecordStore
from agentlite.box.sandbox import SandboxRuntime
from agentlite.testing import ModelServer
from conftest import needs_codex

pytestmark = needs_codex
GROUPS = ["g0", "g1", "g2", "g3"]


def request(request_id: str, group: str, prompt: str) -> str:
    return json.dumps({"id": request_id, "agent": "jsonl", "group": group, "prompt": prompt}) + "\n"


class Host:
    """A host process whose stdout is read line by line as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out: list[dict] = []

    @classmethod
    async def start(cls, home: Path, model: ModelServer) -> Host:
        env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
        env["AGENTLITE_HOME"] = str(home)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agentlite", "host", "--jsonl", "--base-url", model.openai_base_url,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=env,
        )  # fmt: skip
        return cls(proc)

    def send(self, lines: list[str]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(lines).encode())

    def finals(self) -> list[dict]:
        return [o for o in self.out if o["type"] == "final"]

    async def read_until(self, done: object, timeout: float = 300) -> None:
        """Read output objects until ``done(self)`` holds (or end of output)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while not done(self):  # type: ignore[operator]
            line = await asyncio.wait_for(self.proc.stdout.readline(), deadline - time.monotonic())
            if not line:
                return
            self.out.append(json.loads(line))

    async def finish(self, timeout: float = 300) -> tuple[int, str]:
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self.proc.stdin.close()
        await self.read_until(lambda _: False, timeout)
        err = await self.proc.stderr.read()
        return await asyncio.wait_for(self.proc.wait(), 60), err.decode()


def sessions_by_group(finals: list[dict], group_of: dict[str, str]) -> dict[str, list[str | None]]:
    by_group: dict[str, list[str | None]] = {}
    for final in finals:
        if final["id"] in group_of:
            by_group.setdefault(group_of[final["id"]], []).append(final["session_id"])
    return by_group


async def no_box_left(home: Path) -> None:
    assert await SandboxRuntime(home).list() == [], "a box was left behind"
    assert RecordStore(home).record_names() == [], "an ownership record was left behind"


async def test_twenty_requests_over_four_groups_survive_a_sigkilled_host(
    home: Path, model: ModelServer
) -> None:
    requests = [(f"r{n}", GROUPS[n % 4], f"question {n}") for n in range(20)]
    group_of = {rid: group for rid, group, _ in requests}
    lines = [request(*r) for r in requests]
    invalid = ["{not json\n", json.dumps({"id": "no-prompt", "group": "g0"}) + "\n", request("up", "..", "x")]
    for n, line in enumerate(invalid):
        lines.insert(3 + n * 7, line)

    first = await Host.start(home, model)
    first.send(lines)
    await first.read_until(lambda host: len(host.finals()) >= 10)
    first.proc.send_signal(signal.SIGKILL)
    await first.proc.wait()
    before = first.finals()
    assert len(before) >= 10
    answered = {f["id"] for f in before}
    assert len(answered) == len(before), "a request got two finals"

    # The same home, the requests that got no final: the new host sweeps what the first left.
    second = await Host.start(home, model)
    second.send([request(*r) for r in requests if r[0] not in answered])
    code, err = await second.finish()
    assert code == 0, err[-3000:]
    after = second.finals()

    finals = before + after
    ids = [f["id"] for f in finals]
    assert len(finals) == 23 and len({json.dumps(i) for i in ids}) == 23, "one final per id"
    assert sorted(i for i in ids if i in group_of) == sorted(group_of)
    errors = {json.dumps(f["id"]): f["error"] for f in finals if f["status"] == "error"}
    assert set(errors) == {"null", '"no-prompt"', '"up"'}, errors
    for group in GROUPS:
        order = [f["id"] for f in finals if group_of.get(f["id"]) == group]
        assert order == [rid for rid, g, _ in requests if g == group], f"group {group} out of order"
    # Each group resumes its session: its first turn after the restart continues the last before.
    sessions_before, sessions_after = sessions_by_group(before, group_of), sessions_by_group(after, group_of)
    resumed = [g for g in GROUPS if sessions_before.get(g) and sessions_after.get(g)]
    assert resumed, "no group ran on both sides of the kill"
    for group in resumed:
        assert sessions_after[group][0] == sessions_before[group][-1] is not None, group
    for final in finals:
        assert set(final) >= {"type", "id", "status", "session_id", "usage", "timings"}
    await no_box_left(home)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_signal_during_four_running_requests_settles_each_and_leaves_nothing(
    home: Path, model: ModelServer, signum: int
) -> None:
    host = await Host.start(home, model)
    host.send([request(f"h{n}", group, "wait [scenario:hang]") for n, group in enumerate(GROUPS)])

    # Running means: each box's agent is waiting on its model call.
    deadline = time.monotonic() + 300
    while sum(r.scenario == "hang" for r in model.requests) < 4:
        assert time.monotonic() < deadline, "the four requests never reached the model"
        assert host.proc.returncode is None
        await asyncio.sleep(0.1)
    started = time.monotonic()
    host.proc.send_signal(signum)
    # The issue asks for an exit within 10 s; the bound here is generous (a loaded machine), and
    # the time taken is printed for the record rather than asserted.
    await host.read_until(lambda _: False, timeout=60)
    code = await asyncio.wait_for(host.proc.wait(), 60)
    print(f"host stopped {time.monotonic() - started:.2f} s after signal {signum}")
    finals = host.finals()
    assert sorted(f["id"] for f in finals) == [f"h{n}" for n in range(4)]
    assert all(f["status"] == "error" and f["error"] == "host stopped" for f in finals), finals
    assert code == 128 + signum
    await no_box_left(home)


async def test_a_host_run_has_the_agents_mcp_tools(home: Path, model: ModelServer) -> None:
    from agentlite.platform.store import AgentStore

    model.tool = ("mcp__agentlite__schedule_task",
                  {"prompt": "later", "schedule_type": "cron", "schedule_value": "0 0 1 1 *"})  # fmt: skip
    host = await Host.start(home, model)
    host.send([request("t1", "tools", "plan it [scenario:tool_call]")])
    await host.read_until(lambda h: len(h.finals()) == 1)
    assert host.finals()[0]["status"] == "success", host.finals()
    # The box's MCP server asked over IPC; the host's agent puts the task in its store.
    store = AgentStore(home / "host" / "agents" / "jsonl" / "store" / "messages.db")
    deadline = time.monotonic() + 60
    while not (tasks := store.list_tasks()):
        assert time.monotonic() < deadline, "the task the box scheduled never reached the agent's store"
        await asyncio.sleep(0.2)
    store.close()
    assert [(t.prompt, t.group_folder, t.schedule_value) for t in tasks] == [("later", "tools", "0 0 1 1 *")]
    code, err = await host.finish()
    assert code == 0, err[-3000:]
    await no_box_left(home)
