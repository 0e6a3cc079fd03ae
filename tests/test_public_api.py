"""The public surface: everything exported is listed, nothing private leaks, the list stays sorted."""

from __future__ import annotations

import subprocess
import sys

import agentlite


def test_all_is_complete_sorted_and_public() -> None:
    assert agentlite.__all__ == sorted(agentlite.__all__)
    assert not [name for name in agentlite.__all__ if name.startswith("_")]
    for name in agentlite.__all__:
        assert getattr(agentlite, name).__module__.startswith("agentlite"), name
    assert dir(agentlite) == agentlite.__all__


def test_the_runner_does_not_import_the_host_side() -> None:
    code = "import sys, agentlite.guest.runner._loop; print(sorted(m for m in ('agentlite.box.lifecycle', 'psutil', 'agentlite.platform.app') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == "[]\n"


def test_importing_the_package_does_not_load_boxlite() -> None:
    code = "import sys, agentlite; print('boxlite' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == "False\n"


def test_chaos_harness_smoke(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A few chaos trials on every run (the 100-trial run is `make chaos`)."""
    env = {"AGENTLITE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "agentlite.testing.chaos", "--trials", "3", "--seed", "7"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.stdout == "3 trials: 0 live boxes killed, 0 orphans left\n", result.stderr
    assert result.returncode == 0
