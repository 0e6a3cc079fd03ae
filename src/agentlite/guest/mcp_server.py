"""The in-box MCP server ``agentlite``: the agent's tools for talking back to the host.

Run inside a box as ``python -m agentlite.guest.mcp_server`` (stdio transport). It never reaches the host
directly: requests become JSON files in the box's IPC folder, which the host watcher
(:mod:`agentlite.platform.ipc`) picks up, authorizes by folder and deletes; custom actions go over HTTP to
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
``available_groups.json`` into the same folder (see :func:`agentlite.platform.ipc.write_snapshots`).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentlite.core.box_env import (
    ENV_ACTIONS_TOKEN,
    ENV_ACTIONS_URL,
    ENV_CHAT_JID,
    ENV_GROUP_FOLDER,
    ENV_IPC_DIR,
    ENV_IS_MAIN,
)
from agentlite.core.clock import now_iso
from agentlite.core.errors import AgentliteError

SERVER_NAME = "agentlite"
SERVER_VERSION = "1"
DEFAULT_IPC_DIR = "/workspace/ipc"
#: How long call_action waits for the host; actions may do real work.
ACTION_TIMEOUT = 300.0
#: MCP revisions that open with the ``initialize`` handshake, oldest first; the CLIs in the box
#: use one of these.
PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"

# JSON-RPC error codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602


class ToolError(AgentliteError):
    """A tool refused its arguments or failed: the agent sees the message as an ``isError`` result."""


class BoxConfig:
    """Who this server speaks for, from its environment (see the module docstring)."""

    __slots__ = ("actions_token", "actions_url", "chat_jid", "group_folder", "ipc_dir", "is_main")

    def __init__(self, chat_jid: str, group_folder: str, is_main: bool, ipc_dir: Path,
                 actions_url: str | None, actions_token: str | None) -> None:  # fmt: skip
        self.chat_jid = chat_jid
        self.group_folder = group_folder
        self.is_main = is_main
        self.ipc_dir = ipc_dir
        self.actions_url = actions_url
        self.actions_token = actions_token

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> BoxConfig:
        env = dict(os.environ if env is None else env)
        return cls(
            chat_jid=env.get(ENV_CHAT_JID, ""),
            group_folder=env.get(ENV_GROUP_FOLDER, ""),
            is_main=env.get(ENV_IS_MAIN, "0") == "1",
            ipc_dir=Path(env.get(ENV_IPC_DIR) or DEFAULT_IPC_DIR),
            actions_url=(env.get(ENV_ACTIONS_URL) or "").rstrip("/") or None,
            actions_token=env.get(ENV_ACTIONS_TOKEN) or None,
        )


_name_lock = threading.Lock()
_last_ms = 0


def _next_ms() -> int:
    """Epoch milliseconds, strictly rising within this process: the host reads files in name
    order, so two messages sent in the same millisecond must still sort in the order sent."""
    global _last_ms
    with _name_lock:
        _last_ms = max(int(time.time() * 1000), _last_ms + 1)
        return _last_ms


def write_ipc_file(directory: Path, data: dict[str, Any]) -> Path:
    """Publish ``data`` as ``<epochMs>-<random>.json``: written as ``.tmp``, then renamed."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{_next_ms()}-{os.urandom(4).hex()}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
    return path


def new_task_id() -> str:
    suffix = "".join(_BASE36[b % 36] for b in os.urandom(6))
    return f"task-{int(time.time() * 1000)}-{suffix}"


def validate_schedule(schedule_type: str, schedule_value: str) -> None:
    """Raise ToolError (an ``isError`` result) unless the schedule can work: the scheduler's own rules
    (:mod:`agentlite.core.schedules`), checked here too so the agent hears about a mistake at once (the
    host re-checks)."""
    from agentlite.core.errors import ConfigError
    from agentlite.core.schedules import validate_schedule as check

    try:
        check(schedule_type, schedule_value.strip(), "UTC")
    except ConfigError as exc:
        raise ToolError(
            f"{exc}. Examples: cron `0 9 * * *`, interval `300000` (ms), once `2026-02-01T15:30:00`."
        ) from None


