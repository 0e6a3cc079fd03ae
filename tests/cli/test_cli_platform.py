"""The platform commands as a user runs them: agents, tasks, serve, chat (real subprocesses)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs_agent_clis


def cli(
    workdir: Path, *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    env.update(AGENTLITE_WORKDIR=str(workdir), NO_COLOR="1", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "agentlite", *args], capture_output=True, text=True, env=env,
                          input=stdin, timeout=timeout)  # fmt: skip


def test_agents_create_list_delete(tmp_path: Path) -> None:
    made = cli(
        tmp_path,
        "agents",
        "create",
        "helper",
        "--assistant-name",
        "Hal",
        "--backend",
        "claude_code",
        "--json",
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)[0]["assistant_name"] == "Hal"
    again = cli(tmp_path, "agents", "create", "helper")
    assert again.returncode == 2 and again.stderr.startswith("error: Agent `helper` already exists")
    listed = json.loads(cli(tmp_path, "agents", "list", "--json").stdout)
    assert [(a["name"], a["backend"]) for a in listed] == [("helper", "claude_code")]
    assert "helper" in cli(tmp_path, "agents", "list").stdout
    gone = cli(tmp_path, "agents", "delete", "helper", "--json")
    assert json.loads(gone.stdout) == {"name": "helper", "deleted": True}
    assert json.loads(cli(tmp_path, "agents", "list", "--json").stdout) == []
    assert cli(tmp_path, "agents", "delete", "helper").returncode == 1


def _register_group(workdir: Path) -> None:
    """A registered group, the way `serve` would leave one (through the SDK)."""
    code = (
        "import asyncio, agentlite\n"
        "async def main():\n"
        f"    async with await agentlite.create(workdir={str(workdir)!r}, runtime='sandbox') as p:\n"
        "        a = await p.get_or_create_agent('main', backend={'type': 'codex'})\n"
        "        await a.start(); a.register_group('t:main', name='main', folder='main', is_main=True); await a.stop()\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_tasks_lifecycle_and_bad_input_lose_nothing(tmp_path: Path) -> None:
    _register_group(tmp_path)
    made = cli(tmp_path, "tasks", "create", "--group", "t:main", "--type", "cron", "--value", "0 9 * * *",
               "--json", "morning summary")  # fmt: skip
    assert made.returncode == 0, made.stderr
    task = json.loads(made.stdout)[0]
    assert task["status"] == "active" and task["next_run"].endswith("T09:00:00.000Z")
    bad_cron = cli(
        tmp_path, "tasks", "create", "--group", "t:main", "--type", "cron", "--value", "61 * * * *", "x"
    )
    assert bad_cron.returncode == 2 and "cron expression `61 * * * *`" in bad_cron.stderr
    unknown = cli(
        tmp_path, "tasks", "create", "--group", "t:nope", "--type", "interval", "--value", "60000", "x"
    )
    assert unknown.returncode == 2 and "unknown group `t:nope`" in unknown.stderr
    assert [t["id"] for t in json.loads(cli(tmp_path, "tasks", "list", "--json").stdout)] == [task["id"]]
    paused = json.loads(cli(tmp_path, "tasks", "pause", task["id"], "--json").stdout)[0]
    assert paused["status"] == "paused"
    resumed = json.loads(cli(tmp_path, "tasks", "resume", task["id"], "--json").stdout)[0]
    assert resumed["status"] == "active"
    assert json.loads(cli(tmp_path, "tasks", "cancel", task["id"], "--json").stdout) == {"id": task["id"],
                                                                                        "cancelled": True}  # fmt: skip
    assert json.loads(cli(tmp_path, "tasks", "list", "--json").stdout) == []
    assert cli(tmp_path, "tasks", "list", "--agent", "ghost").stderr.startswith(
        "error: unknown agent `ghost`"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '[[agents]]\nname = "x"\nbackend = { type = "gemini" }\n',
            "`agents[0].backend.type`: Input should be",
        ),
        ("max_concurrent = 0\n", "`max_concurrent`: Input should be greater than or equal to 1"),
        ("surprise = 1\n", "`surprise`: Extra inputs are not permitted"),
        ('adopt_runs = "maybe"\n', "`adopt_runs`: Input should be a valid boolean"),
        ("this is not toml", "is not valid TOML"),
        ('[[agents]]\nname = "a"\n[[agents]]\nname = "a"\n', "agent names must be unique"),
    ],
)
def test_serve_refuses_a_bad_config_before_starting(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "agentlite.toml"
    config.write_text(content)
    result = cli(tmp_path / "data", "serve", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: config file `{config}`") or "TOML" in result.stderr
    assert message in result.stderr
    assert not (tmp_path / "data").exists()  # nothing was started or created


def test_serve_runs_until_sigterm_and_shuts_down_cleanly(tmp_path: Path) -> None:
    config = tmp_path / "agentlite.toml"
    config.write_text(
        'workdir = "data"\n[[agents]]\nname = "main"\nbackend = { type = "codex", base_url = "http://127.0.0.1:9/v1" }\n'
        '[[agents.groups]]\njid = "t:main"\nname = "main"\nfolder = "main"\nis_main = true\n'
    )
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "agentlite", "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    assert proc.stderr is not None
    lines = []
    for line in iter(proc.stderr.readline, ""):  # blocks per line; the test timeout bounds it
        lines.append(line)
        if "agent main started" in line:
            break
    else:
        raise AssertionError(f"serve exited before its agent started: {''.join(lines)}")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + err
    assert out == ""  # logs go to stderr only
    assert "level=info logger=agentlite.service" in "".join(lines) + err
    assert (tmp_path / "data" / "store" / "agentlite.db").exists()


@needs_agent_clis("codex")
def test_chat_answers_in_the_terminal_on_the_demo_model(tmp_path: Path) -> None:
    result = cli(tmp_path, "chat", stdin="hello from the terminal\n")
    assert result.returncode == 0, result.stderr
    assert '[offline demo model] You said: "hello from the terminal"' in " ".join(result.stdout.split())
    assert "offline demo model, not a real one" in result.stderr


def test_chat_refuses_a_bad_backend_option_before_making_anything(tmp_path: Path) -> None:
    bad = cli(tmp_path, "chat", "--backend", "gemini", stdin="")
    assert bad.returncode == 2 and "unknown backend `gemini`" in bad.stderr
    url = cli(tmp_path, "chat", "--base-url", "ftp://x", stdin="")
    assert url.returncode == 2 and "must start with http:// or https://" in url.stderr
    assert json.loads(cli(tmp_path, "agents", "list", "--json").stdout) == []


@needs_agent_clis("codex")
async def test_chat_takes_backend_model_and_base_url(tmp_path: Path) -> None:
    from agentlite.testing import ModelServer

    async with ModelServer(scenario="text") as model:
        made = await asyncio.to_thread(cli, tmp_path, "chat", "--backend", "codex", "--model", "m-one",
                                       "--base-url", model.openai_base_url, stdin="hello\n")  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert "hi from the offline model" in made.stdout and "offline demo model" not in made.stderr
        assert {r.body.get("model") for r in model.requests if r.path == "/v1/responses"} == {"m-one"}
        listed = json.loads(cli(tmp_path, "agents", "list", "--json").stdout)
        assert [(a["name"], a["backend"], a["model"]) for a in listed] == [("main", "codex", "m-one")]
        # An existing agent: --model alone changes only the model, and says so.
        again = await asyncio.to_thread(cli, tmp_path, "chat", "--model", "m-two", stdin="again\n")
        assert again.returncode == 0, again.stderr
        assert "backend codex -> codex (model m-two" in again.stderr
        assert [r.body.get("model") for r in model.requests if r.path == "/v1/responses"][-1] == "m-two"
