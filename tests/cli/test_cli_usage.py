"""``agentlite usage`` and ``agentlite budgets`` as a user runs them (real subprocesses, the agent's
real store)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agentlite.platform.store import AgentStore
from agentlite.platform.usage import UsageLedger
from agentlite.run.prices import PriceTable
from agentlite.run.protocol import UsageEvent
from agentlite.run.usage_tally import UsageTally


def cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENTLITE_WORKDIR": str(workdir), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "agentlite", *args], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip


def _spend(workdir: Path) -> None:
    """Two runs in t:a (one priced, one of a model with no price) and one in t:b, as turns leave them."""
    made = cli(workdir, "agents", "create", "main", "--backend", "codex", "--json")
    assert made.returncode == 0, made.stderr
    prices = PriceTable.from_config({"offline-*": {"input": 5, "output": 25}})
    now = datetime.now(UTC)
    with AgentStore(workdir / "agents" / "main" / "store" / "messages.db") as store:
        ledger = UsageLedger(store)
        for run_id, chat, model, at in [("r1", "t:a", "offline-priced", now), ("r2", "t:a", "mystery", now),
                                        ("r3", "t:b", "offline-priced", now - timedelta(days=3))]:  # fmt: skip
            tally = UsageTally(prices)
            tally.observe(UsageEvent(input_tokens=300, output_tokens=100, model=model))
            ledger.record(run_id, tally, chat_id=chat, group_folder=chat[2:], backend_type="codex", at=at)


def test_usage_by_model_group_and_day_with_unknown_costs(tmp_path: Path) -> None:
    _spend(tmp_path)
    by_model = {r["model"]: r for r in json.loads(cli(tmp_path, "usage", "--json").stdout)}
    assert (
        by_model["offline-priced"]["runs"] == 2 and abs(by_model["offline-priced"]["cost_usd"] - 0.008) < 1e-9
    )
    assert by_model["mystery"]["cost_usd"] is None  # unknown, never 0
    by_group = json.loads(cli(tmp_path, "usage", "--by", "group", "--since", "1d", "--json").stdout)
    assert [(r["group"], r["runs"], r["cost_usd"]) for r in by_group] == [("t:a", 2, None)]
    assert abs(by_group[0]["known_cost_usd"] - 0.004) < 1e-9
    only_b = json.loads(cli(tmp_path, "usage", "--group", "t:b", "--by", "day", "--json").stdout)
    assert len(only_b) == 1 and only_b[0]["input_tokens"] == 300
    shown = cli(tmp_path, "usage", "--by", "group")
    assert shown.returncode == 0 and "unknown" in shown.stdout and "t:b" in shown.stdout
    for args, message in [(("--by", "week"), "--by `week`"), (("--since", "yesterday"), "--since `yesterday`"),
                          (("--agent", "ghost"), "unknown agent `ghost`")]:  # fmt: skip
        bad = cli(tmp_path, "usage", *args)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr


def test_budgets_set_list_resume_and_bad_input(tmp_path: Path) -> None:
    _spend(tmp_path)
    made = cli(tmp_path, "budgets", "set", "--group", "t:a", "--daily", "0.01", "--reset-hour", "6", "--json")
    assert made.returncode == 0, made.stderr
    [row] = json.loads(made.stdout)
    assert (row["scope"], row["daily_limit"], row["reset_hour"], row["paused"]) == ("t:a", 0.01, 6, None)
    assert abs(row["daily_spent"] - 0.004) < 1e-9
    cli(tmp_path, "budgets", "set", "--unit", "tokens", "--total", "100000")
    listed = json.loads(cli(tmp_path, "budgets", "list", "--json").stdout)
    assert [(r["scope"], r["unit"]) for r in listed] == [("*", "tokens"), ("t:a", "usd")]
    assert listed[0]["total_spent"] == 1200
    assert "t:a" in cli(tmp_path, "budgets", "list").stdout
    resumed = cli(tmp_path, "budgets", "resume", "--group", "t:a", "--json")
    assert resumed.returncode == 0 and json.loads(resumed.stdout)[0]["daily_spent"] == 0
    for args, message in [(("set", "--group", "t:a"), "--daily and/or --total"),
                          (("set", "--daily", "-1"), "must be a number > 0"),
                          (("set", "--daily", "1", "--unit", "eur"), "usd or tokens"),
                          (("set", "--daily", "1", "--reset-hour", "25"), "0..23"),
                          (("resume", "--group", "t:none"), "no budget for `t:none`")]:  # fmt: skip
        bad = cli(tmp_path, "budgets", *args)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)
