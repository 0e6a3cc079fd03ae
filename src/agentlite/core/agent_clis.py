"""Where the agent CLIs live (pinned in ``agent-clis/package.json``) and which versions they are."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

ENV_AGENT_CLIS = "AGENTLITE_AGENT_CLIS"
CLI_NAMES = ("codex", "claude", "codex-acp", "claude-agent-acp")


@functools.cache
def agent_clis_prefix() -> Path | None:
    """The folder holding ``node_modules/.bin`` with the agent CLIs, or ``None`` if not installed.

    ``$AGENTLITE_AGENT_CLIS`` wins; else the ``agent-clis`` folder of the checkout this package
    was installed from.
    """
    if env := os.environ.get(ENV_AGENT_CLIS):
        return Path(env).resolve()
    import agentlite

    checkout = Path(agentlite.__file__).resolve().parents[2] / "agent-clis"
    return checkout if (checkout / "node_modules" / ".bin").is_dir() else None


def agent_clis_bin() -> Path | None:
    prefix = agent_clis_prefix()
    return None if prefix is None else prefix / "node_modules" / ".bin"


def cli_version(name: str) -> str | None:
    """The version a CLI reports, or ``None`` when it is missing or fails."""
    bin_dir = agent_clis_bin()
    if bin_dir is None or not (bin_dir / name).exists():
        return None
    if name.endswith("-acp"):
        return "installed"  # ACP adapters speak only the protocol; they have no --version
    try:
        out = subprocess.run([str(bin_dir / name), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
