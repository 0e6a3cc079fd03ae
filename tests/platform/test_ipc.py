"""The host IPC watcher: identity from the directory, the authorization matrix, errors/, snapshots."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agentlite.platform.ipc import IpcWatcher, valid_folder, write_snapshots
from conftest import until


@dataclass
class Group:
    jid: str
    folder: str
    is_main: bool = False


GROUPS = {
    "main@g": Group("main@g", "main", is_main=True),
    "team@g": Group("team@g", "team"),
    "team-2@g": Group("team-2@g", "team"),  # a second chat bound to the same folder
    "other@g": Group("other@g", "other"),
}
TASK_OWNERS = {"t-team": "team", "t-other": "other", "t-main": "main"}


class Recorder:
    """An IpcHandler that records every call; ``fail`` makes the next call raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail: str | None = None

    def _record(self, name: str, value: Any) -> None:
        if self.fail:
            message, self.fail = self.fail, None
            raise RuntimeError(message)
        self.calls.append((name, value))

    async def send_message(self, chat_id: str, text: str, sender: str | None) -> None:
        self._record("send_message", (chat_id, text, sender))

    async def schedule_task(self, **fields: str) -> None:
        self._record("schedule_task", fields)

    async def pause_task(self, task_id: str) -> None:
        self._record("pause_task", task_id)

    async def resume_task(self, task_id: str) -> None:
        self._record("resume_task", task_id)

    async def cancel_task(self, task_id: str) -> None:
        self._record("cancel_task", task_id)

    async def update_task(self, task_id: str, **changes: str) -> None:
        self._record("update_task", (task_id, changes))

    async def register_group(self, jid: str, name: str, folder: str, trigger: str) -> None:
        self._record("register_group", (jid, name, folder, trigger))

    async def refresh_groups(self) -> None:
        self._record("refresh_groups", None)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "ipc"
    path.mkdir()
    return path


@pytest.fixture
def handler() -> Recorder:
    return Recorder()


@pytest.fixture
def watcher(root: Path, handler: Recorder) -> IpcWatcher:
    return IpcWatcher(root, lambda: GROUPS, handler, task_owner=TASK_OWNERS.get, poll_interval=0.05)


_counter = 0


def drop(root: Path, folder: str, kind: str, data: Any, *, raw: bytes | None = None) -> Path:
    """Write a request the way a box does: ``<ms>-<rand>.json``, atomically."""
    global _counter
    _counter += 1
    directory = root / folder / kind
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{1_700_000_000_000 + _counter}-{_counter:08x}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(raw if raw is not None else json.dumps(data).encode())
    os.replace(tmp, path)
    return path


def errors(root: Path) -> list[str]:
    folder = root / "errors"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def message(chat_id: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"type": "message", "chat_id": chat_id, "text": text, **extra}


def schedule(target: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "schedule_task",
        "task_id": "task-1-abcdef",
        "prompt": "do it",
        "schedule_type": "interval",
        "schedule_value": "60000",
        "context_mode": "group",
        "target_chat_id": target,
        **extra,
    }


# -- messages --------------------------------------------------------------------------------------


async def test_message_authorization_matrix(root: Path, watcher: IpcWatcher, handler: Recorder) -> None:
    ok = [
        drop(root, "main", "messages", message("other@g", "from main", sender="Boss")),
        drop(root, "main", "messages", message("unregistered@g", "main may send anywhere")),
        drop(root, "team", "messages", message("team@g", "own chat")),
        drop(root, "team", "messages", message("team-2@g", "second own chat")),
    ]
    denied = [
        drop(root, "team", "messages", message("other@g", "cross-group")),
        drop(root, "team", "messages", message("main@g", "to main")),
        drop(root, "team", "messages", message("unregistered@g", "nowhere")),
        # An unregistered folder owns no chats, and claiming main in the body changes nothing.
        drop(root, "rogue", "messages", message("team@g", "spoof", group_folder="main", is_main=True)),
    ]
    assert await watcher.process_once() == len(ok) + len(denied)
    assert handler.calls == [
        ("send_message", ("other@g", "from main", "Boss")),
        ("send_message", ("unregistered@g", "main may send anywhere", None)),
        ("send_message", ("team@g", "own chat", None)),
        ("send_message", ("team-2@g", "second own chat", None)),
    ]
    assert not any(p.exists() for p in ok + denied)  # every file is consumed
    assert errors(root) == sorted(
        [f"team-{p.name}" for p in denied[:3]] + [f"rogue-{denied[3].name}"],
    )
    # The quarantined file is the box's request, unchanged, for a human to inspect.
    assert json.loads((root / "errors" / f"team-{denied[0].name}").read_text())["chat_id"] == "other@g"
    assert await watcher.process_once() == 0


