"""The run ledger's cost per turn: its SQLite writes on their own, and whole turns with and without it.

Two measures, on this machine:

* *ledger writes*: the five transactions a chat turn makes (``begin``, ``starting``, ``running``,
  ``accept_final``, ``mark_delivered``) on a real agent store file (WAL, ``synchronous=NORMAL``:
  a commit appends to the WAL and does not fsync; checkpoints do, every ~1000 pages), timed per
  turn over many turns.
* *whole turns*: ``agent.ask`` on a real platform (sandbox box, codex CLI, the scripted instant
  model on 127.0.0.1), interleaved round by round with the ledger on and off. "Off" gives the
  agent's :class:`LedgerTurn` a ledger that writes nothing (in this process only); everything else,
  the runner's journal included, runs as usual.

Target: at most 5 ms of ledger per turn. Timing is reported, never asserted.

Run: ``.venv/bin/python bench/ledger_overhead.py [--rounds N] [--writes N]`` (defaults 10 and 500).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import agentlite
import agentlite.platform.agent as agent_module
from agentlite.core.agent_clis import agent_clis_bin
from agentlite.offline.model_server import ModelServer
from agentlite.platform.ledger import RunRecord
from agentlite.platform.ledger_turn import LedgerTurn
from agentlite.platform.store import AgentStore


def ledger_writes(folder: Path, turns: int) -> list[float]:
    """Milliseconds per turn of the ledger's own transactions."""
    per_turn: list[float] = []
    with AgentStore(folder / "messages.db") as store:
        runs = store.runs
        for n in range(turns):
            t0 = time.perf_counter()
            run = runs.begin(agent_id="bench", group_folder="main", backend="codex", chat_id="t:1",
                             deliver_to="chat")  # fmt: skip
            runs.starting(run.run_id, run.token, f"box-{n}")
            runs.running(run.run_id, run.token, f"box-{n}", session_id="s")
            runs.accept_final(run.run_id, run.token, f"box-{n}", status="success", text="hi")
            runs.mark_delivered(run.run_id)
            per_turn.append((time.perf_counter() - t0) * 1000)
    return per_turn


class _NullLedger:
    """A ledger that writes nothing (the bench's "off" side); the turn's own logic runs as usual."""

    def begin(self, **fields: Any) -> RunRecord:
        return RunRecord(run_id="run-0-off", agent_id=fields["agent_id"], group_folder=fields["group_folder"],
                         chat_id=fields.get("chat_id"), backend=fields["backend"], state="queued", token="",
                         box=None, session_id=None, journal_offset=0, deliver_to=fields.get("deliver_to"),
                         request_id=None, final_status=None, final_text=None, final_error=None, final_usage=None,
                         created_at="", updated_at="", finished_at=None, state_times={}, note=None)  # fmt: skip

    def starting(self, *args: Any, **kwargs: Any) -> None:
        return None

    running = starting

    def accept_final(self, *args: Any, **kwargs: Any) -> bool:
        return True

    mark_delivered = end = accept_final


class _NoLedger(LedgerTurn):
    @classmethod
    def begin(cls, ledger: Any, **fields: Any) -> LedgerTurn:
        return LedgerTurn.begin(_NullLedger(), **fields)  # type: ignore[arg-type]


async def whole_turns(folder: Path, rounds: int) -> tuple[list[float], list[float]]:
    on: list[float] = []
    off: list[float] = []
    async with (
        ModelServer(scenario="text") as model,
        await agentlite.create(workdir=folder / "platform", runtime="sandbox") as platform,
    ):
        agent = await platform.get_or_create_agent(
            "bench", backend={"type": "codex", "base_url": model.openai_base_url, "max_retries": 0}
        )
        await agent.start()
        agent.register_group("t:main", name="main", folder="main", is_main=True)
        for n in range(rounds + 2):  # two warm-up rounds
            for ledger_on in (n % 2 == 0, n % 2 != 0):  # alternating which goes first
                agent_module.LedgerTurn = LedgerTurn if ledger_on else _NoLedger  # type: ignore[misc]
                t0 = time.perf_counter()
                result = await agent.ask("t:main", "hello")
                took = (time.perf_counter() - t0) * 1000
                assert result.status == "success", result.error
                if n >= 2:
                    (on if ledger_on else off).append(took)
        agent_module.LedgerTurn = LedgerTurn  # type: ignore[misc]
        await agent.stop()
    return on, off


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--writes", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentlite-ledger-bench-") as tmp:
        writes = ledger_writes(Path(tmp), args.writes)
        w50 = statistics.median(writes)
        w95 = sorted(writes)[int(len(writes) * 0.95)]
        print(
            f"ledger writes per turn (5 transactions, {args.writes} turns): median {w50:.2f} ms, p95 {w95:.2f} ms"
        )
        if agent_clis_bin() is None or not (agent_clis_bin() / "codex").exists():  # type: ignore[operator]
            print("whole turns: skipped (agent CLIs not installed; run scripts/install.sh)")
        else:
            on, off = asyncio.run(whole_turns(Path(tmp), args.rounds))
            m_on, m_off = statistics.median(on), statistics.median(off)
            print(f"whole turn, ledger on : median {m_on:.1f} ms ({len(on)} turns)")
            print(f"whole turn, ledger off: median {m_off:.1f} ms ({len(off)} turns)")
            print(f"ratio on/off: {m_on / m_off:.3f} (difference {m_on - m_off:+.1f} ms; noise dominates it)")
        verdict = "met" if w50 <= 5.0 else "NOT met"
        print(f"target <= 5 ms of ledger per turn: {verdict} ({w50:.2f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
