"""The run ledger and the runner's journal: real SQLite files, real runner processes, and a real
turn through the platform (sandbox box, codex CLI, scripted model on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import agentlite
from agentlite.core.errors import ConfigError, StoreError
from agentlite.core.safefs import UnsafePath
from agentlite.platform.ledger import RUN_STATES, RunLedger
from agentlite.platform.store import AgentStore, ReadOnlyDatabase
from agentlite.run.journal import journal_path, read_journal
from agentlite.run.protocol import ResultEvent, StateEvent
from agentlite.testing import ModelServer
from agentlite.testing.channels import RecordingChannel
from conftest import needs_agent_clis

sys.path.insert(0, str(Path(__file__).parent))
from test_platform import codex


class RunIdChannel(RecordingChannel):
    """A driver that takes the run id of each reply (to deduplicate re-deliveries)."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.run_ids: list[str | None] = []

    async def send_message(self, chat_id: str, text: str, run_id: str | None = None) -> None:
        self.run_ids.append(run_id)
        await super().send_message(chat_id, text)


@pytest.fixture
def store(tmp_path: Path) -> AgentStore:
    with AgentStore(tmp_path / "store" / "messages.db") as s:
        yield s


def test_a_run_moves_through_its_states_and_keeps_its_final(store: AgentStore) -> None:
    runs = store.runs
    run = runs.begin(agent_id="a", group_folder="main", backend="codex", chat_id="t:1", deliver_to="chat")
    assert run.state == "queued" and run.run_id.startswith("run-")
    runs.starting(run.run_id, run.token, "box-1")
    runs.running(run.run_id, run.token, "box-1", session_id="s1")
    assert runs.progress(run.run_id, run.token, 120)
    assert runs.accept_final(
        run.run_id, run.token, "box-1", status="success", text="hi", usage={"input_tokens": 3}
    )
    ready = runs.get(run.run_id)
    assert ready is not None and ready.state == "final_ready" and ready.final_text == "hi"
    assert (
        ready.journal_offset == 120 and ready.session_id == "s1" and ready.final_usage == {"input_tokens": 3}
    )
    assert [r.run_id for r in runs.unfinished()] == [run.run_id]  # a restart would deliver it
    assert runs.mark_delivered(run.run_id)
    assert not runs.mark_delivered(run.run_id)  # once
    done = runs.get(run.run_id)
    assert done is not None and done.state == "delivered" and runs.unfinished() == []
    assert set(done.state_times) == {"queued", "starting", "running", "final_ready", "delivered"}
    assert done.duration_s is not None and "token" not in done.as_dict()


def test_a_read_only_look_finds_the_run_a_box_still_works_on(store: AgentStore) -> None:
    runs = store.runs
    older = runs.begin(agent_id="a", group_folder="main", backend="codex", chat_id="t:1", deliver_to="chat")
    runs.starting(older.run_id, older.token, "box-1")
    runs.end(older.run_id, "failed", "gone")
    newer = runs.begin(agent_id="a", group_folder="main", backend="codex", chat_id="t:1", deliver_to="chat")
    with ReadOnlyDatabase(store.path) as db:  # another process's look: it never writes
        ledger = RunLedger(db)
        assert ledger.live_run_on("box-1") is None, "queued runs and ended ones hold no box"
        runs.starting(newer.run_id, newer.token, "box-1")
        assert ledger.live_run_on("box-1") == runs.get(newer.run_id)
        assert ledger.live_run_on("box-2") is None
        with pytest.raises(StoreError, match="read-only"):
            ledger.end(newer.run_id, "failed", "not from here")
    assert runs.get(newer.run_id).state == "starting"  # type: ignore[union-attr]
    with pytest.raises(StoreError, match="unable to open"):
        ReadOnlyDatabase(store.path.with_name("never-made.db"))
    assert not store.path.with_name("never-made.db").exists()