def valid_folder(folder: str) -> bool:
    """The group-folder rule (:func:`agentlite.core.names.valid_group_folder`, the one every door
    uses), imported when a group is registered, not at start-up."""
    from agentlite.core.names import valid_group_folder

    return valid_group_folder(folder)


def _post(url: str, token: str | None, body: dict[str, Any]) -> tuple[int, Any]:
    import urllib.error
    import urllib.request  # ~30 ms of imports: only when an action is called

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


# -- the tools ------------------------------------------------------------------------------------

_STRING: dict[str, Any] = {"type": "string"}
_SCHEDULE_TYPE: dict[str, Any] = {"type": "string", "enum": ["cron", "interval", "once"]}


class Tool:
    """One tool: what ``tools/list`` shows and the function ``tools/call`` runs."""

    __slots__ = ("description", "fn", "name", "properties", "required")

    def __init__(self, fn: Callable[..., str], properties: dict[str, dict[str, Any]], required: tuple[str, ...]) -> None:  # fmt: skip
        self.name = fn.__name__
        self.description = _cleandoc(fn.__doc__ or "")
        self.properties = properties
        self.required = required
        self.fn = fn

    def listing(self) -> dict[str, Any]:
        schema = {"type": "object", "properties": self.properties, "required": list(self.required)}
        return {"name": self.name, "description": self.description, "inputSchema": schema}

    def check(self, arguments: Any) -> dict[str, Any]:
        """The arguments the function takes; ToolError naming the first one that is wrong."""
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise ToolError("arguments must be a JSON object.")
        missing = [name for name in self.required if arguments.get(name) is None]
        if missing:
            raise ToolError(f"missing required argument `{missing[0]}`.")
        taken: dict[str, Any] = {}
        for name, schema in self.properties.items():
            value = arguments.get(name)
            if value is None:
                continue  # optional and not given (or null): the function's default applies
            kind = schema["type"]
            ok = (
                isinstance(value, str)
                if kind == "string"
                else isinstance(value, int) and not isinstance(value, bool)
                if kind == "integer"
                else isinstance(value, dict)
            )
            if not ok:
                raise ToolError(f"argument `{name}` must be a JSON {kind}, not {json.dumps(value)[:80]}.")
            if "enum" in schema and value not in schema["enum"]:
                raise ToolError(
                    f"argument `{name}` must be one of {', '.join(schema['enum'])}, not `{value}`."
                )
            taken[name] = value
        return taken


def _cleandoc(text: str) -> str:
    # inspect.cleandoc without importing inspect: the agent sees the text without source indentation.
    lines = text.expandtabs().splitlines()
    indents = [len(line) - len(line.lstrip()) for line in lines[1:] if line.strip()]
    margin = min(indents) if indents else 0
    body = [lines[0].strip()] + [line[margin:].rstrip() for line in lines[1:]] if lines else []
    return "\n".join(body).strip()


_MISSING = object()


