"""One exception tree: every error AgentLite defines derives from AgentliteError, and the package
raises builtin exceptions on purpose only where a library's protocol asks for them."""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import os
import pkgutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import agentlite
from agentlite.core.errors import AgentliteError, ConfigError, StoreError, describe_validation_error

ROOT = Path(agentlite.__file__).parent
BUILTIN_EXCEPTIONS = {
    name for name, obj in vars(builtins).items() if inspect.isclass(obj) and issubclass(obj, BaseException)
}


def agentlite_modules() -> list[str]:
    return [
        m.name
        for m in pkgutil.walk_packages(agentlite.__path__, "agentlite.")
        if not m.name.endswith("__main__")
    ]


def test_every_exception_class_of_the_package_derives_from_agentlite_error() -> None:
    outside = []
    for name in agentlite_modules():
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            is_error = inspect.isclass(obj) and issubclass(obj, BaseException)
            if is_error and obj.__module__ == name and not issubclass(obj, AgentliteError):
                outside.append(f"{name}.{attr}")
    assert outside == []
    assert len(agentlite_modules()) > 50  # the walk really saw the package


def test_no_class_defined_in_a_function_escapes_the_tree() -> None:
    """The walk above sees module-level classes; this sees every ``class X(SomeBuiltinError)``."""
    outside = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
                if bases & BUILTIN_EXCEPTIONS and not bases - BUILTIN_EXCEPTIONS:
                    outside.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert outside == [f"core/errors.py:{_line_of('AgentliteError')} AgentliteError"]


def _line_of(class_name: str) -> int:
    tree = ast.parse((ROOT / "core" / "errors.py").read_text())
    return next(n.lineno for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == class_name)


#: Builtin raises the package keeps on purpose: pydantic validators must raise ValueError (pydantic
#: turns it into a ValidationError naming the field), errno-carrying OSErrors from ctypes calls, a
#: ValueError caught two lines below in the same function, and invariants of the code itself.
ALLOWED_BUILTIN_RAISES = {
    ("__init__.py", "AttributeError"),  # the module __getattr__ protocol
    ("box/egress.py", "ConnectionRefusedError"),  # the proxy's own connect failure, an OSError to its caller
    ("box/sandbox.py", "ValueError"),  # a damaged box.json, caught in _read_state itself
    ("box/sandbox.py", "OSError"),  # setns errno
    ("guest/runner/_inbox.py", "OSError"),  # inotify errno
    ("platform/router.py", "ValueError"),  # a bad sender rule, caught in SenderAllowlist.load
    ("platform/store.py", "AssertionError"),  # the migration list itself is wrong
    ("offline/model_server.py", "RuntimeError"),  # the offline model server used before start
}
#: The test helpers may fail a test (AssertionError) or refuse misuse (RuntimeError) as tests expect.
TEST_HELPER_RAISES = {"AssertionError", "RuntimeError"}


#: Exits and markers, not errors.
NOT_ERRORS = {"NotImplementedError", "SystemExit", "KeyboardInterrupt", "StopIteration", "StopAsyncIteration"}


def _validators(tree: ast.AST) -> set[ast.AST]:
    """Function bodies decorated as pydantic validators."""
    found: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            names = {ast.unparse(d).split("(")[0].rsplit(".", 1)[-1] for d in node.decorator_list}
            if names & {"field_validator", "model_validator", "validator"}:
                found.update(ast.walk(node))
    return found