async def test_malformed_messages_go_to_errors(root: Path, watcher: IpcWatcher, handler: Recorder) -> None:
    bad = [
        drop(root, "team", "messages", None, raw=b"{not json"),
        drop(root, "team", "messages", [1, 2]),
        drop(root, "team", "messages", {"type": "message", "chat_id": "team@g"}),  # no text
        drop(root, "team", "messages", message("team@g", sender=5)),
        drop(root, "team", "messages", {"type": "schedule_task", "chat_id": "team@g", "text": "x"}),
    ]
    await watcher.process_once()
    assert handler.calls == []
    assert errors(root) == sorted(f"team-{p.name}" for p in bad)


async def test_handler_failure_goes_to_errors(root: Path, watcher: IpcWatcher, handler: Recorder) -> None:
    failing = drop(root, "team", "messages", message("team@g", "first"))
    fine = drop(root, "team", "messages", message("team@g", "second"))
    handler.fail = "channel down"
    await watcher.process_once()
    assert handler.calls == [("send_message", ("team@g", "second", None))]
    assert errors(root) == [f"team-{failing.name}"]
    assert not fine.exists()


async def test_tmp_files_and_special_dirs_are_ignored(
    root: Path, watcher: IpcWatcher, handler: Recorder
) -> None:
    pending = root / "team" / "messages" / "1-abc.json.tmp"
    pending.parent.mkdir(parents=True)
    pending.write_text(json.dumps(message("team@g")))
    for special in ("errors", "input"):
        drop(root, special, "messages", message("team@g"))
    (root / "stray-file").write_text("not a group")
    assert await watcher.process_once() == 0
    assert handler.calls == []
    assert pending.exists()


async def test_symlinks_are_never_followed(
    root: Path, tmp_path: Path, watcher: IpcWatcher, handler: Recorder
) -> None:
    secret = tmp_path / "host-secret.json"
    secret.write_text(json.dumps(message("other@g", "planted")))
    (root / "team" / "messages").mkdir(parents=True)
    link = root / "team" / "messages" / "1-link.json"
    link.symlink_to(secret)
    # A symlinked tasks/ folder pointing elsewhere must not make the host delete files there.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "1-victim.json"
    victim.write_text(json.dumps({"type": "refresh_groups"}))
    (root / "team" / "tasks").symlink_to(elsewhere)
    await watcher.process_once()
    assert handler.calls == []
    assert secret.exists() and victim.exists()
    assert errors(root) == ["team-1-link.json"]
    assert (root / "errors" / "team-1-link.json").is_symlink()


async def test_missing_root_is_fine(tmp_path: Path, handler: Recorder) -> None:
    watcher = IpcWatcher(tmp_path / "absent", lambda: GROUPS, handler, task_owner=TASK_OWNERS.get)
    assert await watcher.process_once() == 0


# -- tasks -----------------------------------------------------------------------------------------


async def test_schedule_task_authorization(root: Path, watcher: IpcWatcher, handler: Recorder) -> None:
    drop(root, "team", "tasks", schedule("team-2@g", context_mode="isolated"))
    drop(root, "main", "tasks", schedule("other@g", created_by="whatever"))
    drop(root, "team", "tasks", schedule("team@g", context_mode="weird"))
    denied = [
        drop(root, "team", "tasks", schedule("other@g")),  # another group's chat
        drop(root, "main", "tasks", schedule("unregistered@g")),  # even main needs a registered target
        drop(root, "team", "tasks", schedule("team@g", prompt="")),
        drop(root, "team", "tasks", {**schedule("team@g"), "task_id": None}),
        drop(root, "team", "tasks", schedule("team@g", task_id="t-other")),  # the id is another task's
    ]
    await watcher.process_once()
    base = {
        "task_id": "task-1-abcdef",
        "prompt": "do it",
        "schedule_type": "interval",
        "schedule_value": "60000",
    }
    assert handler.calls == [
        ("schedule_task", {**base, "group_folder": "other", "chat_id": "other@g", "context_mode": "group"}),
        (
            "schedule_task",
            {**base, "group_folder": "team", "chat_id": "team-2@g", "context_mode": "isolated"},
        ),
        ("schedule_task", {**base, "group_folder": "team", "chat_id": "team@g", "context_mode": "isolated"}),
    ]
    assert errors(root) == sorted(f"{p.parent.parent.name}-{p.name}" for p in denied)


