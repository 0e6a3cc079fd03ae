"""Usage, cost, budgets and retries: the real codex and claude CLIs in real boxes against the scripted
model server (which reports chosen token counts, 429s and slow streams), and the ledger and budget
tables in a real SQLite store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import agentlite
from agentlite.core.errors import ConfigError
from agentlite.platform.budgets import Budget, BudgetExceeded, Budgets
from agentlite.platform.events import AgentEvent
from agentlite.platform.spending import Spending
from agentlite.platform.store import AgentStore
from agentlite.platform.usage import UsageLedger
from agentlite.run.prices import Price, PriceTable, load_prices
from agentlite.run.protocol import Event, SdkMessageEvent, UsageEvent
from agentlite.run.retry import RetryPolicy, classify, retry_class
from agentlite.run.turn import TurnResult
from agentlite.run.usage_tally import UsageTally
from agentlite.testing import ModelServer, ScriptedUsage
from agentlite.testing.channels import RecordingChannel, RecordingChannels
from conftest import needs_agent_clis, until

# -- price table, retry policy: plain rules --------------------------------------------------------


def test_price_table_exact_beats_pattern_and_unknown_is_none() -> None:
    table = PriceTable.from_config({"gpt-5-mini-2026": {"input": 1, "output": 2}})
    assert table.lookup("gpt-5-mini-2026") == Price(1, 2)
    assert table.lookup("gpt-5-mini") == Price(0.25, 2, 0.025)  # the longer pattern wins over gpt-5*
    assert table.lookup("claude-opus-4-6[1m]") == Price(15, 75, 1.5, 18.75)
    assert table.cost("no-such-model", 10, 10) is None and table.cost(None, 1, 1) is None
    assert table.cost("claude-haiku-4-5", 1_000_000, 0, 0, 1_000_000) == pytest.approx(1.8)
    for bad, message in [({"m": {"input": 1}}, "needs `output`"), ({"m": {"input": -1, "output": 1}}, ">= 0"),
                         ({"m": {"input": 1, "output": 1, "cash": 1}}, "unknown field"), ({"m": 3}, "table")]:  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            PriceTable.from_config(bad)


def test_price_table_from_the_platform_config_file(tmp_path: Path) -> None:
    (tmp_path / "prices.json").write_text(json.dumps({"offline-*": {"input": 5, "output": 25}}))
    assert load_prices(tmp_path).cost("offline-priced", 300, 100) == pytest.approx(0.004)
    (tmp_path / "prices.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"prices\.json"):
        load_prices(tmp_path)


def test_retry_classes_and_back_off() -> None:
    assert (
        classify("Codex exited with code 1: exceeded retry limit, last status: 429 Too Many Requests")
        == "rate_limit"
    )
    assert classify("Claude Code failed: API Error: Request rejected (429) · rate limited") == "rate_limit"
    assert classify("Codex exited with code 1: last status: 500 Internal Server Error") == "transient"
    assert classify("Overloaded") == "transient" and classify("503 Service Unavailable") == "transient"
    assert classify("Claude Code failed: invalid api key") is None and classify(None) is None
    limited = TurnResult(status="error", error="Codex exited with code 1: last status: 429 Too Many Requests")
    assert retry_class(limited, emitted_result=False) == "rate_limit"
    assert retry_class(limited, emitted_result=True) is None  # never after a result went out
    assert retry_class(TurnResult(status="success", result="ok"), emitted_result=False) is None
    policy = RetryPolicy(random=lambda: 0.0)
    assert [policy.delay(n) for n in (1, 2, 3, 7, 10)] == [1, 2, 4, 60, 60]
    assert RetryPolicy(random=lambda: 0.5).delay(3) == 6
    assert RetryPolicy(random=lambda: 0.999).delay(6) == 60  # jitter never goes past the cap


# -- ledger and budgets on a real store -------------------------------------------------------------


def _usage(cost: float | None = None, scope: str = "turn", model: str = "offline-priced") -> UsageEvent:
    return UsageEvent(input_tokens=300, output_tokens=100, model=model, cost_usd=cost, scope=scope)  # type: ignore[arg-type]


PRICES = PriceTable.from_config({"offline-*": {"input": 5, "output": 25}})


def test_a_turn_total_replaces_its_calls_and_a_rerecorded_run_counts_once(tmp_path: Path) -> None:
    with AgentStore(tmp_path / "messages.db") as store:
        tally = UsageTally(PRICES)
        tally.observe(_usage(scope="call"))
        tally.observe(_usage(scope="call"))
        assert tally.cost_usd == pytest.approx(0.008) and tally.tokens == 800
        tally.observe(
            UsageEvent(input_tokens=600, output_tokens=200, model="offline-priced", cost_usd=0.0081)
        )
        assert tally.cost_usd == pytest.approx(0.0081)  # the backend's own figure for the turn wins
        ledger = UsageLedger(store)
        at = datetime(2026, 1, 2, tzinfo=UTC)
        for _ in range(2):  # a re-delivered final records the same run again
            ledger.record("run-1", tally, chat_id="t:a", group_folder="a", backend_type="claude_code", at=at)
        rows = ledger.rows()
        assert len(rows) == 1 and rows[0].cost_source == "reported"
        assert (rows[0].counts.input_tokens, rows[0].counts.output_tokens) == (600, 200)
        assert ledger.spent(chat_id="t:a", since=None, unit="usd") == pytest.approx(0.0081)
        unknown = UsageTally(PRICES)
        unknown.observe(_usage(model="mystery"))
        ledger.record("run-2", unknown, chat_id="t:a", group_folder="a", backend_type="codex", at=at)
        ledger.record("run-3", UsageTally(PRICES), chat_id="t:a", group_folder="a", backend_type="acp", at=at)
        by_source = {r.run_id: (r.cost_source, r.counts.cost_usd) for r in ledger.rows()}
        assert by_source["run-2"] == ("unknown", None) and by_source["run-3"] == ("no_usage", None)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_warning_once_per_period_and_the_daily_reset_unpauses(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 3, 10, 5, 0, tzinfo=UTC))  # 06:00 in Berlin (UTC+1 in March)
    events: list[tuple[str, dict[str, Any]]] = []
    notices: list[str] = []

    async def notify(jid: str, text: str) -> None:
        notices.append(text)

    with AgentStore(tmp_path / "messages.db") as store:
        spending = Spending(store, lambda name, **data: events.append((name, data)), notify,
                            timezone="Europe/Berlin", prices=PRICES, clock=clock)  # fmt: skip
        spending.budgets.set(Budget("t:a", daily_limit=0.01, reset_hour=7))
        # The period began yesterday at 07:00 Berlin time: 06:00 UTC on March 9.
        assert spending.budgets.period_start(spending.budgets.get("t:a")) == datetime(
            2026, 3, 9, 6, tzinfo=UTC
        )  # type: ignore[arg-type]

        async def turn(run_id: str) -> None:
            tally = spending.tally("t:a")
            try:
                tally.observe(_usage())
            except BudgetExceeded:
                pass  # in a real turn this stops the box; the run is still recorded
            await spending.after("t:a", "a", run_id, tally, TurnResult(status="success"), "codex")

        for n in range(3):
            assert spending.blocked("t:a") is None
            await turn(f"r{n}")
        names = [name for name, _ in events]
        assert names.count("budget.warning") == 1 and names.count("budget.exceeded") == 1
        assert names.count("usage") == 3
        assert [n.split(":")[0] for n in notices] == ["Budget warning", "Agent paused"]
        assert "($0.0120 of $0.01 used)" in notices[1]
        assert spending.blocked("t:a") is not None  # paused: no box
        clock.now = datetime(2026, 3, 10, 5, 59, tzinfo=UTC)  # 06:59 Berlin: still the old period
        assert spending.blocked("t:a") is not None
        clock.now = datetime(2026, 3, 10, 6, 0, tzinfo=UTC)  # 07:00 Berlin: the reset
        assert spending.blocked("t:a") is None
        await turn("r3")
        await turn("r4")
        assert [name for name, _ in events].count("budget.warning") == 2  # once in the new period too


def test_resume_grants_a_fresh_allowance_and_budgets_validate(tmp_path: Path) -> None:
    with AgentStore(tmp_path / "messages.db") as store:
        budgets = Budgets(store)
        budgets.set(Budget("*", unit="tokens", total_limit=500))
        tally = UsageTally(PRICES)
        tally.observe(_usage())
        tally.observe(_usage())
        UsageLedger(store).record("r", tally, chat_id="t:b", group_folder="b", backend_type="codex",
                                  at=datetime.now(UTC))  # fmt: skip
        status = budgets.status(budgets.get("*"))  # type: ignore[arg-type]
        assert status.total_spent == 800
        budgets.pause(status, "total")
        assert budgets.paused("t:b") is not None and budgets.paused("t:other") is not None  # agent-wide
        assert budgets.resume("*") and budgets.paused("t:b") is None
        assert budgets.status(budgets.get("*")).total_spent == 0  # type: ignore[arg-type]
        assert not budgets.resume("t:nobudget")
        for bad, message in [({"daily_limit": 0}, "> 0"), ({"unit": "eur"}, "usd or tokens"),
                             ({"reset_hour": 24}, "0..23")]:  # fmt: skip
            with pytest.raises(ConfigError, match=message):
                Budget("t:b", **bad)  # type: ignore[arg-type]


# -- real turns ---------------------------------------------------------------------------------------


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[agentlite.AgentLite]:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prices.json").write_text(json.dumps({"offline-*": {"input": 5, "output": 25,
                                                                            "cache_read": 0.5, "cache_write": 6.25}}))  # fmt: skip
    async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox", timezone="UTC",
                                      idle_timeout=20) as p:  # fmt: skip
        yield p


async def started(
    platform: agentlite.AgentLite, backend: dict[str, Any]
) -> tuple[Any, RecordingChannel, list[AgentEvent]]:
    channels = RecordingChannels()
    agent = await platform.get_or_create_agent("main", backend=backend, channels={"test": channels})
    await agent.start()
    agent.retry_policy = RetryPolicy(base_s=0.05, cap_s=0.5)
    agent.register_group("t:main", name="main", folder="main", is_main=True)
    events: list[AgentEvent] = []
    agent.on("*", events.append)
    return agent, channels.channel, events


def codex(model: ModelServer, name: str = "gpt-5-mini") -> dict[str, Any]:
    return {"type": "codex", "base_url": model.openai_base_url, "model": name, "max_retries": 0}


def claude(model: ModelServer, name: str = "offline-priced") -> dict[str, Any]:
    return {"type": "claude_code", "base_url": model.anthropic_base_url, "model": name, "max_retries": 0}


@needs_agent_clis("codex")
async def test_codex_turn_records_the_servers_usage_and_the_price_table_cost(platform: agentlite.AgentLite,
                                                                             model: ModelServer) -> None:  # fmt: skip
    agent, _channel, events = await started(platform, codex(model))
    model.usage = ScriptedUsage(input_tokens=1000, output_tokens=600, cached_input_tokens=100)
    result = await agent.ask("t:main", "work [scenario:calls3]")
    assert result.status == "success", result.error
    # Three model calls; OpenAI counts cached input inside input: 3 x (900 fresh + 100 cached).
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.cached_input_tokens, result.usage.output_tokens) == (
        2700,
        300,
        1800,
    )
    expected = (2700 * 0.25 + 300 * 0.025 + 1800 * 2) / 1e6  # gpt-5-mini from the default table
    assert result.usage.cost_usd == pytest.approx(expected)
    [row] = agent.usage(by="model")
    assert (row["model"], row["runs"], row["input_tokens"], row["output_tokens"]) == (
        "gpt-5-mini",
        1,
        2700,
        1800,
    )
    assert row["cost_usd"] == pytest.approx(expected)
    assert [e.data["usage"]["output_tokens"] for e in events if e.name == "usage"] == [1800]
    await agent.stop()


@needs_agent_clis("claude")
async def test_claude_turn_records_the_servers_usage_and_the_cost_claude_reports(platform: agentlite.AgentLite,
                                                                                 model: ModelServer) -> None:  # fmt: skip
    agent, _channel, _events = await started(platform, claude(model, "claude-sonnet-4-6"))
    model.usage = ScriptedUsage(
        input_tokens=1000, output_tokens=600, cached_input_tokens=100, cache_write_tokens=50
    )
    seen: list[Event] = []
    result = await agent.ask("t:main", "work [scenario:calls3]", on_event=seen.append)
    assert result.status == "success", result.error
    reported = next(
        e.message["total_cost_usd"] for e in seen if isinstance(e, SdkMessageEvent) and e.sdk_type == "result"
    )
    calls = [e for e in seen if isinstance(e, UsageEvent) and e.scope == "call"]
    assert len(calls) == 3  # one per model call, while the turn ran
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.cached_input_tokens, result.usage.cache_write_tokens,
            result.usage.output_tokens) == (3000, 300, 150, 1800)  # fmt: skip
    assert result.usage.cost_usd == pytest.approx(reported) and reported > 0
    [row] = agent.usage(by="group")
    assert row["group"] == "t:main" and row["cost_usd"] == pytest.approx(reported)
    await agent.stop()


@needs_agent_clis("claude")
async def test_budget_stops_the_third_call_mid_stream_pauses_and_resume_runs_again(platform: agentlite.AgentLite,
                                                                                   model: ModelServer) -> None:  # fmt: skip
    agent, channel, events = await started(platform, claude(model))
    model.usage = ScriptedUsage(input_tokens=300, output_tokens=100)  # $0.004 per call at the test's prices
    agent.set_budget("t:main", daily=0.01)
    for _ in range(2):
        result = await agent.ask("t:main", "hello")
        assert result.status == "success", result.error
    assert [e.name for e in events].count("budget.warning") == 1  # $0.008 of $0.01
    model.stream_pause = 120.0  # the third call streams its first block, then keeps streaming
    third = await agent.ask("t:main", "hello again")
    assert model.open_streams == 1, "the turn was not stopped while the model still streamed"
    assert third.status == "error" and third.error is not None
    assert "daily token budget exceeded ($0.0120 of $0.01 used)" in third.error
    exceeded = [e for e in events if e.name == "budget.exceeded"]
    assert len(exceeded) == 1 and exceeded[0].data["spent"] == pytest.approx(0.012)
    assert [e.name for e in events].count("budget.warning") == 1  # once per period
    assert any(text.startswith("Agent paused: daily") for _, text in channel.sent)
    model.stream_pause = 0.0
    requests = len(model.requests)
    boxes = [e for e in events if e.name == "run.state" and e.data["state"] == "stopped"]
    sent = len(channel.sent)
    await channel.say("t:main", "@Andy are you there?")
    await until(lambda: len(channel.sent) > sent, "the paused notice")
    assert channel.sent[-1][1].startswith("Agent paused: daily token budget exceeded")
    assert len(model.requests) == requests  # no box, no model call
    assert [e for e in events if e.name == "run.state" and e.data["state"] == "stopped"] == boxes
    assert agent.resume_budget("t:main")
    assert agent.budgets()[0]["paused"] is None
    sent = len(channel.sent)
    await channel.say("t:main", "@Andy and now?")
    await until(
        lambda: any(t == "hi from the offline model" for _, t in channel.sent[sent:]),
        "the reply after resume",
    )
    await agent.stop()


@pytest.mark.parametrize("kind", [pytest.param("codex", marks=needs_agent_clis("codex")),
                                  pytest.param("claude", marks=needs_agent_clis("claude"))])  # fmt: skip
async def test_a_rate_limit_twice_is_retried_and_counted_once(platform: agentlite.AgentLite, model: ModelServer,
                                                              kind: str) -> None:  # fmt: skip
    agent, _channel, events = await started(platform, codex(model) if kind == "codex" else claude(model))
    model.usage = ScriptedUsage(input_tokens=40, output_tokens=8)
    model.fail_next = [429, 429]
    seen: list[Event] = []
    result = await agent.ask("t:main", "hello", on_event=seen.append)
    assert result.status == "success" and result.result == "hi from the offline model"
    retries = [e.data for e in events if e.name == "run.retry"]
    assert [(r["attempt"], r["retry_class"]) for r in retries] == [(1, "rate_limit"), (2, "rate_limit")]
    assert all(0 < r["delay_s"] <= 0.5 for r in retries)
    assert sum(1 for e in seen if type(e).__name__ == "ResultEvent") == 1
    [row] = agent.usage()
    assert (row["runs"], row["input_tokens"], row["output_tokens"]) == (1, 40, 8)
    await agent.stop()


@needs_agent_clis("codex")
async def test_other_errors_are_not_retried(platform: agentlite.AgentLite, model: ModelServer) -> None:
    agent, _channel, events = await started(platform, codex(model))
    model.fail_next = [400, 400]  # a bad request is not worth a retry
    result = await agent.ask("t:main", "hello")
    assert result.status == "error" and "400" in (result.error or "")
    assert not [e for e in events if e.name == "run.retry"] and model.fail_next == [400]
    [row] = agent.usage()
    assert row["cost_usd"] is None and row["unknown_cost_runs"] == 1  # no usage reported: unknown, not free
    await agent.stop()


def test_usage_since_filters_by_time(tmp_path: Path) -> None:
    with AgentStore(tmp_path / "messages.db") as store:
        ledger = UsageLedger(store)
        tally = UsageTally(PRICES)
        tally.observe(_usage())
        now = datetime(2026, 5, 1, tzinfo=UTC)
        ledger.record(
            "old", tally, chat_id="t:a", group_folder="a", backend_type="codex", at=now - timedelta(days=2)
        )
        ledger.record("new", tally, chat_id="t:a", group_folder="a", backend_type="codex", at=now)
        assert [r.run_id for r in ledger.rows(since=now - timedelta(days=1))] == ["new"]


@needs_agent_clis("codex")
async def test_the_agent_reads_its_budget_through_the_mcp_server(platform: agentlite.AgentLite,
                                                                 model: ModelServer) -> None:  # fmt: skip
    agent, _channel, _events = await started(platform, codex(model))
    agent.set_budget("t:main", daily=0.5, reset_hour=3)
    model.tool = ("mcp__agentlite__get_budget", {})
    result = await agent.ask("t:main", "how much may I spend? [scenario:tool_call]")
    assert result.status == "success", result.error
    answered = json.dumps([r.body for r in model.requests if r.step == 1])
    assert "daily $0.0000 of $0.5000 (resets at 3:00)" in answered  # the tool's answer went to the model
    assert agent.budgets()[0]["daily_limit"] == 0.5  # and nothing in the box can change it
    await agent.stop()


@needs_agent_clis("codex")
async def test_scheduled_tasks_of_a_paused_group_are_skipped_not_queued(
    tmp_path: Path, model: ModelServer
) -> None:
    async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox", timezone="UTC",
                                      scheduler_poll_interval=0.2) as platform:  # fmt: skip
        agent, _channel, events = await started(platform, codex(model))
        agent.set_budget("t:main", total=10, unit="tokens")
        first = await agent.ask("t:main", "hello")
        # codex reports the turn's tokens before it exits: the host stops it there.
        assert first.status == "error" and "total token budget exceeded" in (first.error or "")
        assert agent.budgets()[0]["paused"] == "total_limit"
        requests = len(model.requests)
        task = await agent.schedule_task(
            jid="t:main", prompt="tick", schedule_type="interval", schedule_value="1000"
        )
        await until(
            lambda: any(e.name == "task.run.skipped" for e in events), "the skipped task run", timeout=60
        )
        skipped = next(e for e in events if e.name == "task.run.skipped")
        assert skipped.data["reason"] == "budget_paused" and "total_limit" in skipped.data["detail"]
        assert not [e for e in events if e.name == "task.run.started"] and len(model.requests) == requests
        later = agent.get_task(task.id)
        # The next slot, not this one again.
        assert later.status == "active" and later.next_run > task.next_run
        assert later.last_result.startswith("Skipped: the group's budget is paused")
        await agent.stop()


@needs_agent_clis("codex")
async def test_a_final_redelivered_from_the_run_ledger_does_not_double_the_usage(platform: agentlite.AgentLite,
                                                                                  model: ModelServer) -> None:  # fmt: skip
    agent, _channel, _events = await started(platform, codex(model))
    model.usage = ScriptedUsage(input_tokens=500, output_tokens=50)
    result = await agent.ask("t:main", "hello")
    assert result.status == "success", result.error
    [run] = agent.store.runs.list()
    assert run.final_usage is not None and run.final_usage["input_tokens"] == 500
    before = agent.usage()
    spending = Spending(agent.store, lambda *a, **k: None, _no_notice, prices=PriceTable())
    spending.record_from_ledger(run)  # the final delivered again, after a restart
    spending.record_from_ledger(run)
    after = agent.usage()
    assert [(r["runs"], r["input_tokens"], r["output_tokens"]) for r in after] == [(1, 500, 50)]
    assert after[0]["cost_usd"] == pytest.approx(before[0]["cost_usd"])
    assert [r.run_id for r in UsageLedger(agent.store).rows()] == [run.run_id]  # keyed by the ledger's run id
    await agent.stop()


async def _no_notice(jid: str, text: str) -> None:
    return None


@needs_agent_clis("codex")
async def test_an_adopted_runs_usage_counts_once(tmp_path: Path, model: ModelServer) -> None:
    from test_adoption import REPLY, Host, ledger, model_calls

    model.usage = ScriptedUsage(input_tokens=700, output_tokens=70)
    model.delay = 10.0  # the host is killed 2 s into this turn; the box runs on
    first = await Host.start(tmp_path, model, "send", 1, "first")
    await until(lambda: model_calls(model) == 1, "the turn's model call")
    await asyncio.sleep(2.0)  # the scenario itself: the kill lands mid-turn
    await first.kill()
    model.delay = 0.0
    second = await Host.start(tmp_path, model, "wait", 1, "second")
    assert await second.replies() == [REPLY]
    [run] = ledger(tmp_path)
    [agent_dir] = [p for p in (tmp_path / "data" / "agents").iterdir() if (p / "store").exists()]
    with AgentStore(agent_dir / "store" / "messages.db") as store:
        rows = UsageLedger(store).rows()
        assert [(r.run_id, r.counts.input_tokens, r.counts.output_tokens) for r in rows] == [
            (run.run_id, 700, 70)
        ]
        Spending(store, lambda *a, **k: None, _no_notice).record_from_ledger(
            run
        )  # delivered again: no change
        assert len(UsageLedger(store).rows()) == 1


@needs_agent_clis("claude-agent-acp")
async def test_acp_turn_records_the_usage_the_agent_sends(
    platform: agentlite.AgentLite, model: ModelServer
) -> None:
    backend = {"type": "acp", "command": ["claude-agent-acp"], "base_url": model.anthropic_base_url,
               "model": "offline-priced", "max_retries": 0}  # fmt: skip
    agent, _channel, _events = await started(platform, backend)
    model.usage = ScriptedUsage(input_tokens=300, output_tokens=100)
    result = await agent.ask("t:main", "hello")
    assert result.status == "success", result.error
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens) == (300, 100)
    assert result.usage.cost_usd == pytest.approx(0.004)  # the adapter's own figure, as the prices say
    [row] = agent.usage()
    assert row["runs"] == 1 and row["cost_usd"] == pytest.approx(0.004)
    await agent.stop()
