"""A few trials of the turn chaos harness on every run (the 50-trial run: `make chaos-turns`)."""

from __future__ import annotations

import subprocess
import sys

from conftest import needs_agent_clis


@needs_agent_clis("codex")
def test_turn_chaos_smoke() -> None:
    # Seed 3's trials: killed in the channel's send, killed in the model call, killed at a random time.
    result = subprocess.run([sys.executable, "-m", "agentlite.testing.chaos_turns", "--trials", "3", "--seed", "3"],
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.stdout == "3 trials: 0 lost, 0 duplicated, 0 left\n", result.stderr[-3000:]
    assert result.returncode == 0
    assert "strike=on_send" in result.stderr and "strike=in_call" in result.stderr
