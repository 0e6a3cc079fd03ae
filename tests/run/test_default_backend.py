"""One default backend everywhere: the model, the SDK, ``agentlite.toml`` and the CLI agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import agentlite
from agentlite.platform.service import load_config
from agentlite.run.protocol import DEFAULT_BACKEND_TYPE, BackendConfig


def test_the_default_is_codex_which_the_offline_model_answers() -> None:
    assert DEFAULT_BACKEND_TYPE == "codex" and BackendConfig().type == DEFAULT_BACKEND_TYPE


async def test_an_sdk_agent_without_a_backend_gets_the_default(tmp_path: Path) -> None:
    async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox") as platform:
        agent = await platform.create_agent("plain")
        assert agent.get_backend() == BackendConfig()
        assert (await platform.get_or_create_agent("other")).get_backend().type == DEFAULT_BACKEND_TYPE


def test_a_toml_agent_without_a_backend_gets_the_default(tmp_path: Path) -> None:
    path = tmp_path / "agentlite.toml"
    path.write_text('[[agents]]\nname = "main"\n')
    assert load_config(path, env={}).agents[0].backend == BackendConfig()


def test_cli_agents_create_without_a_backend_gets_the_default(tmp_path: Path) -> None:
    env = {**os.environ, "AGENTLITE_WORKDIR": str(tmp_path / "data")}
    made = subprocess.run([sys.executable, "-m", "agentlite", "agents", "create", "helper", "--json"],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)[0]["backend"] == DEFAULT_BACKEND_TYPE
