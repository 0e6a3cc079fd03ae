"""The in-box MCP server ``agentlite``: the agent's tools for talking back to the host.

Run inside a box as ``python -m agentlite.mcp_server`` (stdio transport). It never reaches the host
directly: requests become JSON files in the box's IPC folder, which the host watcher
(:mod:`agentlite._ipc`) picks up, authorizes by folder and deletes; custom actions go over HTTP to
the host's actions server with a bearer token.

Environment:

* ``AGENTLITE_CHAT_JID``: the chat this run serves (default target of messages and tasks).
* ``AGENTLITE_GROUP_FOLDER``: the group folder (informational; the host trusts only the IPC dir).
* ``AGENTLITE_IS_MAIN``: ``"1"`` for the main group, else ``"0"`` (only shapes tool behaviour; the
  host re-derives it).
* ``AGENTLITE_IPC_DIR``: the IPC folder, default ``/workspace/ipc``.
* ``AGENTLITE_ACTIONS_URL`` / ``AGENTLITE_ACTIONS_TOKEN``: the actions server; optional.

IPC files (the contract with the host watcher). Every file is written as ``<name>.tmp`` and renamed
to ``<name>``, where ``<name>`` is ``<epochMs>-<8 hex>.json``; timestamps are ISO 8601 UTC with
milliseconds and ``Z``. Keys are snake_case.

``messages/<name>``::

    {"type": "message", "chat_id": str, "text": str, "sender": str | null,
     "group_folder": str, "timestamp": str}

``tasks/<name>``, one of::

    {"type": "schedule_task", "task_id": "task-<epochMs>-<6 base36>", "prompt": str,
     "schedule_type": "cron" | "interval" | "once", "schedule_value": str,
     "context_mode": "group" | "isolated", "target_chat_id": str, "created_by": str, "timestamp": str}
    {"type": "pause_task" | "resume_task" | "cancel_task", "task_id": str, "group_folder": str,
     "is_main": bool, "timestamp": str}
    {"type": "update_task", "task_id": str, "group_folder": str, "is_main": bool, "timestamp": str,
     "prompt"?: str, "schedule_type"?: str, "schedule_value"?: str}
    {"type": "register_group", "jid": str, "name": str, "folder": str, "trigger": str, "timestamp": str}
    {"type": "refresh_groups", "timestamp": str}

``group_folder``, ``created_by`` and ``is_main`` are informational: the host identifies the caller by
the IPC directory the file appeared in. Schedules: ``cron`` is a cron expression (croniter syntax),
``interval`` a positive whole number of milliseconds, ``once`` a local date-time without ``Z`` or
offset (``2026-02-01T15:30:00``). The host writes ``current_tasks.json`` and
``available_groups.json`` into the same folder (see :func:`agentlite._ipc.write_snapshots`).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import secrets
import string
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from agentlite._ipc import valid_folder
from agentlite._time import now_iso

SERVER_NAME = "agentlite"
DEFAULT_IPC_DIR = "/workspace/ipc"
#: How long call_action waits for the host; actions may do real work.
ACTION_TIMEOUT = 300.0
_BASE36 = string.digits + string.ascii_lowercase


@dataclass(frozen=True)
class BoxConfig:
    chat_jid: str
    group_folder: str
    is_main: bool
    ipc_dir: Path
    actions_url: str | None
    actions_token: str | None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> BoxConfig:
        env = dict(os.environ if env is None else env)
        return cls(
            chat_jid=env.get("AGENTLITE_CHAT_JID", ""),
            group_folder=env.get("AGENTLITE_GROUP_FOLDER", ""),
            is_main=env.get("AGENTLITE_IS_MAIN", "0") == "1",
            ipc_dir=Path(env.get("AGENTLITE_IPC_DIR") or DEFAULT_IPC_DIR),
            actions_url=(env.get("AGENTLITE_ACTIONS_URL") or "").rstrip("/") or None,
            actions_token=env.get("AGENTLITE_ACTIONS_TOKEN") or None,
        )


def write_ipc_file(directory: Path, data: dict[str, Any]) -> Path:
    """Publish ``data`` as ``<epochMs>-<random>.json``: written as ``.tmp``, then renamed."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{int(time.time() * 1000)}-{secrets.token_hex(4)}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
    return path


def new_task_id() -> str:
    return f"task-{int(time.time() * 1000)}-{''.join(secrets.choice(_BASE36) for _ in range(6))}"


