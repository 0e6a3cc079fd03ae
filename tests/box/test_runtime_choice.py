"""Choosing the runtime: auto, forced, and the errors that say what is missing."""

from __future__ import annotations

import pytest

from agentlite.box import choose_runtime
from agentlite.box.probe import boxlite_checks, sandbox_checks
from agentlite.core.errors import ConfigError, RuntimeUnavailable


def test_auto_prefers_boxlite_only_where_a_vm_can_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTLITE_RUNTIME", raising=False)
    choice = choose_runtime()
    vm_ok = all(c.ok for c in boxlite_checks())
    assert choice.name == ("boxlite" if vm_ok else "sandbox")
    if not vm_ok:
        assert choice.reason.startswith("BoxLite VMs cannot boot here:")


def test_env_var_forces_a_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    if not all(c.ok for c in sandbox_checks()):
        pytest.skip("sandbox prerequisites missing: " + str([c for c in sandbox_checks() if not c.ok]))
    monkeypatch.setenv("AGENTLITE_RUNTIME", "sandbox")
    assert (choose_runtime().name, choose_runtime().reason) == ("sandbox", "forced")


def test_unknown_runtime_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown runtime `lxc`; choose one of auto, boxlite, sandbox"):
        choose_runtime("lxc")


def test_forced_boxlite_without_virtualization_names_the_fix() -> None:
    bad = [c for c in boxlite_checks() if not c.ok]
    if not bad:
        pytest.skip("BoxLite VMs can boot here")
    with pytest.raises(RuntimeUnavailable) as info:
        choose_runtime("boxlite")
    assert info.value.missing == bad[0].detail and info.value.fix == bad[0].fix


def test_forced_sandbox_without_bwrap_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeUnavailable, match="apt-get install -y bubblewrap"):
        choose_runtime("sandbox")