def test_a_superseded_copy_cannot_land_its_final(store: AgentStore) -> None:
    runs = store.runs
    run = runs.begin(agent_id="a", group_folder="main", backend="codex")
    runs.starting(run.run_id, run.token, "box-1")
    new_token = runs.take_over(run.run_id, run.token)
    assert new_token is not None and new_token != run.token
    assert runs.take_over(run.run_id, run.token) is None  # a second adopter loses the race
    assert not runs.accept_final(run.run_id, run.token, "box-1", status="success", text="late")  # old copy
    assert not runs.accept_final(run.run_id, new_token, "box-2", status="success", text="other box")
    assert runs.accept_final(run.run_id, new_token, "box-1", status="success", text="current")
    assert not runs.accept_final(run.run_id, new_token, "box-1", status="success", text="twice")
    final = runs.get(run.run_id)
    assert final is not None and final.final_text == "current"


def test_ended_runs_stay_ended_and_filters_check_their_states(store: AgentStore) -> None:
    runs = store.runs
    run = runs.begin(agent_id="a", group_folder="g1", backend="codex")
    other = runs.begin(agent_id="a", group_folder="g2", backend="codex")
    assert runs.end(run.run_id, "abandoned", "box gone")
    assert not runs.end(run.run_id, "failed")
    assert runs.take_over(run.run_id, run.token) is None
    assert [r.run_id for r in runs.list(states=("abandoned",))] == [run.run_id]
    assert [r.run_id for r in runs.list(group="g2")] == [other.run_id]
    with pytest.raises(ConfigError, match="unknown run state `nope`"):
        runs.list(states=("nope",))
    assert "abandoned" in RUN_STATES


_RUNNER_OUTPUT = textwrap.dedent(
    """
    import os, sys
    from agentlite.guest.runner import _loop
    from agentlite.run.wire import result_event, state_event
    _loop.OUTPUT.open_journal(sys.argv[1])
    _loop.emit(state_event("idle", reason="awaiting_input"))
    sys.stdin.readline()  # the test closes our stdout's reader, then tells us to go on
    for n in range(3):
        _loop.emit(result_event(f"answer {n}", "s1"))
    print("diagnostics to a dead stderr do not kill the run", file=sys.stderr, flush=True)
    open(sys.argv[1] + ".done", "w").write(str(_loop.OUTPUT.stdout_gone))
    """
)


def test_the_runner_journals_every_event_and_goes_on_when_stdout_is_gone(tmp_path: Path) -> None:
    journal = tmp_path / "ipc" / "journal" / "run-1.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", _RUNNER_OUTPUT, str(journal)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
    assert proc.stdout.readline().strip() == b"---AGENTLITE_OUTPUT_START---"
    proc.stdout.close()  # the host died: nobody reads stdout or stderr any more
    proc.stderr.close()
    proc.stdin.write(b"go\n")
    proc.stdin.close()
    assert proc.wait(60) == 0
    assert (tmp_path / "ipc" / "journal" / "run-1.jsonl.done").read_text() == "True"
    entries = read_journal(journal)
    assert isinstance(entries[0].event, StateEvent)
    assert [e.event.result for e in entries[1:] if isinstance(e.event, ResultEvent)] == [
        "answer 0", "answer 1", "answer 2",
    ]  # fmt: skip
    assert entries[-1].end == journal.stat().st_size
    # Replaying from a recorded offset gives only what came after it.
    assert [e.event for e in read_journal(journal, entries[1].end)] == [e.event for e in entries[2:]]