def validate_schedule(schedule_type: str, schedule_value: str) -> None:
    """Raise ToolError (an ``isError`` result) unless the schedule can work: the scheduler's own rules,
    checked here too so the agent hears about a mistake at once (the host re-checks)."""
    from agentlite._errors import ConfigError
    from agentlite._scheduler import validate_schedule as check

    try:
        check(schedule_type, schedule_value.strip(), "UTC")
    except ConfigError as exc:
        raise ToolError(
            f"{exc}. Examples: cron `0 9 * * *`, interval `300000` (ms), once `2026-02-01T15:30:00`."
        ) from None


def _post(url: str, token: str | None, body: dict[str, Any]) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=ACTION_TIMEOUT) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"error": raw.decode(errors="replace") or exc.reason}
    except (urllib.error.URLError, OSError) as exc:
        raise ToolError(f"Actions server unreachable: {getattr(exc, 'reason', exc)}") from None


def build_server(config: BoxConfig) -> MCPServer:
    """The MCP server with every tool bound to ``config``."""
    server = MCPServer(SERVER_NAME, log_level="WARNING")
    messages_dir = config.ipc_dir / "messages"
    tasks_dir = config.ipc_dir / "tasks"

    def tool(fn: Callable[..., Any]) -> Callable[..., Any]:
        # cleandoc: the agent should see the docstring without the source indentation.
        server.add_tool(fn, description=inspect.cleandoc(fn.__doc__ or ""), structured_output=False)
        return fn

    def write_task(data: dict[str, Any]) -> Path:
        return write_ipc_file(tasks_dir, {**data, "timestamp": now_iso()})

    def task_ref(kind: str, task_id: str, **extra: Any) -> dict[str, Any]:
        if not task_id.strip():
            raise ToolError("task_id must not be empty.")
        return {
            "type": kind,
            "task_id": task_id,
            "group_folder": config.group_folder,
            "is_main": config.is_main,
            **extra,
        }

    async def actions(path: str, body: dict[str, Any]) -> Any:
        if not config.actions_url:
            raise ToolError("Actions are not available in this session.")
        status, reply = await asyncio.to_thread(_post, config.actions_url + path, config.actions_token, body)
        if not 200 <= status < 300:
            error = reply.get("error") if isinstance(reply, dict) else None
            raise ToolError(str(error or f"actions server replied HTTP {status}"))
        return reply

    @tool
    def send_message(text: str, sender: str | None = None) -> str:
        """Send a message to the chat right away, while you are still working.

        Use it for progress updates or several messages in a row. `sender` is an optional display
        name (for example a sub-agent role).
        """
        if not text.strip():
            raise ToolError("text must not be empty.")
        write_ipc_file(
            messages_dir,
            {
                "type": "message",
                "chat_id": config.chat_jid,
                "text": text,
                "sender": sender or None,
                "group_folder": config.group_folder,
                "timestamp": now_iso(),
            },
        )
        return "Message sent."

    @tool
    def schedule_task(
        prompt: str,
        schedule_type: Literal["cron", "interval", "once"],
        schedule_value: str,
        context_mode: Literal["group", "isolated"] = "group",
        target_group_jid: str | None = None,
    ) -> str:
        """Schedule a recurring or one-time task that runs as a full agent with all tools.

        schedule_type and schedule_value:
        - cron: a cron expression in local time, e.g. `0 9 * * *` (daily 09:00), `*/5 * * * *`.
        - interval: milliseconds between runs, e.g. `300000` (5 minutes).
        - once: a local time without `Z` or offset, e.g. `2026-02-01T15:30:00`.
        context_mode: `group` runs with the chat's history and memory; `isolated` starts fresh
        (include all needed context in the prompt). target_group_jid (main group only) schedules
        the task for another registered group.
        """
        if not prompt.strip():
            raise ToolError("prompt must not be empty.")
        validate_schedule(schedule_type, schedule_value)
        target = target_group_jid if (config.is_main and target_group_jid) else config.chat_jid
        task_id = new_task_id()
        write_task(
            {
                "type": "schedule_task",
                "task_id": task_id,
                "prompt": prompt,
                "schedule_type": schedule_type,
                "schedule_value": schedule_value.strip(),
                "context_mode": context_mode,
                "target_chat_id": target,
                "created_by": config.group_folder,
            }
        )
        return f"Task {task_id} scheduled: {schedule_type} - {schedule_value}"

    @tool
    def list_tasks() -> str:
        """List the scheduled tasks: all of them from the main group, otherwise this group's own."""
        path = config.ipc_dir / "current_tasks.json"
        try:
            tasks = json.loads(path.read_text())
        except FileNotFoundError:
            return "No scheduled tasks found."
        except ValueError as exc:
            raise ToolError(f"Error reading tasks: {exc}") from None
        if not isinstance(tasks, list):
            raise ToolError("Error reading tasks: unexpected snapshot format.")
        if not config.is_main:
            tasks = [t for t in tasks if isinstance(t, dict) and t.get("group_folder") == config.group_folder]
        if not tasks:
            return "No scheduled tasks found."
        lines = []
        for t in tasks:
            prompt = str(t.get("prompt", ""))
            short = prompt[:50] + ("..." if len(prompt) > 50 else "")
            lines.append(
                f"- [{t.get('id')}] {short} ({t.get('schedule_type')}: {t.get('schedule_value')}) - "
                f"{t.get('status')}, next: {t.get('next_run') or 'N/A'}"
            )
        return "Scheduled tasks:\n" + "\n".join(lines)

    @tool
    def pause_task(task_id: str) -> str:
        """Pause a scheduled task; it will not run until resumed."""
        write_task(task_ref("pause_task", task_id))
        return f"Task {task_id} pause requested."

    @tool
    def resume_task(task_id: str) -> str:
        """Resume a paused task."""
        write_task(task_ref("resume_task", task_id))
        return f"Task {task_id} resume requested."

    @tool
    def cancel_task(task_id: str) -> str:
        """Cancel and delete a scheduled task."""
        write_task(task_ref("cancel_task", task_id))
        return f"Task {task_id} cancellation requested."

    @tool
    def update_task(
        task_id: str,
        prompt: str | None = None,
        schedule_type: Literal["cron", "interval", "once"] | None = None,
        schedule_value: str | None = None,
    ) -> str:
        """Change a task's prompt or schedule; omitted fields stay as they are."""
        changes: dict[str, str] = {}
        if prompt is not None:
            if not prompt.strip():
                raise ToolError("prompt must not be empty.")
            changes["prompt"] = prompt
        if schedule_type is not None:
            changes["schedule_type"] = schedule_type
        if schedule_value is not None:
            changes["schedule_value"] = schedule_value.strip()
        if not changes:
            raise ToolError("Nothing to update: give prompt, schedule_type or schedule_value.")
        if schedule_type is not None and schedule_value is not None:
            validate_schedule(schedule_type, schedule_value)
        elif schedule_type is not None:
            raise ToolError("Changing schedule_type needs a schedule_value too.")
        write_task(task_ref("update_task", task_id, **changes))
        return f"Task {task_id} update requested."

    @tool
    def register_group(jid: str, name: str, folder: str, trigger: str) -> str:
        """Register a new chat so the agent answers there (main group only).

        folder is the new group's folder name (letters, digits, `-` and `_`); trigger is the word
        that wakes the agent, for example `@Andy`.
        """
        if not config.is_main:
            raise ToolError("Only the main group can register new groups.")
        if not valid_folder(folder):
            raise ToolError(f"Invalid folder `{folder}`: use letters, digits, `-` and `_` (max 64).")
        for key, value in (("jid", jid), ("name", name), ("trigger", trigger)):
            if not value.strip():
                raise ToolError(f"{key} must not be empty.")
        write_task({"type": "register_group", "jid": jid, "name": name, "folder": folder, "trigger": trigger})
        return f"Group {name} registered. It will start receiving messages shortly."

    @tool
    async def search_actions(query: str, max_results: int = 5) -> str:
        """Find custom actions the host offers; call them with call_action.

        Query grammar: `select:a,b` fetches exact names; `+word` requires word in the name; other
        words rank by matches in the name (first) or the description. Returns name, description and
        the JSON Schema of each action's payload.
        """
        reply = await actions("/search", {"query": query, "max_results": max_results})
        return json.dumps(reply.get("actions", []) if isinstance(reply, dict) else reply, indent=2)

    @tool
    async def call_action(name: str, payload: dict[str, Any] | None = None) -> str:
        """Call a custom host action by name with a payload matching its inputSchema."""
        reply = await actions("/call", {"name": name, "payload": payload or {}, "chat_id": config.chat_jid})
        result = reply.get("result") if isinstance(reply, dict) else reply
        return result if isinstance(result, str) else json.dumps(result, indent=2)

    return server


def main() -> None:
    build_server(BoxConfig.from_env()).run("stdio")


if __name__ == "__main__":
    main()
