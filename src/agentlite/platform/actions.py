"""Host-side custom actions: a registry of named handlers and the HTTP server boxes call them through.

A box reaches host code only through this narrow door: the in-box MCP server (``agentlite.guest.mcp_server``)
posts ``/search`` and ``/call`` requests with a bearer token minted for that one spawn. The token, not
the request body, says who is calling (group folder and main flag), so a prompt-injected agent cannot
claim to be another group; the ``chat_id`` it sends is only an assertion that handlers must re-check.

Wire format (every reply is JSON, one request per connection)::

    POST /search  {"query": str, "max_results": int = 5}
        -> 200 {"actions": [{"name", "description", "inputSchema"}]}
    POST /call    {"name": str, "payload": any, "chat_id": str | null}
        -> 200 {"result": value | null}
        -> 404 {"error": "unknown action: <name>"}
        -> 400 {"error": "invalid payload for action \\"<name>\\": ..."}
        -> 500 {"error": "<what the handler raised>"}

Checks run in this order: method (405), bearer token (401 ``{"error":"unauthorized"}``), body size
(413 over 1 MB), JSON (400 ``{"error":"invalid JSON body"}``), path (404).

Search grammar (mirrors Claude Code's ToolSearch): ``select:a,b`` returns exactly those names in that
order, dropping unknown ones; an empty query returns nothing; otherwise the query is split into
lower-cased tokens, a ``+tok`` token must occur in the action name, and every other token scores +2
when it occurs in the name or +1 when it occurs only in the description. Without required tokens an
action needs a positive score; results are sorted by score (highest first), then name, and capped at
``max_results`` (default 5, floored, at least 1).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import inspect
import json
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, ValidationError

from agentlite.core.errors import AgentliteError, ConfigError, describe_validation_error
from agentlite.run.protocol import ActionsAuth

log = logging.getLogger("agentlite.actions")

#: Names the platform itself uses for box tools; a custom action with one of these names would be
#: ambiguous to the agent, so registration refuses them.
RESERVED_ACTION_NAMES = frozenset(
    {
        "message",
        "send_message",
        "schedule_task",
        "list_tasks",
        "pause_task",
        "resume_task",
        "cancel_task",
        "update_task",
        "refresh_groups",
        "register_group",
        "search_actions",
        "call_action",
        "code_run",
    }
)
MAX_BODY = 1024 * 1024
DEFAULT_MAX_RESULTS = 5
_MAX_HEADER_BYTES = 64 * 1024
_MAX_HEADERS = 100
#: A request (line, headers and body) must arrive within this; a half-open or idle connection is
#: dropped then. Boxes send small local requests, so a few seconds is generous.
REQUEST_READ_TIMEOUT = 5.0
#: Connections still sending their request, at most; a new one evicts the oldest when full, so a
#: flood of half-open connections can hold neither the host's file descriptors nor the door.
MAX_PENDING_CONNECTIONS = 64
#: Requests being served at once, per token (one box's run) and in total; more get 429.
MAX_ACTIVE_PER_TOKEN = 16
MAX_ACTIVE_TOTAL = 128
_DRAIN_LIMIT = 16 * MAX_BODY
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


class ActionContext(BaseModel):
    """Who is calling an action.

    ``source_group`` and ``is_main`` come from the bearer token the host minted, so they can be
    trusted. ``chat_id`` is whatever the box asserted: re-validate it (for example, check that it is
    registered to ``source_group``) before acting on it.
    """

    model_config = ConfigDict(frozen=True)

    chat_id: str | None
    source_group: str
    is_main: bool
    action: str = ""

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(f"agentlite.action.{self.action or 'unknown'}")


ActionHandler = Callable[..., Any | Awaitable[Any]]


class PayloadError(ConfigError):
    """A payload did not match an action's schema; the message says where."""


class ActionRefused(ConfigError):
    """A handler refuses a call it cannot serve (an unknown id, another group's session); the box
    gets the message as the call's error."""


