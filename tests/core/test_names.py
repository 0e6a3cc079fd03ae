"""Names that become paths are checked at every door: the SDK, the CLI, a TOML config, IPC.

``host --jsonl`` is covered in ``test_hostmode_input.py``. Each refusal must leave the folders
around it exactly as they were: the tests snapshot them before and after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import agentlite
from agentlite.box.sandbox import check_box_name as sandbox_check_box_name
from agentlite.core.errors import ConfigError
from agentlite.core.names import (
    AGENT_NAME,
    GROUP_FOLDER,
    InvalidName,
    check_agent_id,
    check_agent_name,
    check_box_name,
    check_group_folder,
    check_task_id,
    child_path,
)
from agentlite.platform.ipc import IpcWatcher
from agentlite.platform.service import load_config

#: What every kind refuses: climbing out, separators, NUL and control characters, hidden or
#: option-like names, and a name far over any limit.
HOSTILE = ["", ".", "..", "../x", "../../x", "a/b", "/abs", "a\\b", "a\0b", "a\nb", "a\tb", "-rf", ".hidden",
           "x" * 300, " a", "a "]  # fmt: skip
CHECKS = [check_agent_name, check_agent_id, check_group_folder, check_box_name, check_task_id]


def snapshot(*folders: Path) -> dict[str, list[str]]:
    """Every path under ``folders`` (recursively), to compare before and after a refusal."""
    seen: dict[str, list[str]] = {}
    for folder in folders:
        seen[str(folder)] = sorted(
            str(Path(root, name).relative_to(folder)) for root, dirs, files in os.walk(folder) for name in dirs + files
        )  # fmt: skip
    return seen


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", HOSTILE, ids=repr)
def test_every_kind_refuses_hostile_names(check, name: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidName) as info:
        check(name)
    message = str(info.value)
    assert "\0" not in message and "\n" not in message  # printable, one line
    assert isinstance(info.value, ConfigError)  # exit 2 on the CLI


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_every_kind_refuses_a_non_string(check) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidName, match="must be a string"):
        check(None)


def test_ordinary_names_pass_and_limits_are_stated() -> None:
    assert check_agent_name("alice.v2") == "alice.v2"
    assert check_agent_id("Ab3dE9xZ") == "Ab3dE9xZ"
    assert check_group_folder("family-chat") == "family-chat"
    assert check_box_name("agentlite-Ab3dE9xZ-main-1700000000000") == "agentlite-Ab3dE9xZ-main-1700000000000"
    assert check_task_id("task-1700000000000-abc123") == "task-1700000000000-abc123"
    check_agent_name("a" * 64)
    with pytest.raises(InvalidName, match="1 to 64 characters"):
        check_agent_name("a" * 65)
    with pytest.raises(InvalidName, match="reserved"):
        check_group_folder("Global")


def test_a_long_name_is_shown_cut_in_the_error() -> None:
    with pytest.raises(InvalidName) as info:
        check_agent_name("x" * 300)
    assert "(300 characters)" in str(info.value) and len(str(info.value)) < 300


def test_the_sandbox_box_name_check_is_the_same_rule() -> None:
    for name in ("../x", "a/b", "x" * 300, "a\0b"):
        with pytest.raises(InvalidName):
            sandbox_check_box_name(name)


def test_child_path_refuses_a_symlinked_child(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    os.symlink("/etc", tmp_path / "agents" / "evil")
    with pytest.raises(InvalidName, match="would leave its folder"):
        child_path(tmp_path / "agents", "evil", AGENT_NAME)
    assert child_path(tmp_path / "agents", "good", AGENT_NAME) == (tmp_path / "agents" / "good").resolve()
    with pytest.raises(InvalidName):
        child_path(tmp_path / "agents", "..", GROUP_FOLDER)


# -- the SDK ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["..", "../../x", "a/b", "a\0b", "x" * 300], ids=repr)
async def test_sdk_create_and_delete_refuse_bad_agent_names(tmp_path: Path, name: str) -> None:
    workdir = tmp_path / "data"
    outside = tmp_path / "x"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    async with await agentlite.create(workdir=workdir, runtime="sandbox") as platform:
        before = snapshot(tmp_path)
        with pytest.raises(InvalidName):
            await platform.create_agent(name)
        with pytest.raises(InvalidName):
            await platform.delete_agent(name)
        assert snapshot(tmp_path) == before
        assert platform.registry.list() == []
    assert (outside / "keep.txt").read_text() == "precious"


async def test_sdk_register_group_refuses_bad_folders_and_creates_nothing(tmp_path: Path) -> None:
    async with await agentlite.create(workdir=tmp_path / "data", runtime="sandbox") as platform:
        agent = await platform.create_agent("main", backend={"type": "codex"})
        await agent.start()
        try:
            # Only the folders a group could land in: the store and box records change on their own.
            watched = (agent.groups_dir, agent.workdir / "data", tmp_path / "data" / "agents")

            def state() -> tuple[object, ...]:
                return snapshot(*watched), sorted(os.listdir(tmp_path)), sorted(os.listdir(tmp_path / "data"))

            before = state()
            for folder in ["..", "../x", "a/b", "a\0b", "x" * 300, "global", ".hidden"]:
                with pytest.raises(InvalidName):
                    agent.register_group(f"t:{len(folder)}", name="g", folder=folder)
            assert state() == before
            assert agent.registered_groups() == {}
        finally:
            await agent.stop()


# -- the CLI ----------------------------------------------------------------------------------------


def cli(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENTLITE_WORKDIR": str(workdir), "AGENTLITE_RUNTIME": "sandbox"}
    return subprocess.run([sys.executable, "-m", "agentlite", *args], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip


@pytest.mark.parametrize("name", ["../../x", "a/b", "x" * 300, "-x"], ids=repr)
def test_cli_agents_create_and_delete_exit_2_and_touch_nothing(tmp_path: Path, name: str) -> None:
    workdir = tmp_path / "data"
    victim = tmp_path / "x"  # where `agents/../../x` would land
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    assert cli(workdir, "agents", "list").returncode == 0  # the platform folder exists from here on
    before = snapshot(tmp_path)
    for command in ("create", "delete"):
        result = cli(workdir, "agents", command, "--", name)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "agent name" in result.stderr
    assert snapshot(tmp_path) == before
    assert (victim / "keep.txt").read_text() == "precious"


def test_cli_tasks_refuse_a_bad_task_id(tmp_path: Path) -> None:
    result = cli(tmp_path / "data", "tasks", "cancel", "../x")
    assert result.returncode == 2 and "task id" in result.stderr


# -- a TOML config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "value"),
    [("agent", "../../x"), ("agent", "x" * 300), ("folder", ".."), ("folder", "a/b"), ("folder", "x" * 300)],
)
def test_config_refuses_bad_agent_names_and_group_folders(tmp_path: Path, where: str, value: str) -> None:
    agent, folder = (value, "main") if where == "agent" else ("main", value)
    path = tmp_path / "agentlite.toml"
    path.write_text(
        f'[[agents]]\nname = {json.dumps(agent)}\n\n[[agents.groups]]\njid = "t:1"\nname = "g"\n'
        f"folder = {json.dumps(folder)}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(path) in str(info.value) and (
        "agent name" in str(info.value) or "group folder" in str(info.value)
    )


# -- IPC --------------------------------------------------------------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        async def record(*args: object, **kwargs: object) -> None:
            self.calls.append((name, (*args, *kwargs.values())))

        return record


class _Group:
    def __init__(self, jid: str, folder: str, is_main: bool) -> None:
        self.jid, self.folder, self.is_main = jid, folder, is_main


@pytest.mark.parametrize("bad", ["../x", "a/b", "x" * 300, "a\0b"], ids=repr)
async def test_ipc_refuses_bad_task_ids_and_group_folders(tmp_path: Path, bad: str) -> None:
    root = tmp_path / "ipc"
    tasks = root / "main" / "tasks"
    tasks.mkdir(parents=True)
    handler = _Recorder()
    groups = {"main@g": _Group("main@g", "main", True)}
    watcher = IpcWatcher(root, lambda: groups, handler, task_owner=lambda _: "main")  # type: ignore[arg-type]
    requests = [
        {"type": "schedule_task", "task_id": bad, "target_chat_id": "main@g", "prompt": "p",
         "schedule_type": "once", "schedule_value": "2030-01-01T00:00:00"},
        {"type": "cancel_task", "task_id": bad},
        {"type": "register_group", "jid": "new@g", "name": "n", "folder": bad, "trigger": "@A"},
    ]  # fmt: skip
    for n, request in enumerate(requests):
        (tasks / f"{n}.json").write_text(json.dumps(request))
    before = snapshot(tmp_path / "ipc" / "main")
    assert await watcher.process_once() == 3
    assert handler.calls == []
    assert sorted(os.listdir(root / "errors")) == ["main-0.json", "main-1.json", "main-2.json"]
    assert snapshot(tmp_path / "ipc" / "main") != before  # the files moved to errors/ ...
    assert os.listdir(tasks) == []  # ... and nothing else appeared anywhere
    assert sorted(os.listdir(tmp_path)) == ["ipc"]