@pytest.mark.parametrize("kind", ["pause_task", "resume_task", "cancel_task"])
async def test_task_control_needs_main_or_owner(
    root: Path, watcher: IpcWatcher, handler: Recorder, kind: str
) -> None:
    drop(root, "team", "tasks", {"type": kind, "task_id": "t-team", "group_folder": "team", "is_main": False})
    drop(root, "main", "tasks", {"type": kind, "task_id": "t-other"})
    denied = [
        drop(
            root,
            "team",
            "tasks",
            {"type": kind, "task_id": "t-other", "group_folder": "other", "is_main": True},
        ),
        drop(root, "other", "tasks", {"type": kind, "task_id": "t-main"}),
        drop(root, "main", "tasks", {"type": kind, "task_id": "t-unknown"}),
    ]
    await watcher.process_once()
    assert handler.calls == [(kind, "t-other"), (kind, "t-team")]  # folders in name order
    assert errors(root) == sorted(f"{p.parent.parent.name}-{p.name}" for p in denied)


async def test_update_task(root: Path, watcher: IpcWatcher, handler: Recorder) -> None:
    drop(
        root,
        "team",
        "tasks",
        {"type": "update_task", "task_id": "t-team", "is_main": "false", "prompt": "new"},
    )
    drop(
        root,
        "main",
        "tasks",
        {
            "type": "update_task",
            "task_id": "t-other",
            "schedule_type": "cron",
            "schedule_value": "0 9 * * *",
            "x": 1,
        },
    )
    denied = [
        drop(root, "other", "tasks", {"type": "update_task", "task_id": "t-team", "prompt": "hijack"}),
        drop(root, "team", "tasks", {"type": "update_task", "task_id": "t-team"}),  # nothing to change
        drop(root, "team", "tasks", {"type": "update_task", "task_id": "t-team", "prompt": 3}),
    ]
    await watcher.process_once()
    assert handler.calls == [
        ("update_task", ("t-other", {"schedule_type": "cron", "schedule_value": "0 9 * * *"})),
        ("update_task", ("t-team", {"prompt": "new"})),
    ]
    assert errors(root) == sorted(f"{p.parent.parent.name}-{p.name}" for p in denied)


async def test_register_and_refresh_are_main_only(root: Path, watcher: IpcWatcher, handler: Recorder) -> None:
    reg = {"type": "register_group", "jid": "new@g", "name": "New", "folder": "new_group", "trigger": "@Andy"}
    drop(root, "main", "tasks", {**reg, "is_main": True, "isMain": True})
    drop(root, "main", "tasks", {"type": "refresh_groups"})
    denied = [
        drop(root, "team", "tasks", reg),
        drop(root, "team", "tasks", {"type": "refresh_groups"}),
        drop(root, "main", "tasks", {**reg, "folder": "../escape"}),
        drop(root, "main", "tasks", {**reg, "folder": "Global"}),
        drop(root, "main", "tasks", {**reg, "name": ""}),
        drop(root, "main", "tasks", {"type": "drop_tables"}),
    ]
    await watcher.process_once()
    # register_group carries no is_main at all: a main group can only be made on the host.
    assert handler.calls == [
        ("register_group", ("new@g", "New", "new_group", "@Andy")),
        ("refresh_groups", None),
    ]
    assert errors(root) == sorted(f"{p.parent.parent.name}-{p.name}" for p in denied)


async def test_groups_are_read_on_every_request(root: Path, handler: Recorder) -> None:
    groups: dict[str, Group] = {}
    watcher = IpcWatcher(root, lambda: groups, handler, task_owner=TASK_OWNERS.get)
    drop(root, "late", "messages", message("late@g", "before"))
    await watcher.process_once()
    groups["late@g"] = Group("late@g", "late")
    drop(root, "late", "messages", message("late@g", "after"))
    await watcher.process_once()
    assert handler.calls == [("send_message", ("late@g", "after", None))]


