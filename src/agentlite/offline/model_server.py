"""A scripted offline model server that speaks just enough of two model APIs for the real agent CLIs.

Why it exists: tests must drive the real ``codex`` and ``claude`` CLIs without a network or API key,
and the product needs an offline demo model. Both talk to this one small HTTP/1.1 server on
127.0.0.1:

- ``POST /v1/messages`` (Anthropic Messages API, server-sent events) for ``claude``;
  point ``ANTHROPIC_BASE_URL`` at :attr:`ModelServer.anthropic_base_url`.
- ``POST /v1/responses`` (OpenAI Responses API, server-sent events) for ``codex``; use
  :attr:`ModelServer.openai_base_url` as the provider's ``base_url``.
- Anything else (``claude`` sends a ``HEAD /`` warm-up) gets a 404 JSON answer.

The "model" is a script chosen per request: a ``[scenario:NAME]`` tag in the user's prompt wins,
otherwise :attr:`ModelServer.scenario`. Both CLIs are stateless towards the server (every request
carries the whole conversation), so the step within a script is the number of tool results that
came back since the latest user prompt. See :data:`SCENARIOS` for the scripts.

Only the standard library is used (asyncio streams, no web framework) and imports are kept few,
because the product imports this module to run its embedded demo model.

Run it in the foreground with ``python -m agentlite.offline.model_server [--port N] [--scenario S]
[--delay SEC]``: it prints its URL on one stdout line and logs every request to stderr.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentlite.core.errors import AgentliteError, ConfigError

__all__ = ["SCENARIOS", "ModelServer", "RecordedRequest", "ScriptedUsage", "main"]

#: Every scenario name the server knows, in the order they are documented.
#:
#: - ``demo``: the offline demo model; one text reply that says so and echoes the last prompt.
#: - ``text``: one text reply, ``hi from the offline model``.
#: - ``multi``: two texts plus one shell call in the first response, a final text after the tool.
#: - ``tool``: one shell call (``echo probe > out.txt``), then a final text.
#: - ``calls3``: shell call, shell call, final text: three model calls per turn.
#: - ``error500``: HTTP 500 with a JSON error body in the API's own error shape.
#: - ``hang``: never answers (until the client disconnects or the server stops).
#: - ``shell``: one shell call running :attr:`ModelServer.command`, then ``Ran the command.``.
#: - ``tool_call``: one call of the tool :attr:`ModelServer.tool` ``(name, input)``, then ``Called the tool.``.
SCENARIOS: tuple[str, ...] = (
    "demo",
    "text",
    "multi",
    "tool",
    "calls3",
    "error500",
    "hang",
    "shell",
    "tool_call",
)

_TAG = re.compile(r"\[scenario:([A-Za-z0-9_.-]+)\]")
_ERROR_500_MESSAGE = "offline model server: injected HTTP 500"
_DEMO_ECHO_LIMIT = 120
_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it, kept in :attr:`ModelServer.requests` for assertions.

    ``path`` excludes the query string (``query`` holds it, e.g. ``beta=true``); ``headers`` have
    lower-case names; ``body`` is the decoded JSON body or ``None``. For model requests ``scenario``
    and ``step`` say which script step answered (``None`` for other requests or unreadable bodies).
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    scenario: str | None = None
    step: int | None = None
    received_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class _Text:
    """An assistant text message (a text block for Anthropic, a message item for OpenAI)."""

    text: str


@dataclass(frozen=True)
class _Shell:
    """A call of the CLI's own shell tool: ``Bash`` for claude, ``exec_command`` for codex."""

    command: str
    description: str


