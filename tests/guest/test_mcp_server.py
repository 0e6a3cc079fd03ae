"""The in-box MCP server, driven by a real MCP stdio client spawning ``python -m agentlite.guest.mcp_server``."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult, TextContent

from agentlite.guest.mcp_server import BoxConfig, validate_schedule
from agentlite.platform.actions import ActionContext, ActionRegistry, ActionsServer
from agentlite.platform.ipc import IpcWatcher

NAME_RE = re.compile(r"^\d{13}-[0-9a-f]{8}\.json$")
TOOLS = {
    "send_message",
    "schedule_task",
    "list_tasks",
    "get_budget",
    "pause_task",
    "resume_task",
    "cancel_task",
    "update_task",
    "register_group",
    "search_actions",
    "call_action",
}


@dataclass
class Box:
    client: Client
    ipc: Path

    async def call(self, tool: str, **arguments: Any) -> tuple[bool, str]:
        result: CallToolResult = await self.client.call_tool(tool, arguments)
        text = "".join(c.text for c in result.content if isinstance(c, TextContent))
        return bool(result.is_error), text

    def files(self, kind: str) -> list[dict[str, Any]]:
        folder = self.ipc / kind
        if not folder.exists():
            return []
        names = sorted(p.name for p in folder.iterdir())
        assert all(NAME_RE.match(n) for n in names), names  # no .tmp left behind
        return [json.loads((folder / n).read_text()) for n in names]


@asynccontextmanager
async def box(
    tmp_path: Path, *, is_main: bool = False, folder: str = "team", **env: str
) -> AsyncIterator[Box]:
    ipc = tmp_path / "ipc" / folder
    ipc.mkdir(parents=True, exist_ok=True)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "agentlite.guest.mcp_server"],
        env={
            "AGENTLITE_CHAT_JID": f"{folder}@g",
            "AGENTLITE_GROUP_FOLDER": folder,
            "AGENTLITE_IS_MAIN": "1" if is_main else "0",
            "AGENTLITE_IPC_DIR": str(ipc),
            **env,
        },
    )
    with (tmp_path / f"mcp-{folder}.stderr").open("w") as errlog:
        # mode="legacy": the initialize handshake the agent CLIs in the box use.
        async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
            yield Box(client, ipc)


def assert_timestamp(value: str) -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", value), value


async def test_tools_messages_and_task_requests(tmp_path: Path) -> None:
    async with box(tmp_path) as b:
        listed = await b.client.list_tools()
        assert {t.name for t in listed.tools} == TOOLS
        described = {t.name: t for t in listed.tools}
        assert described["send_message"].description.startswith("Send a message to the chat right away")
        assert not described["send_message"].description.startswith(" ")

        assert await b.call("send_message", text="working on it", sender="Researcher") == (
            False,
            "Message sent.",
        )
        assert await b.call("send_message", text="plain") == (False, "Message sent.")
        first, second = b.files("messages")
        assert_timestamp(first.pop("timestamp"))
        assert first == {
            "type": "message",
            "chat_id": "team@g",
            "text": "working on it",
            "sender": "Researcher",
            "group_folder": "team",
        }
        assert second["sender"] is None

        error, text = await b.call(
            "schedule_task", prompt="daily report", schedule_type="cron", schedule_value="0 9 * * *"
        )
        assert not error and re.fullmatch(
            r"Task task-\d{13}-[0-9a-z]{6} scheduled: cron - 0 9 \* \* \*", text
        )
        # A non-main group cannot aim a task at another chat: the target is its own.
        await b.call(
            "schedule_task",
            prompt="ping",
            schedule_type="interval",
            schedule_value="300000",
            context_mode="isolated",
            target_group_jid="other@g",
        )
        await b.call(
            "schedule_task", prompt="once", schedule_type="once", schedule_value="2026-02-01T15:30:00"
        )
        await b.call("pause_task", task_id="t1")
        await b.call("resume_task", task_id="t1")
        await b.call("cancel_task", task_id="t1")
        assert await b.call("update_task", task_id="t1", prompt="new prompt") == (
            False,
            "Task t1 update requested.",
        )
        await b.call("update_task", task_id="t1", schedule_type="interval", schedule_value="60000")

        requests = b.files("tasks")
        for request in requests:
            assert_timestamp(request.pop("timestamp"))
        cron, interval, once, pause, resume, cancel, update_prompt, update_schedule = requests
        assert re.fullmatch(r"task-\d{13}-[0-9a-z]{6}", cron.pop("task_id"))
        assert cron == {
            "type": "schedule_task",
            "prompt": "daily report",
            "schedule_type": "cron",
            "schedule_value": "0 9 * * *",
            "context_mode": "group",
            "target_chat_id": "team@g",
            "created_by": "team",
        }
        assert interval["target_chat_id"] == "team@g" and interval["context_mode"] == "isolated"
        assert once["schedule_value"] == "2026-02-01T15:30:00"
        ref = {"task_id": "t1", "group_folder": "team", "is_main": False}
        assert pause == {"type": "pause_task", **ref}
        assert resume == {"type": "resume_task", **ref}
        assert cancel == {"type": "cancel_task", **ref}
        assert update_prompt == {"type": "update_task", **ref, "prompt": "new prompt"}
        assert update_schedule == {
            "type": "update_task",
            **ref,
            "schedule_type": "interval",
            "schedule_value": "60000",
        }

        # register_group is refused for a non-main group, and nothing is written.
        error, text = await b.call("register_group", jid="new@g", name="New", folder="new", trigger="@Andy")
        assert error and "Only the main group can register new groups." in text
        assert len(b.files("tasks")) == 8


BAD_SCHEDULES = [
    ("cron", "not a cron"),
    ("cron", "61 * * * *"),
    ("interval", "0"),
    ("interval", "-5"),
    ("interval", "1.5"),
    ("interval", "soon"),
    ("once", "2026-02-01T15:30:00Z"),
    ("once", "2026-02-01T15:30:00+02:00"),
    ("once", "2026-02-01T15:30:00-0500"),
    ("once", "tomorrow"),
]


async def test_validation_errors_are_tool_errors(tmp_path: Path) -> None:
    async with box(tmp_path) as b:
        for schedule_type, value in BAD_SCHEDULES:
            error, text = await b.call(
                "schedule_task", prompt="x", schedule_type=schedule_type, schedule_value=value
            )
            assert error, (schedule_type, value, text)
            assert f"`{value}`" in text
        error, text = await b.call("schedule_task", prompt="x", schedule_type="weekly", schedule_value="1")
        assert error
        error, _ = await b.call("schedule_task", prompt="  ", schedule_type="interval", schedule_value="1000")
        assert error
        error, text = await b.call("update_task", task_id="t1", schedule_type="cron", schedule_value="bad")
        assert error and "cron expression `bad` is invalid" in text
        error, text = await b.call("update_task", task_id="t1")
        assert error and "Nothing to update" in text
        error, text = await b.call("update_task", task_id="t1", schedule_type="cron")
        assert error and "needs a schedule_value" in text
        error, _ = await b.call("pause_task", task_id=" ")
        assert error
        error, _ = await b.call("send_message", text="")
        assert error
        assert b.files("tasks") == [] and b.files("messages") == []


def test_validate_schedule_accepts_good_values() -> None:
    for schedule_type, value in [
        ("cron", "*/5 * * * *"),
        ("cron", "0 9 * * 1-5"),
        ("interval", "1"),
        ("interval", "86400000"),
        ("once", "2026-02-01T15:30:00"),
        ("once", "2026-02-01 15:30"),
    ]:
        assert validate_schedule(schedule_type, value) is None  # accepted: no ToolError


async def test_main_group_tools(tmp_path: Path) -> None:
    async with box(tmp_path, is_main=True, folder="main") as b:
        await b.call(
            "schedule_task",
            prompt="for them",
            schedule_type="interval",
            schedule_value="1000",
            target_group_jid="other@g",
        )
        error, text = await b.call(
            "register_group", jid="new@g", name="New", folder="new_group", trigger="@Andy"
        )
        assert not error, text
        error, text = await b.call("register_group", jid="x@g", name="X", folder="../up", trigger="@Andy")
        assert error and "Invalid folder `../up`" in text
        scheduled, registered = b.files("tasks")
        assert scheduled["target_chat_id"] == "other@g" and scheduled["created_by"] == "main"
        registered.pop("timestamp")
        assert registered == {
            "type": "register_group",
            "jid": "new@g",
            "name": "New",
            "folder": "new_group",
            "trigger": "@Andy",
        }


SNAPSHOT = [
    {"id": "t1", "group_folder": "team", "prompt": "team work " * 10, "schedule_type": "cron",
     "schedule_value": "0 9 * * *", "status": "active", "next_run": "2026-01-01T09:00:00.000Z"},
    {"id": "t2", "group_folder": "other", "prompt": "other work", "schedule_type": "interval",
     "schedule_value": "1000", "status": "paused", "next_run": None},
]  # fmt: skip


async def test_list_tasks_reads_the_snapshot(tmp_path: Path) -> None:
    async with box(tmp_path) as b:
        assert await b.call("list_tasks") == (False, "No scheduled tasks found.")
        (b.ipc / "current_tasks.json").write_text(json.dumps(SNAPSHOT))
        error, text = await b.call("list_tasks")
        assert not error
        assert "[t1]" in text and "[t2]" not in text  # a non-main group sees only its own
        assert "(cron: 0 9 * * *) - active, next: 2026-01-01T09:00:00.000Z" in text
        assert "team work team work team work team work team work ..." in text
        (b.ipc / "current_tasks.json").write_text("{broken")
        error, text = await b.call("list_tasks")
        assert error and "Error reading tasks" in text
    async with box(tmp_path, is_main=True, folder="main") as b:
        (b.ipc / "current_tasks.json").write_text(json.dumps(SNAPSHOT))
        _, text = await b.call("list_tasks")
        assert "[t1]" in text and "[t2]" in text and "paused, next: N/A" in text


async def test_get_budget_reads_the_hosts_snapshot(tmp_path: Path) -> None:
    async with box(tmp_path) as b:
        assert await b.call("get_budget") == (False, "No budget information.")
        state = {"as_of": "2026-01-01T00:00:00.000Z", "budgets": [
            {"scope": "team@g", "unit": "usd", "daily_limit": 0.01, "total_limit": None, "reset_hour": 6,
             "daily_spent": 0.004, "total_spent": 0.004, "paused": None}]}  # fmt: skip
        (b.ipc / "budget.json").write_text(json.dumps(state))
        error, text = await b.call("get_budget")
        assert (
            not error
            and "daily $0.0040 of $0.0100 (resets at 6:00), total $0.0040 of none; paused: no" in text
        )
        (b.ipc / "budget.json").write_text("[]")
        error, text = await b.call("get_budget")
        assert error and "unexpected snapshot format" in text


async def test_actions_over_http(tmp_path: Path) -> None:
    registry = ActionRegistry()
    seen: list[ActionContext] = []

    def lookup(payload: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        seen.append(ctx)
        return {"city": payload["city"], "temp": 21}

    def fail(ctx: ActionContext) -> None:
        raise RuntimeError("weather service down")

    registry.register(
        "weather_get",
        lookup,
        description="Current weather for a city",
        schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
    registry.register("weather_fail", fail, description="Always fails")
    registry.register("plain_text", lambda ctx: "just text")
    server = ActionsServer(registry)
    url = await server.start()
    try:
        auth = server.mint_token("team", False)
        env = {"AGENTLITE_ACTIONS_URL": auth.url, "AGENTLITE_ACTIONS_TOKEN": auth.token}
        async with box(tmp_path, **env) as b:
            error, text = await b.call("search_actions", query="weather", max_results=1)
            assert not error
            found = json.loads(text)
            assert [a["name"] for a in found] == ["weather_fail"]  # ties sort by name
            assert found[0]["description"] == "Always fails"
            _, text = await b.call("search_actions", query="select:weather_get")
            assert json.loads(text)[0]["inputSchema"]["required"] == ["city"]

            error, text = await b.call(
                "call_action", name="weather_get", payload={"city": "Oslo", "is_main": True}
            )
            assert not error and json.loads(text) == {"city": "Oslo", "temp": 21}
            assert seen == [
                ActionContext(chat_id="team@g", source_group="team", is_main=False, action="weather_get")
            ]
            assert await b.call("call_action", name="plain_text") == (False, "just text")
            error, text = await b.call("call_action", name="weather_get", payload={})
            assert error and 'invalid payload for action "weather_get"' in text
            error, text = await b.call("call_action", name="nope")
            assert error and "unknown action: nope" in text
            error, text = await b.call("call_action", name="weather_fail")
            assert error and "weather service down" in text
            server.revoke_token(auth.token)
            error, text = await b.call("call_action", name="weather_get", payload={"city": "Oslo"})
            assert error and "unauthorized" in text

        async with box(tmp_path, folder="tokenless", AGENTLITE_ACTIONS_URL=url) as b:
            error, text = await b.call("call_action", name="weather_get", payload={"city": "Oslo"})
            assert error and "unauthorized" in text
            error, text = await b.call("search_actions", query="weather")
            assert error and "unauthorized" in text
    finally:
        await server.stop()
    assert len(seen) == 1


async def test_actions_unavailable(tmp_path: Path) -> None:
    async with box(tmp_path) as b:
        error, text = await b.call("search_actions", query="x")
        assert error and "Actions are not available" in text
    async with box(tmp_path, folder="dead", AGENTLITE_ACTIONS_URL="http://127.0.0.1:9") as b:
        error, text = await b.call("call_action", name="x")
        assert error and "Actions server unreachable" in text


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def send_message(self, chat_id: str, text: str, sender: str | None) -> None:
        self.calls.append(("send_message", (chat_id, text, sender)))

    async def schedule_task(self, **fields: str) -> None:
        self.calls.append(("schedule_task", fields))

    async def pause_task(self, task_id: str) -> None:
        self.calls.append(("pause_task", task_id))

    async def resume_task(self, task_id: str) -> None:
        self.calls.append(("resume_task", task_id))

    async def cancel_task(self, task_id: str) -> None:
        self.calls.append(("cancel_task", task_id))

    async def update_task(self, task_id: str, **changes: str) -> None:
        self.calls.append(("update_task", (task_id, changes)))

    async def register_group(self, jid: str, name: str, folder: str, trigger: str) -> None:
        self.calls.append(("register_group", (jid, name, folder, trigger)))

    async def refresh_groups(self) -> None:
        self.calls.append(("refresh_groups", None))


@dataclass
class Group:
    jid: str
    folder: str
    is_main: bool = False


async def test_box_to_host_round_trip(tmp_path: Path) -> None:
    """What the MCP server writes is exactly what the host watcher accepts (and refuses)."""
    groups = {"team@g": Group("team@g", "team"), "main@g": Group("main@g", "main", is_main=True)}
    handler = Recorder()
    watcher = IpcWatcher(tmp_path / "ipc", lambda: groups, handler, task_owner={"t1": "team"}.get)
    async with box(tmp_path) as b:
        await b.call("send_message", text="hello", sender="Bot")
        await b.call("schedule_task", prompt="p", schedule_type="cron", schedule_value="0 9 * * *")
        await b.call("update_task", task_id="t1", prompt="q")
        await b.call("cancel_task", task_id="t1")
    async with box(tmp_path, is_main=True, folder="main") as b:
        await b.call("register_group", jid="new@g", name="New", folder="new_group", trigger="@Andy")
    await watcher.process_once()
    assert handler.calls[0] == ("register_group", ("new@g", "New", "new_group", "@Andy"))
    assert handler.calls[1] == ("send_message", ("team@g", "hello", "Bot"))
    kind, fields = handler.calls[2]
    assert kind == "schedule_task" and fields["group_folder"] == "team" and fields["chat_id"] == "team@g"
    assert fields["context_mode"] == "group" and fields["task_id"].startswith("task-")
    assert handler.calls[3:] == [("update_task", ("t1", {"prompt": "q"})), ("cancel_task", "t1")]
    assert not (tmp_path / "ipc" / "errors").exists()


def test_config_from_env() -> None:
    config = BoxConfig.from_env({"AGENTLITE_IS_MAIN": "1", "AGENTLITE_ACTIONS_URL": "http://h:1/"})
    assert config.is_main and config.ipc_dir == Path("/workspace/ipc") and config.actions_url == "http://h:1"
    assert config.actions_token is None
    assert not BoxConfig.from_env({"AGENTLITE_IS_MAIN": "0"}).is_main


@pytest.mark.parametrize("value", ["true", "yes", ""])
def test_only_one_means_main(value: str) -> None:
    assert not BoxConfig.from_env({"AGENTLITE_IS_MAIN": value}).is_main
