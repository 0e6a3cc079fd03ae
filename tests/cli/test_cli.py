"""The ``agentlite`` command line, run as a real subprocess the way a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agentlite.box.base import BoxSpec
from agentlite.box.ownership import RecordStore, ownership_for
from agentlite.box.sandbox import SandboxRuntime

AGENTLITE = [sys.executable, "-m", "agentlite"]


def cli(*args: str, home: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("AGENTLITE_HOME", None)
    env.pop("AGENTLITE_RUNTIME", None)
    if home is not None:
        env["AGENTLITE_HOME"] = str(home)
    return subprocess.run([*AGENTLITE, *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_doctor_json_says_which_runtime_and_why(home: Path) -> None:
    result = cli("doctor", "--json", home=home)
    data = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    assert data["runtime"] in ("sandbox", "boxlite") and data["reason"]
    names = [c["name"] for c in data["checks"]]
    assert names == [
        "bwrap",
        "nsenter/setpriv",
        "user namespaces",
        "socat",
        "box network",
        "box user",
        "syscall filter",
        "limit memory",
        "limit cpus",
        "limit pids",
        "limit /tmp size",
        "hardware virtualization",
        "/dev/kvm",
        "boxlite",
        "agent CLI codex",
        "agent CLI claude",
        "agent CLI codex-acp",
        "agent CLI claude-agent-acp",
        "guest image",
    ]
    versions = {
        c["name"]: c["detail"] for c in data["checks"] if c["name"].startswith("agent CLI") and c["ok"]
    }
    if "agent CLI codex" in versions:
        assert versions["agent CLI codex"].startswith("codex-cli 0.169.0")
        assert versions["agent CLI claude"].startswith("2.1.197 (Claude Code)")
    assert all(set(c) == {"name", "ok", "detail", "fix"} for c in data["checks"])
    if not next(c for c in data["checks"] if c["name"] == "hardware virtualization")["ok"]:
        assert data["runtime"] == "sandbox" and "BoxLite VMs cannot boot here" in data["reason"]


def test_forcing_an_impossible_runtime_fails_at_once_with_the_fix(home: Path) -> None:
    doctor = json.loads(cli("doctor", "--json", home=home).stdout)
    vm_checks = {"hardware virtualization", "/dev/kvm", "boxlite"}
    vm_ok = all(c["ok"] for c in doctor["checks"] if c["name"] in vm_checks)
    if vm_ok:
        pytest.skip("BoxLite can boot VMs here, so forcing it is not an error")
    result = cli("exec", "--runtime", "boxlite", "--", "true", home=home)
    assert result.returncode == 2
    assert result.stderr.startswith("error: runtime `boxlite` cannot run here:") and "Fix:" in result.stderr
    assert not (home / "agentlite-active-boxes").exists()


def test_exec_streams_output_and_exits_with_the_command_code(home: Path) -> None:
    result = cli("exec", "--group", "demo", "--", "sh", "-c", "echo out; echo err >&2; exit 7", home=home)
    assert (result.returncode, result.stdout) == (7, "out\n")
    assert "err\n" in result.stderr
    assert RecordStore(home).record_names() == []
    assert (home / "sandbox").is_dir() and not [
        p for p in (home / "sandbox").iterdir() if not p.name.startswith(".")
    ]


def test_exec_with_volume_env_and_no_network(home: Path, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("shared")
    result = cli(
        "exec",
        "--volume",
        f"{tmp_path}:/workspace/in:ro",
        "--env",
        "X=1",
        "--no-network",
        "--",
        "sh",
        "-c",
        "cat /workspace/in/f.txt; echo; echo $X; tail -n +3 /proc/net/dev | cut -d: -f1",
        home=home,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["shared", "1", "lo"]


def test_exec_timeout_kills_and_cleans_up(home: Path) -> None:
    result = cli("exec", "--timeout", "1", "--", "sleep", "30", home=home)
    assert result.returncode == 124
    assert "timed out after 1 s" in result.stderr
    assert RecordStore(home).record_names() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["exec", "--volume", "nope", "--", "true"],
            "error: volume `nope` must look like HOST:GUEST or HOST:GUEST:ro",
        ),
        (["exec", "--timeout", "-5", "--", "true"], "error: timeout must be > 0 seconds, got -5"),
        (["host", "--jsonl", "--timeout", "0"], "error: timeout must be > 0 seconds, got 0"),
        (
            ["exec", "--runtime", "qemu", "--", "true"],
            "error: unknown runtime `qemu`; choose one of auto, boxlite, sandbox",
        ),
        (["exec", "--agent", "bad id!", "--", "true"], "error: agent id `bad id!` may use only letters"),
        (["exec", "--env", "NOEQUALS", "--", "true"], "error: env `NOEQUALS` must look like KEY=VALUE"),
        (["exec", "--memory", "1", "--", "true"], "error: box memory must be at least 64 MiB, got 1"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_creates_nothing(home: Path, args: list[str], message: str) -> None:
    result = cli(*args, home=home)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert not (home / "sandbox").exists() and not (home / "agentlite-active-boxes").exists()


def test_home_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = cli("boxes", "--home", str(blocker / "home"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: home `{blocker / 'home'}` cannot be created")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signals_tear_the_box_down(home: Path, signum: int) -> None:
    env = {**os.environ, "AGENTLITE_HOME": str(home)}
    proc = subprocess.Popen(
        [*AGENTLITE, "exec", "--", "sh", "-c", "echo up; sleep 60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "up\n"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum
    assert "box removed" in err
    assert RecordStore(home).record_names() == []
    assert [p for p in (home / "sandbox").iterdir() if not p.name.startswith(".")] == []


async def test_boxes_and_cleanup_report_owner_and_decisions(home: Path, sandbox: SandboxRuntime) -> None:
    ownership_for(home).register("agentlite-a-live-1")
    await sandbox.create("agentlite-a-live-1", BoxSpec())
    await sandbox.create("agentlite-a-orphan-1", BoxSpec())
    try:
        boxes = json.loads(cli("boxes", "--json", home=home).stdout)
        by_name = {b["name"]: b for b in boxes}
        assert set(by_name) == {"agentlite-a-live-1", "agentlite-a-orphan-1"}
        live = by_name["agentlite-a-live-1"]
        assert (live["state"], live["running"], live["owner"]["pid"], live["owner"]["verdict"]) == (
            "running",
            True,
            os.getpid(),
            "live",
        )
        assert set(live["owner"]) >= {"pid", "boot_id", "updated_at", "verdict"}
        assert by_name["agentlite-a-orphan-1"]["owner"] is None
        table = cli("boxes", home=home).stdout
        assert "agentlite-a-live-1" in table and "live" in table and "none" in table

        dry = json.loads(cli("cleanup", "--agent", "a", "--dry-run", "--json", home=home).stdout)
        assert sorted((d["name"], d["action"], d["removed"]) for d in dry) == [
            ("agentlite-a-live-1", "keep", False),
            ("agentlite-a-orphan-1", "remove", False),
        ]
        assert len(await sandbox.list()) == 2
        done = json.loads(cli("cleanup", "--agent", "a", "--json", home=home).stdout)
        removed = next(d for d in done if d["name"] == "agentlite-a-orphan-1")
        assert removed == {
            "name": "agentlite-a-orphan-1",
            "action": "remove",
            "reason": "removed: no record",
            "removed": True,
            "error": None,
            "pending": False,
        }
        kept = next(d for d in done if d["name"] == "agentlite-a-live-1")
        assert kept["reason"].startswith(f"kept: owner pid {os.getpid()} alive, heartbeat")
        assert [b.name for b in await sandbox.list()] == ["agentlite-a-live-1"]
        table = cli("cleanup", "--agent", "a", "--include-live", home=home)
        assert table.returncode == 0 and "agent deleted" in table.stdout
        assert await sandbox.list() == []
    finally:
        ownership_for(home).unregister("agentlite-a-live-1")


def test_cli_logs_go_to_stderr_only(home: Path) -> None:
    result = cli("--log-level", "info", "exec", "--", "echo", "hi", home=home)
    assert result.stdout == "hi\n"
    assert "level=info logger=agentlite.box" in result.stderr and "runtime=sandbox" in result.stderr