@dataclass(frozen=True)
class _Tool:
    """A call of any named tool (an MCP tool such as ``mcp__agentlite__send_message``)."""

    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class ScriptedUsage:
    """Token counts every model response reports instead of the server's own estimate, so a test
    knows to the token what a turn must be charged (``cached``: cache reads; ``cache_write``:
    Anthropic's cache creation; OpenAI reports no cache writes)."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0


_Output = _Text | _Shell | _Tool
_Step = tuple[_Output, ...]

# Scripted scenarios: one tuple of outputs per model request of a turn. Requests beyond the script
# (more tool rounds than planned) get the last step again, which always ends the turn with text.
_SCRIPTS: dict[str, tuple[_Step, ...]] = {
    "text": ((_Text("hi from the offline model"),),),
    "multi": (
        (
            _Text("I will inspect the workspace first."),
            _Text("Plan: run one command, then answer."),
            _Shell("echo probe > probe.txt", "Write probe.txt"),
        ),
        (_Text("Final answer after the tool work."),),
    ),
    "tool": (
        (_Shell("echo probe > out.txt", "Write out.txt"),),
        (_Text("Wrote out.txt with the shell tool."),),
    ),
    "calls3": (
        (_Shell("echo one > one.txt", "Write one.txt"),),
        (_Shell("echo two > two.txt", "Write two.txt"),),
        (_Text("Done after three model calls."),),
    ),
}


@dataclass
class _Conversation:
    """What the scripts need from a request, independent of the API: the user's prompt texts in
    order (context blocks such as ``<system-reminder>`` left out) and the tool results that came
    back since the latest prompt."""

    prompts: list[str]
    tool_results_in_turn: int


def _is_prompt(text: str) -> bool:
    # Both CLIs wrap injected context (system reminders, environment context) in <tags>; AgentLite's
    # own chat prompts are XML too, but always hold a <messages> block.
    return bool(text.strip()) and (not text.lstrip().startswith("<") or "<messages>" in text)


_CHAT_MESSAGE = re.compile(r"<message [^>]*>(.*?)</message>", re.DOTALL)


def _last_chat_text(prompt: str) -> str:
    """The newest chat message of an AgentLite chat prompt, or the prompt itself."""
    import html

    found = _CHAT_MESSAGE.findall(prompt)
    return html.unescape(found[-1]) if found else prompt


def _anthropic_conversation(body: dict[str, Any]) -> _Conversation:
    prompts: list[str] = []
    tool_results = 0
    for message in body.get("messages") or []:
        # Claude also sends role "system" messages inside `messages`; only user turns matter here.
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        texts = [b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text"]
        results = sum(1 for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result")
        user_prompts = [t for t in texts if isinstance(t, str) and _is_prompt(t)]
        if results:
            tool_results += results
        elif user_prompts:
            prompts.extend(user_prompts)
            tool_results = 0
    return _Conversation(prompts, tool_results)


def _openai_conversation(body: dict[str, Any]) -> _Conversation:
    items = body.get("input")
    if isinstance(items, str):
        return _Conversation([items] if _is_prompt(items) else [], 0)
    prompts: list[str] = []
    tool_results = 0
    for item in items or []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") == "user":
            content = item.get("content")
            parts = [{"type": "input_text", "text": content}] if isinstance(content, str) else content or []
            texts = [
                p.get("text", "")
                for p in parts
                if isinstance(p, dict) and p.get("type") in ("input_text", "text")
            ]
            user_prompts = [t for t in texts if isinstance(t, str) and _is_prompt(t)]
            if user_prompts:
                prompts.extend(user_prompts)
                tool_results = 0
        elif isinstance(kind, str) and kind.endswith("_call_output"):
            tool_results += 1
    return _Conversation(prompts, tool_results)


def _tagged_scenario(conversation: _Conversation) -> str | None:
    # The first tag wins, so one tag in the first prompt fixes the script for the whole session.
    for text in conversation.prompts:
        match = _TAG.search(text)
        if match:
            return match.group(1)
    return None


def _demo_reply(conversation: _Conversation) -> _Step:
    prompt = _last_chat_text(conversation.prompts[-1]) if conversation.prompts else ""
    prompt = " ".join(_TAG.sub("", prompt).split())
    if len(prompt) > _DEMO_ECHO_LIMIT:
        prompt = prompt[: _DEMO_ECHO_LIMIT - 3].rstrip() + "..."
    echo = f'You said: "{prompt}".' if prompt else "I received no prompt text."
    return (
        _Text(
            f"[offline demo model] {echo} This is a canned reply from AgentLite's built-in offline "
            "demo model; no real AI model was contacted."
        ),
    )


def _script_step(scenario: str, conversation: _Conversation) -> _Step:
    if scenario == "demo":
        return _demo_reply(conversation)
    script = _SCRIPTS[scenario]
    return script[min(conversation.tool_results_in_turn, len(script) - 1)]


def _split(text: str) -> list[str]:
    """Cut a string into two stream chunks so clients must join deltas, as with a real model."""
    if len(text) < 2:
        return [text]
    middle = len(text) // 2
    return [text[:middle], text[middle:]]


def _output_tokens(outputs: _Step) -> int:
    return sum(len(o.text) // 4 + 1 if isinstance(o, _Text) else 24 for o in outputs)


def _input_tokens(conversation: _Conversation) -> int:
    return 11 + 11 * conversation.tool_results_in_turn


class _Ids:
    """Unique ids for messages and tool calls; clients reject a repeated tool call id."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._prefix = f"{time.time_ns() % 1_000_000_000:09d}"

    def new(self, kind: str) -> str:
        return f"{kind}_{self._prefix}{next(self._counter):04d}"


