"""``agentlite acp`` against the bare ACP adapter: how long an editor waits, side by side.

One ACP client (the ``agent-client-protocol`` SDK) drives, interleaved per round:

* ``bare``: the adapter on the host (``codex-acp`` or ``claude-agent-acp``, configured for the
  offline model exactly as in a box, by ``python -m agentlite.guest.acp_launch``), cwd a temp project;
* ``boxed``: ``agentlite acp --backend B`` (sandbox runtime), which makes a box per session and
  runs the same adapter in it.

Timed from the client's spawn: ``initialize`` answered, ``session/new`` answered (for ``boxed``
this includes making the box), and the first ``session/update`` of the first prompt (the offline
model's ``text`` scenario answers at once, so this is the agent's own latency) and of its first
agent text; ``prompt_to_first_text`` is a warm prompt's latency alone. Prints the median
of the rounds and the boxed/bare ratios.

Run: ``.venv/bin/python bench/acp_first_update.py [--rounds N] [--backend codex|claude_code]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import acp
from acp import schema

from agentlite.core.agent_clis import agent_clis_bin
from agentlite.offline.model_server import ModelServer
from agentlite.run.acp_box import adapter_backend
from agentlite.run.acp_client import AcpClientBase
from agentlite.run.protocol import RunnerInput


class _Client(AcpClientBase):
    def __init__(self) -> None:
        self.first_update: float | None = None
        self.first_text: float | None = None
        self.prompt_sent: float | None = None

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        if self.prompt_sent is None:
            return
        if self.first_update is None:
            self.first_update = time.monotonic()
        if self.first_text is None and isinstance(update, schema.AgentMessageChunk):
            self.first_text = time.monotonic()

    async def request_permission(self, session_id: str, tool_call: Any, options: list[Any],
                                 **kwargs: Any) -> acp.RequestPermissionResponse:  # fmt: skip
        return acp.RequestPermissionResponse(outcome=schema.DeniedOutcome(outcome="cancelled"))


async def _one(argv: list[str], env: dict[str, str], project: Path) -> dict[str, float]:
    client = _Client()
    started = time.monotonic()
    # setsid: the client runs in its own process group, so what it leaves behind (the bare adapter's
    # agent CLI outlives a terminated launcher) can be killed with it below. stderr: nothing reads it.
    async with acp.spawn_agent_process(client, "setsid", *argv, env=env, cwd=str(project),
                                       transport_kwargs={"stderr": asyncio.subprocess.DEVNULL}) as (conn, process):  # fmt: skip
        try:
            await conn.initialize(
                protocol_version=acp.PROTOCOL_VERSION, client_capabilities=schema.ClientCapabilities()
            )
            initialized = time.monotonic()
            session = await conn.new_session(cwd=str(project), mcp_servers=[])
            created = time.monotonic()
            client.prompt_sent = time.monotonic()
            await conn.prompt(session_id=session.session_id, prompt=[acp.text_block("hello")])
            assert client.first_update is not None and client.first_text is not None, "no agent text arrived"
        except BaseException:
            await _end_group(process)
            raise
    # After the context has closed stdin and waited for the client: end its group, then read its
    # stdout to EOF so the subprocess transport closes while the event loop still runs.
    await _end_group(process)
    return {"initialize": initialized - started, "session_new": created - started,
            "first_update": client.first_update - started,
            "first_agent_text": client.first_text - started,
            "prompt_to_first_text": client.first_text - client.prompt_sent}  # fmt: skip


async def _end_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.stdout is not None:
        await asyncio.wait_for(process.stdout.read(), 10)
    await process.wait()


def _bare(backend: str, base_url: str, scratch: Path) -> tuple[list[str], dict[str, str]]:
    config = adapter_backend(backend, "fake-model", base_url).model_copy(update={"max_retries": 0})
    run_input = RunnerInput(prompt="", group_folder="acp", chat_id="acp", is_main=True, backend=config)
    home = scratch / "bare-home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "AGENTLITE_ACP_INPUT": run_input.model_dump_json(),
           "PATH": f"{agent_clis_bin()}:{os.environ.get('PATH', '')}"}  # fmt: skip
    return [sys.executable, "-m", "agentlite.guest.acp_launch"], env


def _boxed(backend: str, base_url: str, scratch: Path) -> tuple[list[str], dict[str, str]]:
    argv = [sys.executable, "-m", "agentlite", "acp", "--home", str(scratch / "agentlite-home"),
            "--runtime", "sandbox", "--backend", backend, "--base-url", base_url, "--model", "fake-model"]  # fmt: skip
    return argv, {**os.environ, "AGENTLITE_LOG_LEVEL": "warning"}


async def main(rounds: int, backend: str) -> None:
    if agent_clis_bin() is None:
        raise SystemExit("agent CLIs not installed (scripts/install.sh)")
    results: dict[str, list[dict[str, float]]] = {"bare": [], "boxed": []}
    async with ModelServer(scenario="text") as model:
        base_url = model.anthropic_base_url if backend == "claude_code" else model.openai_base_url
        with tempfile.TemporaryDirectory() as tmp:
            scratch = Path(tmp)
            for round_no in range(rounds):
                for kind, make in (("bare", _bare), ("boxed", _boxed)):
                    project = scratch / f"project-{kind}-{round_no}"
                    project.mkdir()
                    argv, env = make(backend, base_url, scratch)
                    results[kind].append(await _one(argv, env, project))
    keys = ("initialize", "session_new", "first_update", "first_agent_text", "prompt_to_first_text")
    medians = {k: {key: statistics.median(r[key] for r in rs) for key in keys} for k, rs in results.items()}
    print(f"ACP time to first answers, backend {backend}, median of {rounds} rounds (seconds from spawn)")
    print(f"{'':26}{'bare adapter':>14}{'agentlite acp':>15}{'ratio':>8}")
    for key in keys:
        bare, boxed = medians["bare"][key], medians["boxed"][key]
        print(f"{key:26}{bare:14.3f}{boxed:15.3f}{boxed / bare:8.2f}")
    print(json.dumps({"backend": backend, "rounds": rounds, "median_s": medians}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=("codex", "claude_code"), default="codex")
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.backend))