def _read_snapshot(path: Path, what: str) -> Any:
    """A JSON snapshot the host writes into the IPC folder, or ``_MISSING`` before it has written one."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return _MISSING
    except ValueError as exc:
        raise ToolError(f"Error reading {what}: {exc}") from None


def build_tools(config: BoxConfig) -> dict[str, Tool]:
    """Every tool, bound to ``config``."""
    messages_dir = config.ipc_dir / "messages"
    tasks_dir = config.ipc_dir / "tasks"
    tools: dict[str, Tool] = {}

    def tool(properties: dict[str, dict[str, Any]], *required: str) -> Callable[[Callable[..., str]], Callable[..., str]]:  # fmt: skip
        def add(fn: Callable[..., str]) -> Callable[..., str]:
            tools[fn.__name__] = Tool(fn, properties, required)
            return fn

        return add

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

    def actions(path: str, body: dict[str, Any]) -> Any:
        if not config.actions_url:
            raise ToolError("Actions are not available in this session.")
        status, reply = _post(config.actions_url + path, config.actions_token, body)
        if not 200 <= status < 300:
            error = reply.get("error") if isinstance(reply, dict) else None
            raise ToolError(str(error or f"actions server replied HTTP {status}"))
        return reply

    @tool({"text": _STRING, "sender": _STRING}, "text")
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

    @tool(
        {
            "prompt": _STRING,
            "schedule_type": _SCHEDULE_TYPE,
            "schedule_value": _STRING,
            "context_mode": {"type": "string", "enum": ["group", "isolated"], "default": "group"},
            "target_group_jid": _STRING,
        },
        "prompt",
        "schedule_type",
        "schedule_value",
    )
    def schedule_task(
        prompt: str,
        schedule_type: str,
        schedule_value: str,
        context_mode: str = "group",
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

    @tool({})
    def list_tasks() -> str:
        """List the scheduled tasks: all of them from the main group, otherwise this group's own."""
        tasks = _read_snapshot(config.ipc_dir / "current_tasks.json", "tasks")
        if tasks is _MISSING:
            return "No scheduled tasks found."
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

    @tool({})
    def get_budget() -> str:
        """Show this group's budget: the limits, what was spent before this run, and whether it is
        paused. Read only: budgets are set and resumed by an operator on the host."""
        state = _read_snapshot(config.ipc_dir / "budget.json", "the budget")
        if state is _MISSING:
            return "No budget information."
        budgets = state.get("budgets") if isinstance(state, dict) else None
        if not isinstance(budgets, list):
            raise ToolError("Error reading the budget: unexpected snapshot format.")
        if not budgets:
            return "No budget is set for this group."
        lines = []
        for b in budgets:
            if not isinstance(b, dict):
                continue
            usd = b.get("unit") == "usd"

            def amount(value: Any, usd: bool = usd) -> str:
                if value is None:
                    return "none"
                return f"${float(value):.4f}" if usd else f"{int(value)} tokens"

            scope = "this agent" if b.get("scope") == "*" else "this group"
            lines.append(
                f"- {scope}: daily {amount(b.get('daily_spent'))} of {amount(b.get('daily_limit'))} "
                f"(resets at {b.get('reset_hour', 0)}:00), total {amount(b.get('total_spent'))} of "
                f"{amount(b.get('total_limit'))}; paused: {b.get('paused') or 'no'}"
            )
        return f"Budget as of {state.get('as_of', 'the start of this run')}:\n" + "\n".join(lines)

    @tool({"task_id": _STRING}, "task_id")
    def pause_task(task_id: str) -> str:
        """Pause a scheduled task; it will not run until resumed."""
        write_task(task_ref("pause_task", task_id))
        return f"Task {task_id} pause requested."

    @tool({"task_id": _STRING}, "task_id")
    def resume_task(task_id: str) -> str:
        """Resume a paused task."""
        write_task(task_ref("resume_task", task_id))
        return f"Task {task_id} resume requested."

    @tool({"task_id": _STRING}, "task_id")
    def cancel_task(task_id: str) -> str:
        """Cancel and delete a scheduled task."""
        write_task(task_ref("cancel_task", task_id))
        return f"Task {task_id} cancellation requested."

    @tool({"task_id": _STRING, "prompt": _STRING, "schedule_type": _SCHEDULE_TYPE, "schedule_value": _STRING},
          "task_id")  # fmt: skip
    def update_task(
        task_id: str,
        prompt: str | None = None,
        schedule_type: str | None = None,
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

    @tool({"jid": _STRING, "name": _STRING, "folder": _STRING, "trigger": _STRING},
          "jid", "name", "folder", "trigger")  # fmt: skip
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

    @tool({"query": _STRING, "max_results": {"type": "integer", "default": 5}}, "query")
    def search_actions(query: str, max_results: int = 5) -> str:
        """Find custom actions the host offers; call them with call_action.

        Query grammar: `select:a,b` fetches exact names; `+word` requires word in the name; other
        words rank by matches in the name (first) or the description. Returns name, description and
        the JSON Schema of each action's payload.
        """
        reply = actions("/search", {"query": query, "max_results": max_results})
        return json.dumps(reply.get("actions", []) if isinstance(reply, dict) else reply, indent=2)

    @tool({"name": _STRING, "payload": {"type": "object", "additionalProperties": True}}, "name")
    def call_action(name: str, payload: dict[str, Any] | None = None) -> str:
        """Call a custom host action by name with a payload matching its inputSchema."""
        reply = actions("/call", {"name": name, "payload": payload or {}, "chat_id": config.chat_jid})
        result = reply.get("result") if isinstance(reply, dict) else reply
        return result if isinstance(result, str) else json.dumps(result, indent=2)

    return tools


# -- the MCP stdio transport ----------------------------------------------------------------------


class StdioServer:
    """MCP over stdio: one JSON-RPC message per line in, one per line out.

    Handled inline, in arrival order: ``initialize``, ``ping``, ``tools/list`` and notifications;
    each ``tools/call`` runs on its own thread, so a slow action never holds up the next request.
    """

    def __init__(self, tools: dict[str, Tool], out: Any = None) -> None:
        self.tools = tools
        self._out = out if out is not None else sys.stdout.buffer
        self._write_lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        with self._write_lock:
            self._out.write(data)
            self._out.flush()

    def reply(self, request_id: Any, result: dict[str, Any]) -> None:
        self.send({"jsonrpc": "2.0", "id": request_id, "result": result})

    def fail(self, request_id: Any, code: int, message: str) -> None:
        self.send({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}})

    def handle_line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            message = json.loads(line)
        except ValueError as exc:
            self.fail(None, PARSE_ERROR, f"Parse error: {exc}")
            return
        if not isinstance(message, dict) or not isinstance(message.get("method"), str):
            if isinstance(message, dict) and ("result" in message or "error" in message):
                return  # an answer to a request we never make
            self.fail(message.get("id") if isinstance(message, dict) else None, INVALID_REQUEST,
                      "Invalid request: expected one JSON-RPC request object")  # fmt: skip
            return
        method, params = message["method"], message.get("params") or {}
        if "id" not in message:
            return  # notifications (initialized, cancelled, ...) need no answer
        request_id = message["id"]
        if method == "initialize":
            asked = params.get("protocolVersion") if isinstance(params, dict) else None
            version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[-1]
            self.reply(request_id, {
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": {"name": SERVER_NAME, "version": SERVER_VERSION},
            })  # fmt: skip
        elif method == "ping":
            self.reply(request_id, {})
        elif method == "tools/list":
            self.reply(request_id, {"tools": [t.listing() for t in self.tools.values()]})
        elif method == "tools/call":
            if not isinstance(params, dict) or not isinstance(params.get("name"), str):
                self.fail(request_id, INVALID_PARAMS, "tools/call needs params.name")
                return
            threading.Thread(target=self.call, args=(request_id, params), daemon=True).start()
        else:
            self.fail(request_id, METHOD_NOT_FOUND, f"Method not found: {method}")

    def call(self, request_id: Any, params: dict[str, Any]) -> None:
        name = params["name"]
        tool = self.tools.get(name)
        if tool is None:
            self.fail(request_id, INVALID_PARAMS, f"Unknown tool: {name}")
            return
        try:
            text, is_error = tool.fn(**tool.check(params.get("arguments"))), False
        except ToolError as exc:
            text, is_error = str(exc), True
        except Exception as exc:  # a bug or an OS error: the agent hears it, the server lives on
            print(
                f"[agentlite-mcp] tool {name} failed: {type(exc).__name__}: {exc}",
                file=sys.stderr,
                flush=True,
            )
            text, is_error = f"Error executing tool {name}: {exc}", True
        self.reply(request_id, {"content": [{"type": "text", "text": text}], "isError": is_error})

    def serve(self, stream: Any = None) -> None:
        """Answer requests until the client closes stdin."""
        source = stream if stream is not None else sys.stdin.buffer
        for line in source:
            self.handle_line(line)


def main() -> None:
    StdioServer(build_tools(BoxConfig.from_env())).serve()


if __name__ == "__main__":
    main()