def test_a_frame_still_being_written_is_left_for_later_and_symlinks_are_refused(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    whole = '---AGENTLITE_OUTPUT_START---\n{"type":"result","result":"a"}\n---AGENTLITE_OUTPUT_END---\n'
    journal.write_text(whole + '---AGENTLITE_OUTPUT_START---\n{"type":"res')
    entries = read_journal(journal)
    assert len(entries) == 1 and entries[0].end == len(whole)
    (tmp_path / "link.jsonl").symlink_to(journal)
    with pytest.raises(UnsafePath, match="symlink"):
        read_journal(tmp_path / "link.jsonl")


def test_migration_adds_the_runs_table_to_an_existing_store(tmp_path: Path) -> None:
    path = tmp_path / "messages.db"
    AgentStore(path).close()
    with AgentStore(path) as again:
        assert again.runs.list() == []
    import sqlite3

    names = {row[0] for row in sqlite3.connect(path).execute("SELECT name FROM schema_migrations")}
    assert "run_ledger" in names


# -- a real turn through the platform -------------------------------------------------------------

needs_codex = needs_agent_clis("codex")


@needs_codex
async def test_a_chat_turn_is_in_the_ledger_delivered_with_its_journal(tmp_path: Path) -> None:
    async with ModelServer(scenario="text") as model:
        async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox", timezone="UTC",
                                          idle_timeout=20) as platform:  # fmt: skip
            holder: dict[str, RunIdChannel] = {}

            def factory(config: Any) -> RunIdChannel:
                holder["c"] = RunIdChannel(config)
                return holder["c"]

            agent = await platform.get_or_create_agent(
                "main", backend=codex(model), channels={"test": factory}
            )
            await agent.start()
            channel = holder["c"]
            agent.register_group("t:main", name="main", folder="main", is_main=True)
            await channel.say("t:main", "hello")
            assert await channel.wait_sent(1) == [("t:main", "hi from the offline model")]
            deadline = time.monotonic() + 60
            while agent.store.runs.unfinished():
                assert time.monotonic() < deadline, "the run never finished in the ledger"
                await asyncio.sleep(0.05)
            [run] = agent.store.runs.list()
            assert run.state == "delivered" and run.final_status == "success"
            assert run.final_text == "hi from the offline model" and run.chat_id == "t:main"
            assert run.box is not None and run.box.startswith(f"agentlite-{agent.id}-main-")
            assert set(run.state_times) >= {"queued", "starting", "running", "final_ready", "delivered"}
            assert channel.run_ids == [run.run_id]  # the delivery carried its run id
            assert run.final_usage is not None and run.final_usage["output_tokens"] > 0
            journal = journal_path(agent.ipc_root / "main", run.run_id)
            events = [e.event for e in read_journal(journal)]
            assert any(isinstance(e, ResultEvent) and e.result == "hi from the offline model" for e in events)
            await agent.stop()
        listed = _cli(tmp_path / "data", "runs", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [(r["run_id"], r["state"]) for r in json.loads(listed.stdout)] == [(run.run_id, "delivered")]
        table = _cli(tmp_path / "data", "runs", "--state", "delivered")
        assert run.run_id in table.stdout and "success" in table.stdout
        assert "no runs" in _cli(tmp_path / "data", "runs", "--state", "failed").stdout
        assert "no runs" in _cli(tmp_path / "data", "runs", "--group", "elsewhere").stdout
        bad = _cli(tmp_path / "data", "runs", "--state", "lost")
        assert bad.returncode == 2 and "--state `lost` is not a run state" in bad.stderr
        shown = _cli(tmp_path / "data", "runs", "show", run.run_id, "--json")
        assert shown.returncode == 0, shown.stderr
        body = json.loads(shown.stdout)
        assert body["run"]["run_id"] == run.run_id and {"type": "result", "result": "hi from the offline model",
                                                          "new_session_id": run.session_id} in body["events"]  # fmt: skip
        assert _cli(tmp_path / "data", "runs", "show", "run-0-nothere").returncode == 1


def _cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENTLITE_WORKDIR": str(workdir), "NO_COLOR": "1", "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "agentlite", *args], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip


async def test_a_callers_final_is_not_sent_to_the_chat_after_a_restart(
    store: AgentStore, tmp_path: Path
) -> None:
    from agentlite.box.sandbox import SandboxRuntime
    from agentlite.platform.adoption import decide_runs

    runs = store.runs
    asked = runs.begin(agent_id="a", group_folder="main", backend="codex", chat_id="t:1", deliver_to="result")
    runs.starting(asked.run_id, asked.token, "box-1")
    assert runs.accept_final(asked.run_id, asked.token, "box-1", status="success", text="for the caller")
    [decision] = await decide_runs(
        runs, SandboxRuntime(tmp_path / "home"), tmp_path / "home", tmp_path / "ipc"
    )
    assert decision.action == "abandon"  # the caller went with the old host; nothing goes to the chat
    ended = runs.get(asked.run_id)
    assert ended is not None and ended.state == "failed" and ended.note == "the caller that asked is gone"
