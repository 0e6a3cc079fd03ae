"""The placement seam without a cluster: the base install never imports Ray, and the settings
(``placement``, ``ray_address``, ``node_slots``; ``serve --ray-address``) are checked with clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentlite.placement import PlacementConfig

CLI = str(Path(sys.executable).parent / "agentlite")


def test_base_install_never_imports_ray() -> None:
    """``import agentlite``, the platform and the local placement load without Ray."""
    code = (
        "import sys, agentlite, agentlite.platform.app, agentlite.placement, agentlite.placement.local, agentlite.cli\n"
        "from agentlite.placement import PlacementConfig, open_placement\n"
        "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ray'))\n"
        "print('no ray')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "no ray", done.stderr


def test_placement_settings_are_checked() -> None:
    from agentlite.core.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown placement `moon`"):
        PlacementConfig(kind="moon")
    with pytest.raises(ConfigError, match="node_slots must be at least 1"):
        PlacementConfig(kind="ray", node_slots=0)
    with pytest.raises(ConfigError, match="node_root `nodes` must be an absolute path"):
        PlacementConfig(kind="ray", node_root="nodes")
    assert PlacementConfig.choose(None, ray_address="10.0.0.5:6379").kind == "ray"
    assert PlacementConfig.choose(None).kind in ("local", os.environ.get("AGENTLITE_PLACEMENT", "local"))


def test_serve_config_and_flag_choose_ray(tmp_path: Path) -> None:
    from agentlite.core.errors import ConfigError
    from agentlite.platform.service import load_config

    config = tmp_path / "agentlite.toml"
    config.write_text('placement = "ray"\nray_address = "10.0.0.5:6379"\nnode_slots = 3\n')
    settings = load_config(config, env={})
    chosen = settings.placement_config()
    assert (chosen.kind, chosen.ray_address, chosen.node_slots) == ("ray", "10.0.0.5:6379", 3)
    config.write_text('placement = "moon"\n')
    with pytest.raises(ConfigError, match="`placement`"):
        load_config(config, env={})
    config.write_text("")
    done = subprocess.run([CLI, "serve", "--config", str(config), "--ray-address", ""], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "ray_address must not be empty" in done.stderr, done.stderr
