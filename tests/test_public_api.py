"""The public surface: exactly the names a user is promised, each importable, documented and ours."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import agentlite

#: The public API, written out: adding or dropping a name is a decision, so it changes this list.
EXPECTED = [
    "Agent", "AgentEvent", "AgentLite", "AgentliteError", "BackendConfig", "BoxError", "BoxExecFailed",
    "BoxExists", "BoxInfo", "BoxNotFound", "BoxProcess", "BoxRemoveFailed", "BoxRuntime", "BoxSpec",
    "BoxStartFailed", "BoxState", "CleanupDecision", "CommandResult", "ConfigError", "Deadline", "Message",
    "RegisteredGroup", "RunError", "RunOutcome", "RunTimeout", "RuntimeChoice", "RuntimeUnavailable", "Task",
    "Verdict", "Volume", "box_name", "choose_runtime", "cleanup_orphans", "create", "open_runtime",
    "run_agent", "run_in_box",
]  # fmt: skip


def test_all_is_the_expected_list_in_order() -> None:
    assert agentlite.__all__ == EXPECTED
    assert dir(agentlite) == EXPECTED


def test_every_public_name_resolves_in_a_fresh_interpreter_and_is_documented_where_it_is_defined() -> None:
    # A fresh process: names another test already pulled in must not hide one that fails to load.
    code = (
        "import agentlite, inspect, json\n"
        "print(json.dumps({n: [getattr(agentlite, n).__module__, bool(getattr(agentlite, n).__dict__.get('__doc__')"
        " if inspect.isclass(getattr(agentlite, n)) else getattr(agentlite, n).__doc__)] for n in agentlite.__all__}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert sorted(found) == sorted(EXPECTED)
    assert [n for n, (module, _doc) in found.items() if not module.startswith("agentlite.")] == []
    assert [n for n, (_module, documented) in found.items() if not documented] == [], "undocumented"


def test_an_unknown_name_is_an_attribute_error() -> None:
    assert not hasattr(agentlite, "_EXPORTS_NOT_A_NAME")
    try:
        agentlite.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("agentlite.NoSuchThing resolved")


def test_the_type_checking_imports_name_the_same_objects_as_the_lazy_table() -> None:
    """Type checkers read the ``TYPE_CHECKING`` block, users get the lazy table: they must agree."""
    tree = ast.parse(Path(inspect.getfile(agentlite)).read_text())
    guarded = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    static = {alias.asname or alias.name: node.module for node in ast.walk(guarded)
              if isinstance(node, ast.ImportFrom) for alias in node.names}  # fmt: skip
    assert static == agentlite._EXPORTS


def test_the_runner_does_not_import_the_host_side() -> None:
    code = "import sys, agentlite.guest.runner._loop; print(sorted(m for m in ('agentlite.box.lifecycle', 'psutil', 'agentlite.platform.app') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == "[]\n"


@pytest.mark.parametrize("module", ["agentlite.platform.app", "agentlite.cli"])
def test_the_acp_library_is_loaded_only_where_acp_is_used(module: str) -> None:
    # About 0.4 s of imports that every CLI command but `acp`, and every agent without ACP peers,
    # never use.
    code = f"import sys, {module}; print('acp' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == "False\n"


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