async def test_watcher_loop_polls_until_stopped(root: Path, watcher: IpcWatcher, handler: Recorder) -> None:
    await watcher.start()
    await watcher.start()  # idempotent
    try:
        drop(root, "team", "messages", message("team@g", "polled"))
        await until(lambda: handler.calls, "the watcher's poll", 30)
        assert handler.calls == [("send_message", ("team@g", "polled", None))]
    finally:
        await watcher.stop()
    # Stopped means no loop is left that could poll again (not: nothing happened for a while).
    assert [t for t in asyncio.all_tasks() if t.get_name() == "agentlite-ipc-watcher"] == []
    drop(root, "team", "messages", message("team@g", "after stop"))
    assert len(handler.calls) == 1
    await watcher.stop()


def test_valid_folder() -> None:
    for good in ("main", "team_1", "A-b", "x" * 64):
        assert valid_folder(good), good
    for bad in ("", "-x", "_x", "a/b", "a b", "..", "x" * 65, "global", "GLOBAL", "a\\b", "é"):
        assert not valid_folder(bad), bad


# -- snapshots -------------------------------------------------------------------------------------


class TaskModel(BaseModel):
    id: str
    group_folder: str
    chat_id: str
    prompt: str
    schedule_type: str
    schedule_value: str
    status: str = "active"
    next_run: str | None = None


TASKS: list[Any] = [
    TaskModel(id="t1", group_folder="team", chat_id="team@g", prompt="a", schedule_type="cron", schedule_value="* * * * *"),
    {"id": "t2", "group_folder": "other", "prompt": "b", "schedule_type": "once", "schedule_value": "2026-01-01T00:00:00",
     "status": "paused", "next_run": None},
]  # fmt: skip
AVAILABLE = [
    {"jid": "team@g", "name": "Team", "last_activity": "2026-01-01T00:00:00.000Z", "is_registered": True}
]


def test_snapshots_for_main(root: Path) -> None:
    write_snapshots(root, "main", True, TASKS, AVAILABLE, last_sync="2026-01-02T00:00:00.000Z")
    tasks = json.loads((root / "main" / "current_tasks.json").read_text())
    assert [t["id"] for t in tasks] == ["t1", "t2"]
    assert tasks[0] == {
        "id": "t1",
        "group_folder": "team",
        "prompt": "a",
        "schedule_type": "cron",
        "schedule_value": "* * * * *",
        "status": "active",
        "next_run": None,
    }
    groups = json.loads((root / "main" / "available_groups.json").read_text())
    assert groups == {"groups": AVAILABLE, "last_sync": "2026-01-02T00:00:00.000Z"}


def test_snapshots_for_other_groups(root: Path) -> None:
    write_snapshots(root, "team", False, TASKS, AVAILABLE)
    tasks = json.loads((root / "team" / "current_tasks.json").read_text())
    assert [t["id"] for t in tasks] == ["t1"]
    groups = json.loads((root / "team" / "available_groups.json").read_text())
    assert groups["groups"] == []
    assert groups["last_sync"].endswith("Z") and len(groups["last_sync"]) == 24
    write_snapshots(root, "team", False, [], [])
    assert json.loads((root / "team" / "current_tasks.json").read_text()) == []
    assert sorted(p.name for p in (root / "team").iterdir()) == [
        "available_groups.json",
        "current_tasks.json",
    ]


async def test_a_flood_of_request_files_neither_starves_other_groups_nor_fills_errors(
    root: Path, watcher: IpcWatcher, handler: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agentlite.platform.ipc as ipc

    monkeypatch.setattr(ipc, "MAX_QUARANTINED", 50)
    for _ in range(300):  # a box writing bad requests as fast as it can
        drop(root, "team", "messages", {"type": "nonsense"})
    drop(root, "other", "messages", message("other@g", "still heard"))
    await watcher.process_once()
    assert ("send_message", ("other@g", "still heard", None)) in handler.calls
    assert len(os.listdir(root / "team" / "messages")) == 300 - ipc.MAX_REQUESTS_PER_POLL  # its turn ends
    while os.listdir(root / "team" / "messages"):
        await watcher.process_once()
    assert len(errors(root)) == 50  # the rest were deleted, not kept