@dataclass(frozen=True)
class Action:
    """One registered action. ``schema`` is a pydantic model class, a JSON Schema dict, or None."""

    name: str
    handler: ActionHandler
    description: str | None = None
    schema: type[BaseModel] | dict[str, Any] | None = None

    def input_schema(self) -> dict[str, Any]:
        """The JSON Schema an agent sees for the payload."""
        if self.schema is None:
            return dict(_EMPTY_SCHEMA)
        if isinstance(self.schema, dict):
            return self.schema
        return self.schema.model_json_schema()

    def validate(self, payload: Any) -> Any:
        """The payload the handler receives: a model instance, a checked dict, or None (no schema)."""
        if self.schema is None:
            return None
        if payload is None:
            payload = {}
        if isinstance(self.schema, dict):
            validator = jsonschema.Draft202012Validator(self.schema)
            errors = sorted(validator.iter_errors(payload), key=lambda e: list(e.absolute_path))
            if errors:
                raise PayloadError("; ".join(_describe_json_error(e) for e in errors))
            return payload
        try:
            return self.schema.model_validate(payload)
        except ValidationError as exc:
            raise PayloadError(describe_validation_error(exc, "payload")) from None

    async def invoke(self, payload: Any, ctx: ActionContext) -> Any:
        """Call the handler: ``handler(payload, ctx)`` with a schema, ``handler(ctx)`` without one.

        Sync handlers run on the event loop (as in the reference, which is single-threaded), so they
        should be quick; anything slow belongs in an async handler.
        """
        value = self.handler(ctx) if self.schema is None else self.handler(payload, ctx)
        if inspect.isawaitable(value):
            value = await value
        return value


def _describe_json_error(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


class ActionRegistry:
    """Named actions a box may search and call; a later registration under the same name wins."""

    def __init__(self) -> None:
        self._actions: dict[str, Action] = {}

    def register(
        self,
        name: str,
        handler: ActionHandler,
        *,
        description: str | None = None,
        schema: type[BaseModel] | dict[str, Any] | None = None,
    ) -> Action:
        """Add or replace the action ``name``.

        With ``schema`` the handler is called as ``handler(payload, ctx)`` with the validated payload
        (a model instance for a pydantic class, the checked dict for a JSON Schema); without a schema
        it is called as ``handler(ctx)``. It may be sync or async.
        """
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"action name `{name}` must be a non-empty string")
        if name in RESERVED_ACTION_NAMES:
            raise ConfigError(f"Cannot register custom action `{name}`: reserved built-in")
        if not callable(handler):
            raise ConfigError(f"handler for action `{name}` is not callable")
        if schema is not None:
            if isinstance(schema, dict):
                try:
                    jsonschema.Draft202012Validator.check_schema(schema)
                except jsonschema.SchemaError as exc:
                    raise ConfigError(
                        f"schema for action `{name}` is not valid JSON Schema: {exc.message}"
                    ) from None
            elif not (isinstance(schema, type) and issubclass(schema, BaseModel)):
                raise ConfigError(
                    f"schema for action `{name}` must be a pydantic model class or a JSON Schema dict"
                )
        action = Action(name=name, handler=handler, description=description, schema=schema)
        self._actions[name] = action
        return action

    def unregister(self, name: str) -> bool:
        return self._actions.pop(name, None) is not None

    def get(self, name: str) -> Action | None:
        return self._actions.get(name)

    def names(self) -> list[str]:
        return sorted(self._actions)

    def __contains__(self, name: object) -> bool:
        return name in self._actions

    def __len__(self) -> int:
        return len(self._actions)

    def search(self, query: str, max_results: int = DEFAULT_MAX_RESULTS) -> list[Action]:
        """The actions matching ``query`` under the ToolSearch grammar (see the module docstring)."""
        query = (query or "").strip()
        if not query:
            return []
        if query[:7].lower() == "select:":
            picked: list[Action] = []
            for raw in query[7:].split(","):
                action = self._actions.get(raw.strip())
                if action is not None and action not in picked:
                    picked.append(action)
            return picked
        tokens = query.lower().split()
        required = [t[1:] for t in tokens if t.startswith("+") and len(t) > 1]
        ranking = [t for t in tokens if not t.startswith("+")]
        scored: list[tuple[int, str, Action]] = []
        for name, action in self._actions.items():
            lname = name.lower()
            if not all(tok in lname for tok in required):
                continue
            ldesc = (action.description or "").lower()
            score = sum(2 if tok in lname else 1 if tok in ldesc else 0 for tok in ranking)
            if score > 0 or required:
                scored.append((score, name, action))
        scored.sort(key=lambda item: (-item[0], item[1]))
        return [action for _, _, action in scored[:max_results]]


