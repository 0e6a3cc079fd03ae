"""``agentlite host --jsonl``: a real host process, real boxes, real codex, the built-in model server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from agentlite.box.ownership import RecordStore
from agentlite.box.sandbox import SandboxRuntime
from agentlite.platform.app import AgentLite, resolve_timezone
from agentlite.platform.hostmode import JsonlHost
from agentlite.run.protocol import BackendConfig
from agentlite.testing import ModelServer
from conftest import needs_codex

pytestmark = needs_codex


async def host(home: Path, model: ModelServer, lines: list[str]) -> tuple[list[dict], str, int]:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["AGENTLITE_HOME"] = str(home)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentlite", "host", "--jsonl", "--base-url", model.openai_base_url,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate("".join(lines).encode()), 300)
    assert proc.returncode is not None
    return [json.loads(line) for line in out.decode().splitlines()], err.decode(), proc.returncode


async def test_twelve_requests_over_three_groups_plus_two_invalid_lines(
    home: Path, model: ModelServer
) -> None:
    lines = []
    for n in range(12):
        group = "abc"[n % 3]
        lines.append(
            json.dumps({"id": f"r{n}", "agent": "jsonl", "group": group, "prompt": f"question {n}"}) + "\n"
        )
    lines.insert(4, "this is not json\n")
    lines.insert(9, json.dumps({"id": "bad-1", "group": "a"}) + "\n")
    out, err, code = await host(home, model, lines)
    assert code == 0, err
    finals = [o for o in out if o["type"] == "final"]
    assert len(finals) == 14
    ids = [f["id"] for f in finals]
    assert sorted(map(str, ids)) == sorted([f"r{n}" for n in range(12)] + ["bad-1", "None"])
    assert len(set(map(str, ids))) == 14  # exactly one final per id
    invalid = {str(f["id"]): f for f in finals if f["status"] == "error"}
    assert set(invalid) == {"None", "bad-1"}
    assert invalid["None"]["error"].startswith("invalid JSON")
    assert invalid["bad-1"]["error"] == "invalid request: `prompt`: Field required"
    for group_index, group in enumerate("abc"):
        order = [f["id"] for f in finals if f["id"] in {f"r{n}" for n in range(12) if n % 3 == group_index}]
        assert order == [f"r{n}" for n in range(12) if n % 3 == group_index], f"group {group} out of order"
        sessions = {f["session_id"] for f in finals if f["id"] in order}
        assert len(sessions) == 1 and None not in sessions, "a group's requests must share its session"
    assert all(f["result"] == "hi from the offline model" for f in finals if f["status"] == "success")
    for final in finals:  # each request's events come before its final
        position = out.index(final)
        assert all(o["type"] == "event" for o in out[:position] if o.get("id") == final["id"])
        assert not any(o.get("id") == final["id"] for o in out[position + 1 :])
    assert not any(line.startswith("ts=") for line in map(json.dumps, out))  # logs never on stdout
    assert RecordStore(home).record_names() == []


async def test_a_failing_request_gets_an_error_final_and_the_host_goes_on(
    home: Path, model: ModelServer
) -> None:
    lines = [json.dumps({"id": 1, "group": "g", "prompt": "x [scenario:error500]"}) + "\n",
             json.dumps({"id": 2, "group": "g", "prompt": "fine"}) + "\n"]  # fmt: skip
    out, _, code = await host(home, model, lines)
    finals = {f["id"]: f for f in out if f["type"] == "final"}
    assert (
        code == 0
        and finals[1]["status"] == "error"
        and finals[1]["error"].startswith("Codex exited with code 1")
    )
    assert finals[2]["status"] == "success"


async def test_the_group_workers_run_under_the_hosts_supervisor_and_end_with_their_finals(
    home: Path, model: ModelServer
) -> None:
    platform = AgentLite(home / "host", timezone=resolve_timezone("UTC"), runtime=SandboxRuntime(home),
                         max_concurrent=2, box_timeout=300, idle_timeout=30, box_home=home)  # fmt: skip
    lines: list[dict] = []
    host = JsonlHost(
        platform, BackendConfig(type="codex", base_url=model.openai_base_url), write=lines.append
    )
    try:
        await host.start()
        for n, group in enumerate("aab"):
            host.submit_line(json.dumps({"id": n, "group": group, "prompt": f"question {n}"}))
        assert sorted(t.get_name() for t in host.workers.tasks()) == [
            "host-groups:group-host/a",
            "host-groups:group-host/b",
        ]
        await host.finish()
        finals = [line for line in lines if line["type"] == "final"]
        assert sorted(f["id"] for f in finals) == [0, 1, 2] and {f["status"] for f in finals} == {"success"}
        assert host.workers.tasks() == [] and not host.workers.running
    finally:
        await host.stop()  # closes the platform; after the end of input it has nothing to settle
    assert len([line for line in lines if line["type"] == "final"]) == 3
    assert RecordStore(home).record_names() == []
