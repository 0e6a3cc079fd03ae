"""The runner's input (one JSON document on stdin), read without pydantic on the usual path.

The host always sends ``RunnerInput.model_dump_json()``: every field present, of its exact type.
:func:`parse_input` checks that shape with plain ``isinstance`` tests (well under a millisecond).
Anything else (a hand-written input, a field pydantic would coerce, a missing field) goes to the
host's own model, :class:`agentlite.run.protocol.RunnerInput`, so the result and the error messages
are exactly the host's: the fast path only ever accepts what that model accepts unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from agentlite.core.errors import AgentliteError, describe_validation_error
from agentlite.run.wire import BACKEND_TYPES, default_key_env


class InputError(AgentliteError, ValueError):
    """The input is not a valid RunnerInput; the message lists every problem."""


class BackendSettings:
    """Which agent drives the run (the fields of :class:`agentlite.run.protocol.BackendConfig`)."""

    __slots__ = ("api_key_env", "base_url", "command", "max_retries", "model", "type")

    def __init__(self, data: dict[str, Any]) -> None:
        self.type: str = data["type"]
        self.model: str | None = data["model"]
        self.base_url: str | None = data["base_url"]
        self.api_key_env: str | None = data["api_key_env"]
        self.command: list[str] | None = data["command"]
        self.max_retries: int = data["max_retries"]

    def key_env(self) -> str:
        return default_key_env(self.type, self.api_key_env)


class McpServerSpec:
    __slots__ = ("args", "command", "env")

    def __init__(self, data: dict[str, Any]) -> None:
        self.command: str = data["command"]
        self.args: list[str] = data["args"]
        self.env: dict[str, str] = data["env"]

    def as_dict(self) -> dict[str, Any]:
        return {"command": self.command, "args": self.args, "env": self.env}


class TurnInput:
    """Everything the runner needs for a run (the fields of :class:`agentlite.run.protocol.RunnerInput`)."""

    __slots__ = ("actions_auth", "assistant_name", "backend", "chat_id", "group_folder", "is_main",
                 "is_scheduled_task", "mcp_servers", "prompt", "session_id")  # fmt: skip

    def __init__(self, data: dict[str, Any]) -> None:
        self.prompt: str = data["prompt"]
        self.group_folder: str = data["group_folder"]
        self.chat_id: str = data["chat_id"]
        self.is_main: bool = data["is_main"]
        self.session_id: str | None = data["session_id"]
        self.is_scheduled_task: bool = data["is_scheduled_task"]
        self.assistant_name: str | None = data["assistant_name"]
        self.backend = BackendSettings(data["backend"])
        self.mcp_servers = {name: McpServerSpec(s) for name, s in data["mcp_servers"].items()}
        self.actions_auth: dict[str, str] | None = data["actions_auth"]


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _opt_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _str_map(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(x, str) for x in v.values())


def _model(v: Any) -> bool:
    # Exactly what the host's BackendConfig keeps unchanged: a trimmed, non-blank name or None.
    return v is None or (isinstance(v, str) and v != "" and v == v.strip())


def _retries(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 10


def _shape(data: Any, fields: dict[str, Any]) -> bool:
    return (
        isinstance(data, dict) and data.keys() == fields.keys() and all(f(data[k]) for k, f in fields.items())
    )


_BACKEND = {"type": lambda v: v in BACKEND_TYPES, "model": _model, "base_url": _opt_str,
            "api_key_env": _opt_str, "command": lambda v: v is None or _str_list(v), "max_retries": _retries}  # fmt: skip
_MCP = {"command": _str, "args": _str_list, "env": _str_map}
_AUTH = {"url": _str, "token": _str}
_INPUT = {
    "prompt": _str, "group_folder": _str, "chat_id": _str, "is_main": _bool, "session_id": _opt_str,
    "is_scheduled_task": _bool, "assistant_name": _opt_str,
    "backend": lambda v: _shape(v, _BACKEND),
    "mcp_servers": lambda v: isinstance(v, dict) and all(_shape(s, _MCP) for s in v.values()),
    "actions_auth": lambda v: v is None or _shape(v, _AUTH),
}  # fmt: skip


def parse_input(raw: str | bytes) -> TurnInput:
    """The runner input in ``raw``; InputError naming every problem (the host model's wording)."""
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if _shape(data, _INPUT):
        return TurnInput(data)
    return _parse_with_the_host_model(raw)


def _parse_with_the_host_model(raw: str | bytes) -> TurnInput:
    from pydantic import ValidationError

    from agentlite.run.protocol import RunnerInput

    try:
        model = RunnerInput.model_validate_json(raw)
    except ValidationError as exc:
        raise InputError(describe_validation_error(exc, "input")) from None
    return TurnInput(model.model_dump())