@dataclass(frozen=True)
class _Grant:
    group_folder: str
    is_main: bool


class _HttpError(AgentliteError):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


async def _discard(reader: asyncio.StreamReader, length: int) -> None:
    while length > 0:
        chunk = await reader.read(min(length, 65536))
        if not chunk:
            return
        length -= len(chunk)


def _token_key(token: str) -> bytes:
    # Tokens are looked up by their digest, so lookup timing says nothing about the real tokens.
    return hashlib.sha256(token.encode()).digest()


class ActionsServer:
    """A small asyncio HTTP/1.1 server exposing an :class:`ActionRegistry` to boxes.

    Bind it where boxes can reach it: a run bridges a server on the host's ``127.0.0.1`` (the
    default) into its sandbox box at the same port, whatever the box's network mode; a VM runtime
    needs a host interface address. Never bind ``0.0.0.0`` unless you mean to expose the actions to
    the whole network.

    Connections are capped so a flood cannot exhaust the host's file descriptors: at most
    :data:`MAX_PENDING_CONNECTIONS` still sending their request (the oldest is dropped for a new
    one), each given :data:`REQUEST_READ_TIMEOUT` seconds; at most :data:`MAX_ACTIVE_PER_TOKEN`
    requests served per token and :data:`MAX_ACTIVE_TOTAL` in all (429 beyond).
    """

    def __init__(self, registry: ActionRegistry) -> None:
        self.registry = registry
        self._server: asyncio.Server | None = None
        self._url: str | None = None
        self._grants: dict[bytes, _Grant] = {}
        self._connections: set[asyncio.Task[None]] = set()
        # Insertion-ordered, so the oldest pending connection is the first key.
        self._pending: dict[asyncio.Task[None], None] = {}
        self._active: dict[int, int] = {}

    @property
    def url(self) -> str | None:
        return self._url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (port 0 lets the kernel choose) and return the base URL."""
        if self._server is not None:
            raise AgentliteError(f"actions server already running at {self._url}")
        server = await asyncio.start_server(
            self._on_connection, host, port, limit=_MAX_HEADER_BYTES, backlog=1024
        )
        bound_port = server.sockets[0].getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self._server = server
        self._url = f"http://{shown}:{bound_port}"
        log.info("actions server listening on %s", self._url)
        return self._url

    async def stop(self) -> None:
        """Stop listening, drop open connections, and forget every token."""
        self._grants.clear()
        server, self._server, self._url = self._server, None, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    def mint_token(self, group_folder: str, is_main: bool) -> ActionsAuth:
        """A fresh token bound to ``group_folder`` and ``is_main``: 32 random bytes, base64url."""
        if self._url is None:
            raise AgentliteError("actions server is not running: call start() before mint_token()")
        token = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        self._grants[_token_key(token)] = _Grant(group_folder=group_folder, is_main=bool(is_main))
        return ActionsAuth(url=self._url, token=token)

    def revoke_token(self, token: str) -> bool:
        return self._grants.pop(_token_key(token), None) is not None

    # -- HTTP ------------------------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        if len(self._pending) >= MAX_PENDING_CONNECTIONS:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            oldest.cancel()
        self._pending[task] = None
        grant_key: int | None = None
        try:
            try:
                # Only reading is timed: a slow client must not hold a connection, but an action may
                # legitimately take long.
                path, body, grant = await asyncio.wait_for(self._read_request(reader), REQUEST_READ_TIMEOUT)
                self._pending.pop(task, None)
                if self._active.get(id(grant), 0) >= MAX_ACTIVE_PER_TOKEN:
                    raise _HttpError(429, {"error": "too many requests in flight for this token"})
                if sum(self._active.values()) >= MAX_ACTIVE_TOTAL:
                    raise _HttpError(429, {"error": "too many requests in flight"})
                grant_key = id(grant)
                self._active[grant_key] = self._active.get(grant_key, 0) + 1
                status, reply = await self._dispatch(path, body, grant)
            except _HttpError as exc:
                status, reply = exc.status, exc.body
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return
            await self._respond(writer, status, reply)
        except ConnectionError:
            pass  # the client went away; a cancellation (stop()) propagates
        finally:
            self._pending.pop(task, None)
            if grant_key is not None:
                left = self._active[grant_key] - 1
                if left:
                    self._active[grant_key] = left
                else:
                    del self._active[grant_key]
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, writer: asyncio.StreamWriter, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode() + data)
        await writer.drain()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, dict[str, Any], _Grant]:
        """Read one request and run the checks in the documented order; raise _HttpError on failure."""
        try:
            request_line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError:
            raise _HttpError(431, {"error": "request line too long"}) from None
        parts = request_line.decode("latin-1").split()
        if len(parts) != 3:
            raise _HttpError(400, {"error": "malformed request line"})
        method, target, _version = parts
        headers: dict[str, str] = {}
        total = len(request_line)
        while True:
            try:
                line = await reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError:
                raise _HttpError(431, {"error": "header too long"}) from None
            total += len(line)
            if line == b"\r\n":
                break
            if total > _MAX_HEADER_BYTES or len(headers) >= _MAX_HEADERS:
                raise _HttpError(431, {"error": "headers too large"})
            key, sep, value = line.decode("latin-1").partition(":")
            if sep:
                headers[key.strip().lower()] = value.strip()

        if method != "POST":
            raise _HttpError(405, {"error": "method not allowed"})
        grant = self._authorize(headers.get("authorization", ""))
        if grant is None:
            raise _HttpError(401, {"error": "unauthorized"})
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise _HttpError(411, {"error": "Content-Length required"})
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise _HttpError(400, {"error": "invalid Content-Length"}) from None
        if length < 0:
            raise _HttpError(400, {"error": "invalid Content-Length"})
        if length > MAX_BODY:
            # Swallow a moderately oversized body first: closing with unread data makes the kernel
            # reset the connection, and the client would see a reset instead of the 413.
            if length <= _DRAIN_LIMIT:
                await _discard(reader, length)
            raise _HttpError(413, {"error": "request body too large"})
        raw = await reader.readexactly(length)
        try:
            body = json.loads(raw) if raw else {}
        except (ValueError, UnicodeDecodeError):
            raise _HttpError(400, {"error": "invalid JSON body"}) from None
        if not isinstance(body, dict):
            raise _HttpError(400, {"error": "invalid JSON body"})
        return target.split("?", 1)[0], body, grant

    async def _dispatch(self, path: str, body: dict[str, Any], grant: _Grant) -> tuple[int, dict[str, Any]]:
        if path == "/search":
            return 200, self._search(body)
        if path == "/call":
            return await self._call(body, grant)
        return 404, {"error": "not found"}

    def _authorize(self, header: str) -> _Grant | None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self._grants.get(_token_key(token.strip()))

    def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        query = body.get("query")
        raw_max = body.get("max_results")
        max_results = DEFAULT_MAX_RESULTS
        numeric = isinstance(raw_max, int | float) and not isinstance(raw_max, bool)
        if numeric and math.isfinite(raw_max) and raw_max > 0:
            max_results = max(1, math.floor(raw_max))
        found = self.registry.search(query if isinstance(query, str) else "", max_results)
        return {
            "actions": [
                {"name": a.name, "description": a.description, "inputSchema": a.input_schema()} for a in found
            ]
        }

    async def _call(self, body: dict[str, Any], grant: _Grant) -> tuple[int, dict[str, Any]]:
        name = body.get("name")
        if not isinstance(name, str):
            return 400, {"error": "`name` must be a string"}
        action = self.registry.get(name)
        if action is None:
            return 404, {"error": f"unknown action: {name}"}
        try:
            payload = action.validate(body.get("payload"))
        except PayloadError as exc:
            return 400, {"error": f'invalid payload for action "{name}": {exc}'}
        chat_id = body.get("chat_id")
        ctx = ActionContext(
            chat_id=chat_id if isinstance(chat_id, str) else None,
            source_group=grant.group_folder,
            is_main=grant.is_main,
            action=name,
        )
        try:
            value = await action.invoke(payload, ctx)
        except Exception as exc:
            log.warning("action %s failed for %s: %s", name, grant.group_folder, exc, exc_info=True)
            return 500, {"error": str(exc) or type(exc).__name__}
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            return 500, {"error": f"action result is not JSON-serializable: {exc}"}
        return 200, {"result": value}