def test_the_package_raises_builtin_exceptions_only_where_a_protocol_asks_for_them() -> None:
    found = set()
    for path in ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text())
        in_validator = _validators(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and node.exc is not None and node not in in_validator:
                target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(target, ast.Name) and target.id in BUILTIN_EXCEPTIONS - NOT_ERRORS:
                    where = path.relative_to(ROOT).as_posix()
                    if not (where.startswith("testing/") and target.id in TEST_HELPER_RAISES):
                        found.add((where, target.id))
    assert found - ALLOWED_BUILTIN_RAISES == set()


def test_config_errors_stay_value_errors_for_callers_that_catch_those() -> None:
    from agentlite.core.names import InvalidName
    from agentlite.guest.runner._input import InputError
    from agentlite.platform.actions import PayloadError

    for cls in (ConfigError, InvalidName, PayloadError, InputError):
        assert issubclass(cls, ValueError) and issubclass(cls, AgentliteError)


def test_a_failed_image_build_is_not_a_config_error() -> None:
    from agentlite.core.errors import ImageBuildFailed, RunError
    from agentlite.guest.backends.base import TurnFailed
    from agentlite.platform.ipc import IpcRejected

    assert not issubclass(ImageBuildFailed, ConfigError)
    assert issubclass(TurnFailed, RunError) and issubclass(IpcRejected, AgentliteError)


def test_an_unknown_backend_is_one_error_wherever_it_is_named() -> None:
    from types import SimpleNamespace

    from agentlite.cli._endpoint import backend_config
    from agentlite.core.errors import UnknownBackend
    from agentlite.guest.backends.registry import make_backend

    with pytest.raises(UnknownBackend, match="unknown backend `gemini`; choose one of codex") as in_box:
        make_backend(SimpleNamespace(config=SimpleNamespace(type="gemini")))  # type: ignore[arg-type]
    with pytest.raises(UnknownBackend) as on_host:
        backend_config("gemini", None, None, None)
    assert in_box.value.kind == on_host.value.kind == "gemini"
    assert isinstance(on_host.value, ConfigError)


# -- the boundaries: the CLI, pydantic, sqlite3 ---------------------------------------------------


def agentlite_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLITE_")}
    env.update({"NO_COLOR": "1", "COLUMNS": "200", "AGENTLITE_HOME": str(cwd / "home")})
    return subprocess.run([sys.executable, "-m", "agentlite", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)  # fmt: skip


def test_the_cli_exits_2_for_a_usage_error_with_one_line_naming_it(tmp_path: Path) -> None:
    result = agentlite_cli("runs", "--state", "bogus", "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: --state `bogus` is not a run state (queued, ")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_cli_exits_1_for_a_failure_with_the_store_named_and_no_traceback(tmp_path: Path) -> None:
    registry = tmp_path / "w" / "store" / "agentlite.db"
    registry.parent.mkdir(parents=True)
    registry.write_bytes(b"not a database " * 100)
    result = agentlite_cli("agents", "list", "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr == f"error: store `{registry}`: cannot open it: file is not a database\n"


def test_a_corrupt_store_file_is_a_store_error_naming_the_file(tmp_path: Path) -> None:
    from agentlite.platform.store import AgentStore

    path = tmp_path / "store" / "messages.db"
    store = AgentStore(path)
    store.set_state("k", "v")
    store.close()
    with open(path, "r+b") as db:  # keep the header, wreck the pages behind it
        db.seek(100)
        db.write(b"\xff" * 8000)
    with pytest.raises(StoreError) as failed:
        store = AgentStore(path)
        store.get_state("k")
    assert failed.value.path == path and str(path) in str(failed.value)
    assert isinstance(failed.value.__cause__, sqlite3.Error)


def test_a_pydantic_validation_error_surfaces_as_a_config_error_naming_the_field(tmp_path: Path) -> None:
    from agentlite.platform.service import load_config

    config = tmp_path / "agentlite.toml"
    config.write_text('[[agents]]\nname = "x"\nnetwork = "everywhere"\n')
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    assert str(refused.value).startswith(
        f"config file `{config}`: `agents[0].network`: Input should be 'none'"
    )


def test_validation_problems_have_one_wording() -> None:
    from pydantic import BaseModel, ValidationError, field_validator

    class Inner(BaseModel):
        n: int

    class Outer(BaseModel):
        items: list[Inner]
        name: str

        @field_validator("name")
        @classmethod
        def _named(cls, value: str) -> str:
            if not value:
                raise ValueError("must not be empty")
            return value

    with pytest.raises(ValidationError) as caught:
        Outer.model_validate({"items": [{"n": "x"}], "name": ""})
    assert describe_validation_error(caught.value, "request") == (
        "`items[0].n`: Input should be a valid integer, unable to parse string as an integer;"
        " `name`: must not be empty"
    )
    assert describe_validation_error(caught.value, first_only=True).startswith("`items[0].n`: ")


def test_a_failed_turn_raises_run_error_on_request_and_a_timed_out_one_run_timeout() -> None:
    from agentlite.core.errors import RunError, RunTimeout
    from agentlite.run.box_run import RunOutcome
    from agentlite.run.turn import TurnResult

    ok = TurnResult(status="success", result="hi")
    assert ok.raise_for_status() is ok
    with pytest.raises(RunError, match=r"^model said no$") as failed:
        TurnResult(status="error", error="model said no").raise_for_status()
    assert not isinstance(failed.value, RunTimeout)
    outcome = RunOutcome(
        "error", "timeout", None, "Box timed out after 2 s", None, -9, "agentlite-x-g-1", timeout=2
    )
    with pytest.raises(RunTimeout, match="box `agentlite-x-g-1` timed out after 2 s"):
        outcome.raise_for_status()
    assert TurnResult(status="error", error="x").line()["error"] == "x"  # the final line has no extra key


def test_the_cli_maps_an_error_a_task_group_raised_and_leaves_bugs_as_tracebacks() -> None:
    from agentlite.cli._common import EXIT_FAILED, EXIT_USAGE, exit_code_for, expected_error

    refused = ConfigError("bad `x`")
    grouped = ExceptionGroup("supervisor", [refused, StoreError("s.db", "disk full")])
    assert expected_error(grouped) is refused and exit_code_for(refused) == EXIT_USAGE
    assert exit_code_for(StoreError("s.db", "disk full")) == EXIT_FAILED
    assert expected_error(ExceptionGroup("mixed", [refused, KeyError("bug")])) is None
    assert expected_error(KeyError("bug")) is None
