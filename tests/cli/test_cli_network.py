"""The network options at the doors: ``exec``/``run`` flags, the serve file's keys, an agent's
saved settings. Bad input is refused with a message naming it (exit 2 for the CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentlite.box.network import load_network_settings, save_network_settings
from agentlite.core.errors import ConfigError
from agentlite.platform.service import load_config
from conftest import needs_sandbox

AGENTLITE = [sys.executable, "-m", "agentlite"]


def cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", "AGENTLITE_HOME": str(home)}
    env.pop("AGENTLITE_RUNTIME", None)
    return subprocess.run([*AGENTLITE, *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--network", "bridge"], "network mode `bridge` is not one of: none, egress, allowlist, host"),
        (["--no-network", "--network", "egress"], "--no-network contradicts --network egress"),
        (["--network", "host", "--allow-net", "a.com"], "--allow-net needs --network allowlist, not `host`"),
        (["--allow-net", "a.com:99999"], "allowlist entry `a.com:99999` has port `99999`"),
    ],
)
def test_exec_refuses_bad_network_options(home: Path, args: list[str], message: str) -> None:
    result = cli("exec", *args, "--", "true", home=home)
    assert result.returncode == 2 and message in result.stderr, result.stderr


@needs_sandbox
def test_exec_network_modes_reach_the_box(home: Path) -> None:
    proxy = "echo proxy=${HTTPS_PROXY:-unset}"
    none = cli("exec", "--no-network", "--", "sh", "-c", proxy, home=home)
    allow = cli("exec", "--allow-net", "example.com", "--", "sh", "-c", proxy, home=home)
    host = cli("exec", "--network", "host", "--", "sh", "-c", proxy, home=home)
    assert none.stdout.strip() == "proxy=unset", none.stderr
    assert allow.stdout.strip() == "proxy=http://127.0.0.1:3128", allow.stderr
    assert host.stdout.strip() == "proxy=unset" and "network mode `host`" in host.stderr, host.stderr


def test_serve_file_network_keys(tmp_path: Path) -> None:
    path = tmp_path / "agentlite.toml"
    path.write_text(
        '[[agents]]\nname = "a"\nnetwork = "allowlist"\nallow_net = ["api.openai.com", "*.github.com"]\n'
    )
    agent = load_config(path, env={}).agents[0]
    assert (agent.network, agent.allow_net) == ("allowlist", ["api.openai.com", "*.github.com"])
    path.write_text('[[agents]]\nname = "a"\nnetwork = "egress"\nallow_net = ["api.openai.com"]\n')
    with pytest.raises(ConfigError, match=r"agents\[0\]\.allow_net` needs network = \"allowlist\""):
        load_config(path, env={})
    path.write_text('[[agents]]\nname = "a"\nnetwork = "bridge"\n')
    with pytest.raises(ConfigError, match=r"agents\[0\]\.network"):
        load_config(path, env={})
    path.write_text('[[agents]]\nname = "a"\nallow_net = ["bad entry"]\n')
    with pytest.raises(ConfigError, match="allowlist entry `bad entry`"):
        load_config(path, env={})


def test_agent_network_settings_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "network.json"
    assert load_network_settings(path) == {"mode": "egress", "allow_net": []}
    save_network_settings(path, "allowlist", ["API.example.com:443"])
    assert load_network_settings(path) == {"mode": "allowlist", "allow_net": ["api.example.com:443"]}
    with pytest.raises(ConfigError, match="need network mode `allowlist`"):
        save_network_settings(path, "none", ["a.com"])
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        load_network_settings(path)


async def test_doctor_names_agents_in_host_mode(tmp_path: Path, home: Path) -> None:
    import json

    import agentlite

    workdir = tmp_path / "platform"
    async with await agentlite.create(workdir=workdir, runtime="sandbox") as platform:
        shared = await platform.create_agent("shared", backend={"type": "codex"})
        quiet = await platform.create_agent("quiet", backend={"type": "codex"})
        assert shared.set_network("host") == {"mode": "host", "allow_net": []}
        quiet.set_network("allowlist", ["api.openai.com"])
        assert quiet.get_network() == {"mode": "allowlist", "allow_net": ["api.openai.com"]}
        with pytest.raises(ConfigError, match="network mode `open` is not one of"):
            quiet.set_network("open")
    env = {**os.environ, "AGENTLITE_HOME": str(home), "AGENTLITE_WORKDIR": str(workdir)}
    result = subprocess.run(
        [*AGENTLITE, "doctor", "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    check = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "box network")
    assert (
        not check["ok"] and "agents shared:" in check["detail"] and "network mode `host`" in check["detail"]
    )


async def test_an_agents_network_reaches_its_boxes(tmp_path: Path) -> None:
    """A real agent turn with the agent set to `none`: its model endpoint and actions server are
    bridged in, so it still answers, and the run log names the mode."""
    import json

    import agentlite
    from agentlite.testing import ModelServer
    from agentlite.testing.channels import RecordingChannels

    channels = RecordingChannels()

    async with (
        ModelServer(scenario="text") as model,
        await agentlite.create(
            workdir=tmp_path / "data", runtime="sandbox", timezone="UTC", idle_timeout=5
        ) as platform,
    ):
        backend = {"type": "codex", "base_url": model.openai_base_url, "max_retries": 0}
        agent = await platform.get_or_create_agent("main", backend=backend, channels={"test": channels})
        agent.set_network("none")
        await agent.start()
        agent.register_group("t:main", name="main", folder="main", is_main=True)
        await channels.channel.say("t:main", "hello")
        assert await channels.channel.wait_sent(1) == [("t:main", "hi from the offline model")]
        await agent.stop()
        logs = sorted((platform.box_home / "logs").glob("*.log"))
    assert logs, "no run log"
    header = json.loads(logs[-1].read_text().split("\n\n=== stdout", 1)[0])
    assert header["network"] == "none"
