"""The public surface: everything exported is listed, nothing private leaks, the list stays sorted."""

from __future__ import annotations

import subprocess
import sys

import agentlite


def test_all_is_complete_sorted_and_public() -> None:
    public = {name for name in vars(agentlite) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(agentlite, name)).__name__ == "module"}
    assert set(agentlite.__all__) == public - modules
    assert agentlite.__all__ == sorted(agentlite.__all__)
    for name in agentlite.__all__:
        assert getattr(agentlite, name).__module__.startswith("agentlite")


def test_importing_the_package_does_not_load_boxlite() -> None:
    code = "import sys, agentlite; print('boxlite' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == "False\n"


def test_chaos_harness_smoke(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A few chaos trials on every run (the 100-trial run is `make chaos`)."""
    env = {"AGENTLITE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "agentlite.chaos", "--trials", "3", "--seed", "7"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.stdout == "3 trials: 0 live boxes killed, 0 orphans left\n", result.stderr
    assert result.returncode == 0
