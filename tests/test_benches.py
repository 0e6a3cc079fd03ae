"""The benchmarks in bench/ still run against the current code and print their figures.

They hook into the platform's seams (the agent's message loop and group queue, the placement's
runtime), so a refactor that moves those breaks a bench long before anyone runs it by hand. Each is
run for real, as a subprocess, with the smallest arguments it accepts.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs_codex, needs_sandbox

REPO = Path(__file__).resolve().parents[1]


def run_bench(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "bench" / argv[0]), *argv[1:]], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip


def test_message_throughput_bench_answers_every_message() -> None:
    done = run_bench("message_throughput.py", "--messages", "40", "--groups", "4")
    assert done.returncode == 0, done.stderr
    assert "stranded 0, seen twice 0" in done.stdout, done.stdout
    assert "groups whose cursor covers their last message: 4/4" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.slow
@needs_sandbox
@needs_codex
def test_platform_overhead_bench_prints_its_ratio() -> None:
    done = run_bench("platform_overhead.py", "--rounds", "5")
    assert done.returncode == 0, done.stderr
    assert "ratio platform / bare spawn" in done.stdout, done.stdout
    assert "target: platform time <=" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.slow
@needs_sandbox
@needs_codex
def test_acp_first_update_bench_leaves_stderr_clean() -> None:
    done = run_bench("acp_first_update.py", "--rounds", "1")
    assert done.returncode == 0, done.stderr
    assert "prompt_to_first_text" in done.stdout, done.stdout
    # No subprocess transport may outlive the event loop ("Exception ignored ... loop is closed").
    assert done.stderr == "", done.stderr