def _anthropic_events(
    outputs: _Step, conversation: _Conversation, model: str, ids: _Ids, scripted: ScriptedUsage | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The Anthropic Messages stream for one response. Text must arrive as ``text_delta`` and tool
    input as ``input_json_delta``: claude ignores content that only sits in ``content_block_start``.
    With ``scripted`` usage, ``message_start`` already carries the call's full output count (claude
    reports that usage per call, before the turn's result)."""
    usage_in = scripted.input_tokens if scripted else _input_tokens(conversation)
    usage_out = scripted.output_tokens if scripted else _output_tokens(outputs)
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": ids.new("msg"),
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": usage_in,
                        "cache_creation_input_tokens": scripted.cache_write_tokens if scripted else 0,
                        "cache_read_input_tokens": scripted.cached_input_tokens if scripted else 0,
                        "output_tokens": usage_out if scripted else 1,
                    },
                },
            },
        ),
        ("ping", {"type": "ping"}),
    ]
    for index, output in enumerate(outputs):
        if isinstance(output, _Text):
            start: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": chunk} for chunk in _split(output.text)]
        elif isinstance(output, _Tool):
            start = {"type": "tool_use", "id": ids.new("toolu"), "name": output.name, "input": {}}
            arguments = json.dumps(output.input)
            deltas = [{"type": "input_json_delta", "partial_json": chunk} for chunk in _split(arguments)]
        else:
            start = {"type": "tool_use", "id": ids.new("toolu"), "name": "Bash", "input": {}}
            arguments = json.dumps({"command": output.command, "description": output.description})
            deltas = [{"type": "input_json_delta", "partial_json": chunk} for chunk in _split(arguments)]
        events.append(
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
        )
        events.extend(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            for delta in deltas
        )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    stop_reason = "tool_use" if any(isinstance(o, _Shell | _Tool) for o in outputs) else "end_turn"
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": usage_out},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _openai_events(
    outputs: _Step, conversation: _Conversation, model: str, ids: _Ids, scripted: ScriptedUsage | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The OpenAI Responses stream for one response. codex builds its items only from
    ``response.output_item.done`` and fails the turn without ``response.completed``; the other
    events are there for clients that render deltas."""
    sequence = itertools.count()
    response: dict[str, Any] = {
        "id": ids.new("resp"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "model": model,
        "output": [],
    }
    events: list[tuple[str, dict[str, Any]]] = []

    def emit(kind: str, **data: Any) -> None:
        events.append((kind, {"type": kind, "sequence_number": next(sequence), **data}))

    emit("response.created", response=dict(response))
    emit("response.in_progress", response=dict(response))
    done_items: list[dict[str, Any]] = []
    for index, output in enumerate(outputs):
        if isinstance(output, _Text):
            item_id = ids.new("msg")
            part: dict[str, Any] = {"type": "output_text", "text": output.text, "annotations": []}
            item: dict[str, Any] = {
                "type": "message",
                "id": item_id,
                "role": "assistant",
                "status": "completed",
                "content": [part],
            }
            emit(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            )
            where = {"item_id": item_id, "output_index": index, "content_index": 0}
            emit("response.content_part.added", **where, part={**part, "text": ""})
            for chunk in _split(output.text):
                emit("response.output_text.delta", **where, delta=chunk)
            emit("response.output_text.done", **where, text=output.text)
            emit("response.content_part.done", **where, part=part)
        else:
            item_id = ids.new("fc")
            if isinstance(output, _Tool):
                name, arguments = output.name, json.dumps(output.input)
            else:
                # login=false: a login shell would run the host's profile scripts and leak their noise.
                name, arguments = "exec_command", json.dumps({"cmd": output.command, "login": False})
            item = {
                "type": "function_call",
                "id": item_id,
                "call_id": ids.new("call"),
                "name": name,
                "arguments": arguments,
                "status": "completed",
            }
            server, _, short = name.removeprefix("mcp__").partition("__")
            if name.startswith("mcp__") and server and short:
                # codex offers MCP tools as a namespace per server and routes a call by namespace + name.
                item |= {"namespace": f"mcp__{server}", "name": short}
            emit(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            for chunk in _split(arguments):
                emit(
                    "response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=chunk
                )
            emit(
                "response.function_call_arguments.done",
                item_id=item_id,
                output_index=index,
                arguments=arguments,
            )
        emit("response.output_item.done", output_index=index, item=item)
        done_items.append(item)
    usage_in, usage_out = _input_tokens(conversation), _output_tokens(outputs)
    cached = 0
    if scripted is not None:
        usage_in, usage_out, cached = (
            scripted.input_tokens,
            scripted.output_tokens,
            scripted.cached_input_tokens,
        )
    usage = {
        "input_tokens": usage_in,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": usage_out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage_in + usage_out,
    }
    emit(
        "response.completed",
        response={**response, "status": "completed", "output": done_items, "usage": usage},
    )
    return events


def _error_body(api: str, message: str, kind: str) -> dict[str, Any]:
    if api == "anthropic":
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


class _BadRequest(AgentliteError):
    """The request could not be parsed as HTTP/1.1; the connection is answered 400 and closed."""


@dataclass
class _Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw_body: bytes


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip


class ModelServer:
    """The scripted model server; use ``async with ModelServer(...) as server:``.

    ``scenario`` is the default script (a ``[scenario:NAME]`` tag in the prompt overrides it) and
    ``delay`` the seconds waited before answering each model request; both may be changed while
    the server runs. ``port=0`` picks a free port; read :attr:`url` after :meth:`start`.
    ``log``, when given, receives one line per answered request.
    """

    def __init__(
        self,
        *,
        scenario: str = "demo",
        delay: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.scenario = scenario
        self.delay = delay
        self.host = host
        self.port = port
        self.log = log
        self.requests: list[RecordedRequest] = []
        #: The command the ``shell`` scenario runs, and the ``(name, input)`` the ``tool_call`` one calls.
        self.command = "true"
        self.tool: tuple[str, dict[str, Any]] = (
            "mcp__agentlite__send_message",
            {"text": "hello from the box"},
        )
        #: Token counts every model response reports (``None``: the server's own small estimate).
        self.usage: ScriptedUsage | None = None
        #: HTTP statuses (429, 500, 503) answered to the next model requests, one each, in order,
        #: before the scripts answer again: a rate limit twice, then success.
        self.fail_next: list[int] = []
        #: Seconds a stream pauses after its first content block (a slow model still streaming).
        self.stream_pause = 0.0
        #: Model responses whose stream has started and not yet ended (a paused one counts).
        self.open_streams = 0
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._ids = _Ids()

    @property
    def scenario(self) -> str:
        return self._scenario

    @scenario.setter
    def scenario(self, value: str) -> None:
        if value not in SCENARIOS:
            raise ConfigError(f"unknown scenario {value!r}; known: {', '.join(SCENARIOS)}")
        self._scenario = value

    @property
    def delay(self) -> float:
        return self._delay

    @delay.setter
    def delay(self, value: float) -> None:
        if value < 0:
            raise ConfigError(f"delay must be >= 0 seconds, not {value}")
        self._delay = float(value)

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the running server."""
        if self._server is None:
            raise RuntimeError("ModelServer is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def anthropic_base_url(self) -> str:
        """For ``ANTHROPIC_BASE_URL``: claude appends ``/v1/messages`` itself."""
        return self.url

    @property
    def openai_base_url(self) -> str:
        """For an OpenAI provider's ``base_url``: codex appends ``/responses``."""
        return self.url + "/v1"

    async def start(self) -> None:
        """Listen on ``host:port`` (a free port when ``port`` is 0)."""
        if self._server is not None:
            raise RuntimeError("ModelServer is already started")
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self.port, limit=_MAX_HEADER_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop open connections, including ``hang``ing ones, without waiting for
        clients: a test's teardown must never block on a client that is still connected."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = list(self._connections)
        for task, writer in list(self._connections.items()):
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> ModelServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- connection handling -------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # The client went away; nothing left to answer.
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # One request per connection (answers say "Connection: close"): simple, and both CLIs
        # simply open a new connection for the next request.
        try:
            request = await _read_request(reader, writer)
        except (_BadRequest, asyncio.LimitOverrunError, ValueError) as exc:
            await _send_json(
                writer, "POST", 400, {"error": {"type": "invalid_request_error", "message": str(exc)}}
            )
            return
        if request is None:
            return
        api = {"/v1/messages": "anthropic", "/v1/responses": "openai"}.get(request.path.rstrip("/"))
        if api is None or request.method != "POST":
            self._record(request, None)
            body = _error_body(
                "anthropic",
                f"offline model server: no route for {request.method} {request.path}",
                "not_found_error",
            )
            await _send_json(writer, request.method, 404, body)
            self._log(request, "404")
            return
        await self._answer_model(api, request, reader, writer)

    async def _answer_model(
        self, api: str, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        body = _decode_json(request)
        if not isinstance(body, dict):
            self._record(request, body)
            await _send_json(
                writer,
                request.method,
                400,
                _error_body(api, "request body is not a JSON object", "invalid_request_error"),
            )
            self._log(request, "400 (body is not JSON)")
            return
        conversation = _anthropic_conversation(body) if api == "anthropic" else _openai_conversation(body)
        scenario = _tagged_scenario(conversation) or self.scenario
        step = None if scenario in ("error500", "hang", "demo") else conversation.tool_results_in_turn
        self._record(request, body, scenario, step)
        if scenario not in SCENARIOS:
            message = f"offline model server: unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}"
            await _send_json(writer, request.method, 400, _error_body(api, message, "invalid_request_error"))
            self._log(request, f"400 (unknown scenario {scenario!r})")
            return
        if scenario == "hang":
            self._log(request, "hanging (scenario hang)")
            while await reader.read(65536):
                pass  # Wait for the client to hang up, or for stop() to cancel us.
            return
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next:
            status = self.fail_next.pop(0)
            kind = {429: "rate_limit_error"}.get(
                status, "api_error" if api == "anthropic" else "server_error"
            )
            message = f"offline model server: injected HTTP {status}"
            await _send_json(writer, request.method, status, _error_body(api, message, kind))
            self._log(request, f"{status} (fail_next)")
            return
        if scenario == "error500":
            kind = "api_error" if api == "anthropic" else "server_error"
            await _send_json(writer, request.method, 500, _error_body(api, _ERROR_500_MESSAGE, kind))
            self._log(request, "500 (scenario error500)")
            return
        if scenario == "shell":
            script: tuple[_Step, ...] = (
                (_Shell(self.command, "Run the command"),),
                (_Text("Ran the command."),),
            )
            outputs = script[min(conversation.tool_results_in_turn, 1)]
        elif scenario == "tool_call":
            script = ((_Tool(*self.tool),), (_Text("Called the tool."),))
            outputs = script[min(conversation.tool_results_in_turn, 1)]
        else:
            outputs = _script_step(scenario, conversation)
        model = str(body.get("model") or "offline-model")
        build = _anthropic_events if api == "anthropic" else _openai_events
        events = build(outputs, conversation, model, self._ids, self.usage)
        head = _response_head(
            200, {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )

        def frames(part: list[tuple[str, dict[str, Any]]]) -> bytes:
            return "".join(
                f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n" for kind, data in part
            ).encode()

        first_block_end = next((i + 1 for i, (kind, _) in enumerate(events)
                                if kind in ("content_block_stop", "response.output_item.done")), len(events))  # fmt: skip
        self.open_streams += 1
        try:
            if self.stream_pause:
                writer.write(head + frames(events[:first_block_end]))
                await writer.drain()
                await asyncio.sleep(self.stream_pause)
                writer.write(frames(events[first_block_end:]))
            else:
                writer.write(head + frames(events))
            await writer.drain()
        finally:
            self.open_streams -= 1
        self._log(request, f"200 scenario={scenario} step={step}")

    def _record(
        self, request: _Request, body: Any, scenario: str | None = None, step: int | None = None
    ) -> None:
        self.requests.append(
            RecordedRequest(
                request.method, request.path, request.query, request.headers, body, scenario, step
            )
        )

    def _log(self, request: _Request, outcome: str) -> None:
        if self.log is not None:
            target = request.path + (f"?{request.query}" if request.query else "")
            self.log(f"{request.method} {target} -> {outcome}")


async def _read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Request | None:
    """Read one HTTP/1.1 request (``None`` when the client closed before sending one)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise _BadRequest("incomplete request head") from exc
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(f"malformed request line {lines[0]!r}")
    method, target, _version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequest(f"malformed header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    path, _, query = target.partition("?")
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        length = int(headers.get("content-length", "0") or "0")
        if not 0 <= length <= _MAX_BODY_BYTES:
            raise _BadRequest(f"bad Content-Length {length}")
        body = await reader.readexactly(length)
    return _Request(method.upper(), path, query, headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # Trailer fields: ignored.
            return bytes(body)
        if len(body) + size > _MAX_BODY_BYTES:
            raise _BadRequest("request body too large")
        body += await reader.readexactly(size)
        await reader.readexactly(2)


def _decode_json(request: _Request) -> Any:
    data = request.raw_body
    encoding = request.headers.get("content-encoding", "").lower()
    try:
        if encoding in ("gzip", "x-gzip"):
            import gzip  # Lazy: neither CLI compresses request bodies today.

            data = gzip.decompress(data)
        elif encoding == "deflate":
            import zlib

            data = zlib.decompress(data)
        return json.loads(data) if data else None
    except (ValueError, OSError):
        return None


def _response_head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in {**headers, "Connection": "close"}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send_json(writer: asyncio.StreamWriter, method: str, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    head = _response_head(status, {"Content-Type": "application/json", "Content-Length": str(len(body))})
    writer.write(head if method == "HEAD" else head + body)
    await writer.drain()


async def _serve_forever(scenario: str, delay: float, host: str, port: int) -> None:
    import signal  # Lazy: only the command line needs it.

    def log(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    async with ModelServer(scenario=scenario, delay=delay, host=host, port=port, log=log) as server:
        print(server.url, flush=True)
        await stopping.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m agentlite.offline.model_server``: serve in the foreground until SIGINT/SIGTERM."""
    import argparse  # Lazy: keeps importing the module cheap for the product.

    parser = argparse.ArgumentParser(
        prog="python -m agentlite.offline.model_server",
        description="Offline scripted model server (Anthropic Messages + OpenAI Responses, SSE).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument("--scenario", default="demo", choices=SCENARIOS, help="default script (default demo)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each model answer")
    args = parser.parse_args(argv)
    if args.delay < 0:
        parser.error("--delay must be >= 0")
    asyncio.run(_serve_forever(args.scenario, args.delay, args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
