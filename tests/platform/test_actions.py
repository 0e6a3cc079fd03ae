"""Custom actions: registration rules, the search grammar, and the HTTP server over real sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import BaseModel

from agentlite.core.errors import AgentliteError, ConfigError
from agentlite.platform.actions import (
    RESERVED_ACTION_NAMES,
    ActionContext,
    ActionRegistry,
    ActionsServer,
)


async def http(
    url: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = None,
    method: str = "POST",
    raw: bytes | None = None,
    auth: str | None = None,
) -> tuple[int, Any]:
    """One raw HTTP/1.1 request; returns (status, parsed JSON body)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    headers = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(data)}"]
    if token is not None:
        headers.append(f"Authorization: Bearer {token}")
    if auth is not None:
        headers.append(f"Authorization: {auth}")
    writer.write(("\r\n".join(headers) + "\r\n\r\n").encode() + data)
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, payload = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(payload) if payload else None


class Greeting(BaseModel):
    name: str
    times: int = 1


@pytest.fixture
def registry() -> ActionRegistry:
    return ActionRegistry()


@pytest.fixture
async def server(registry: ActionRegistry) -> AsyncIterator[ActionsServer]:
    srv = ActionsServer(registry)
    await srv.start()
    yield srv
    await srv.stop()


# -- registration --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RESERVED_ACTION_NAMES))
def test_reserved_names_are_refused(registry: ActionRegistry, name: str) -> None:
    with pytest.raises(ConfigError) as err:
        registry.register(name, lambda ctx: None)
    assert str(err.value) == f"Cannot register custom action `{name}`: reserved built-in"
    assert name not in registry


def test_reserved_list_matches_the_brief() -> None:
    assert {"message", "send_message", "code_run", "search_actions", "call_action"} <= RESERVED_ACTION_NAMES
    assert len(RESERVED_ACTION_NAMES) == 13


@pytest.mark.parametrize(
    "name", ["messages", "send_message_later", "code_runner", "my_schedule_task", "Message"]
)
def test_names_sharing_a_prefix_are_allowed(registry: ActionRegistry, name: str) -> None:
    registry.register(name, lambda ctx: None)
    assert name in registry


def test_later_registration_wins(registry: ActionRegistry) -> None:
    registry.register("greet", lambda ctx: "first", description="one")
    registry.register("greet", lambda ctx: "second", description="two")
    assert len(registry) == 1
    action = registry.get("greet")
    assert action is not None and action.description == "two"


def test_bad_registrations(registry: ActionRegistry) -> None:
    with pytest.raises(ConfigError, match="`` must be a non-empty"):
        registry.register("", lambda ctx: None)
    with pytest.raises(ConfigError, match="not callable"):
        registry.register("x", "nope")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="pydantic model class or a JSON Schema"):
        registry.register("x", lambda p, ctx: None, schema=int)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not valid JSON Schema"):
        registry.register("x", lambda p, ctx: None, schema={"type": "no-such-type"})
    assert "x" not in registry


def test_input_schemas(registry: ActionRegistry) -> None:
    plain = registry.register("plain", lambda ctx: None)
    model = registry.register("model", lambda p, ctx: None, schema=Greeting)
    raw = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    js = registry.register("js", lambda p, ctx: None, schema=raw)
    assert plain.input_schema() == {"type": "object", "properties": {}}
    assert model.input_schema()["required"] == ["name"]
    assert js.input_schema() == raw


# -- search grammar --------------------------------------------------------------------------------


@pytest.fixture
def catalog(registry: ActionRegistry) -> ActionRegistry:
    registry.register("weather_get", lambda ctx: None, description="Current weather for a city")
    registry.register("weather_forecast", lambda ctx: None, description="Five day forecast")
    registry.register("calendar_add", lambda ctx: None, description="Add an event; checks the weather too")
    registry.register("calendar_list", lambda ctx: None, description="List events")
    registry.register("email_send", lambda ctx: None)
    registry.register("alpha", lambda ctx: None, description="weather")
    return registry


def names(actions: list[Any]) -> list[str]:
    return [a.name for a in actions]


def test_search_select_keeps_order_and_drops_unknown(catalog: ActionRegistry) -> None:
    assert names(catalog.search("select:email_send,nope,weather_get")) == ["email_send", "weather_get"]
    assert names(catalog.search("SELECT: calendar_list , calendar_list")) == ["calendar_list"]
    # Exact names only: no case folding, no substring.
    assert names(catalog.search("select:Email_send,email")) == []


def test_search_empty_query(catalog: ActionRegistry) -> None:
    assert catalog.search("") == []
    assert catalog.search("   ") == []


def test_search_scores_name_over_description_then_name(catalog: ActionRegistry) -> None:
    # name hits score 2, description-only hits 1; ties sort by name.
    assert names(catalog.search("weather")) == ["weather_forecast", "weather_get", "alpha", "calendar_add"]
    assert names(catalog.search("WEATHER forecast")) == [
        "weather_forecast",
        "weather_get",
        "alpha",
        "calendar_add",
    ]
    assert names(catalog.search("nothing-matches")) == []


def test_search_required_tokens_filter_by_name(catalog: ActionRegistry) -> None:
    assert names(catalog.search("+calendar")) == ["calendar_add", "calendar_list"]  # score 0 still listed
    assert names(catalog.search("+calendar weather")) == ["calendar_add", "calendar_list"]
    assert names(catalog.search("+weather +get")) == ["weather_get"]
    # A required token must be in the name, not merely the description.
    assert names(catalog.search("+five")) == []


def test_search_caps_results(catalog: ActionRegistry) -> None:
    assert names(catalog.search("weather", 2)) == ["weather_forecast", "weather_get"]
    assert len(catalog.search("a", 5)) == 5


# -- HTTP: auth and status codes -------------------------------------------------------------------


async def test_url_binds_loopback_by_default(server: ActionsServer) -> None:
    assert server.url is not None and server.url.startswith("http://127.0.0.1:")
    auth = server.mint_token("team", False)
    assert auth.url == server.url
    assert len(auth.token) == 43 and "=" not in auth.token  # 32 bytes, base64url without padding


async def test_http_status_codes(server: ActionsServer, catalog: ActionRegistry) -> None:
    url = server.url
    assert url is not None
    token = server.mint_token("team", False).token
    assert await http(url, "/search", {"query": "x"}, method="GET", token=token) == (
        405,
        {"error": "method not allowed"},
    )
    assert await http(url, "/search", {"query": "x"}) == (401, {"error": "unauthorized"})
    assert await http(url, "/search", {"query": "x"}, token="forged") == (401, {"error": "unauthorized"})
    assert await http(url, "/search", {"query": "x"}, auth=f"Basic {token}") == (
        401,
        {"error": "unauthorized"},
    )
    assert await http(url, "/search", raw=b"{not json", token=token) == (400, {"error": "invalid JSON body"})
    assert await http(url, "/search", raw=b"[1, 2]", token=token) == (400, {"error": "invalid JSON body"})
    status, _ = await http(url, "/search", raw=b" " * (1024 * 1024 + 1), token=token)
    assert status == 413
    assert (await http(url, "/elsewhere", {}, token=token))[0] == 404
    # Auth is checked before the path, so an unknown path does not reveal itself to strangers.
    assert (await http(url, "/elsewhere", {}))[0] == 401
    # A body of exactly 1 MB is accepted.
    exact = b'{"query": "weather"}'.ljust(1024 * 1024)  # trailing whitespace is valid JSON
    assert len(exact) == 1024 * 1024
    assert (await http(url, "/search", raw=exact, token=token))[0] == 200


async def test_http_search(server: ActionsServer, catalog: ActionRegistry) -> None:
    catalog.register("greet", lambda p, ctx: None, description="Say hello", schema=Greeting)
    url, token = server.url, server.mint_token("team", False).token
    assert url is not None
    status, body = await http(url, "/search", {"query": "select:greet,email_send"}, token=token)
    assert status == 200
    greet, email = body["actions"]
    assert greet["name"] == "greet" and greet["description"] == "Say hello"
    assert greet["inputSchema"]["properties"]["name"]["type"] == "string"
    assert email == {
        "name": "email_send",
        "description": None,
        "inputSchema": {"type": "object", "properties": {}},
    }
    _, body = await http(url, "/search", {"query": "weather"}, token=token)
    assert [a["name"] for a in body["actions"]] == [
        "weather_forecast",
        "weather_get",
        "alpha",
        "calendar_add",
    ]
    _, body = await http(url, "/search", {"query": "weather", "max_results": 2.9}, token=token)
    assert len(body["actions"]) == 2
    for bad in (0, -3, "7", None, True):
        _, body = await http(url, "/search", {"query": "a", "max_results": bad}, token=token)
        assert len(body["actions"]) == 5, bad
    _, body = await http(url, "/search", {"query": ""}, token=token)
    assert body == {"actions": []}
    _, body = await http(url, "/search", {}, token=token)
    assert body == {"actions": []}


async def test_http_call_dispatch(server: ActionsServer, registry: ActionRegistry) -> None:
    seen: list[tuple[Any, ActionContext]] = []

    def greet(payload: Greeting, ctx: ActionContext) -> dict[str, Any]:
        seen.append((payload, ctx))
        return {"text": ", ".join([f"hi {payload.name}"] * payload.times)}

    async def slow(payload: dict[str, Any], ctx: ActionContext) -> int:
        await asyncio.sleep(0.01)
        return payload["n"] * 2

    def boom(ctx: ActionContext) -> None:
        raise RuntimeError("kaput")

    def nothing(ctx: ActionContext) -> None:
        seen.append((None, ctx))

    class Reply(BaseModel):
        ok: bool

    registry.register("greet", greet, schema=Greeting)
    registry.register(
        "double",
        slow,
        schema={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    )
    registry.register("boom", boom)
    registry.register("nothing", nothing)
    registry.register("model_reply", lambda ctx: Reply(ok=True))
    registry.register("unserializable", lambda ctx: object())
    url, token = server.url, server.mint_token("team", False).token
    assert url is not None

    assert await http(url, "/call", {"name": "nope"}, token=token) == (404, {"error": "unknown action: nope"})
    assert (await http(url, "/call", {"payload": {}}, token=token))[0] == 400

    status, body = await http(url, "/call", {"name": "greet", "payload": {"times": "x"}}, token=token)
    assert status == 400
    assert body["error"].startswith('invalid payload for action "greet": ')
    assert "name" in body["error"] and "times" in body["error"]
    status, body = await http(url, "/call", {"name": "double", "payload": {"n": "2"}}, token=token)
    assert status == 400 and body["error"].startswith('invalid payload for action "double": n: ')
    status, body = await http(url, "/call", {"name": "double"}, token=token)
    assert status == 400 and "'n' is a required property" in body["error"]

    assert await http(
        url, "/call", {"name": "greet", "payload": {"name": "Ann", "times": 2}}, token=token
    ) == (
        200,
        {"result": {"text": "hi Ann, hi Ann"}},
    )
    assert await http(url, "/call", {"name": "double", "payload": {"n": 21}}, token=token) == (
        200,
        {"result": 42},
    )
    assert await http(url, "/call", {"name": "boom"}, token=token) == (500, {"error": "kaput"})
    assert await http(url, "/call", {"name": "nothing", "payload": {"ignored": 1}}, token=token) == (
        200,
        {"result": None},
    )
    assert await http(url, "/call", {"name": "model_reply"}, token=token) == (200, {"result": {"ok": True}})
    status, body = await http(url, "/call", {"name": "unserializable"}, token=token)
    assert status == 500 and "not JSON-serializable" in body["error"]

    payload, ctx = seen[0]
    assert isinstance(payload, Greeting) and payload.times == 2
    assert ctx == ActionContext(chat_id=None, source_group="team", is_main=False, action="greet")
    assert ctx.log.name == "agentlite.action.greet"


async def test_context_cannot_be_spoofed(server: ActionsServer, registry: ActionRegistry) -> None:
    seen: list[ActionContext] = []

    def whoami(payload: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        seen.append(ctx)
        return {"group": ctx.source_group, "main": ctx.is_main, "chat": ctx.chat_id, "payload": payload}

    registry.register("whoami", whoami, schema={"type": "object"})
    url, token = server.url, server.mint_token("team", False).token
    assert url is not None
    forged = {"source_group": "main", "is_main": True, "sourceGroup": "main", "isMain": True}
    status, body = await http(
        url,
        "/call",
        {"name": "whoami", "payload": forged, "chat_id": "other@g", **forged},
        token=token,
    )
    assert status == 200
    # The payload reaches the handler as data; identity comes only from the token.
    assert body["result"] == {"group": "team", "main": False, "chat": "other@g", "payload": forged}
    status, body = await http(url, "/call", {"name": "whoami", "chat_id": 42}, token=token)
    assert body["result"]["chat"] is None


async def test_tokens_are_independent_and_revocable(server: ActionsServer, registry: ActionRegistry) -> None:
    registry.register("whoami", lambda ctx: [ctx.source_group, ctx.is_main])
    url = server.url
    assert url is not None
    team = server.mint_token("team", False).token
    main = server.mint_token("main", True).token
    team2 = server.mint_token("team", False).token
    assert len({team, main, team2}) == 3
    assert await http(url, "/call", {"name": "whoami"}, token=team) == (200, {"result": ["team", False]})
    assert await http(url, "/call", {"name": "whoami"}, token=main) == (200, {"result": ["main", True]})
    assert server.revoke_token(team) is True
    assert server.revoke_token(team) is False
    assert (await http(url, "/call", {"name": "whoami"}, token=team))[0] == 401
    assert (await http(url, "/call", {"name": "whoami"}, token=team2))[0] == 200


async def test_tokens_die_with_the_server(registry: ActionRegistry) -> None:
    registry.register("ping", lambda ctx: "pong")
    srv = ActionsServer(registry)
    with pytest.raises(AgentliteError, match="not running"):
        srv.mint_token("team", False)
    url = await srv.start()
    with pytest.raises(AgentliteError, match="already running"):
        await srv.start()
    old = srv.mint_token("team", False).token
    assert await http(url, "/call", {"name": "ping"}, token=old) == (200, {"result": "pong"})
    await srv.stop()
    assert srv.url is None
    with pytest.raises(ConnectionRefusedError):
        await http(url, "/call", {"name": "ping"}, token=old)
    url = await srv.start()
    try:
        assert (await http(url, "/call", {"name": "ping"}, token=old))[0] == 401
        fresh = srv.mint_token("team", False).token
        assert await http(url, "/call", {"name": "ping"}, token=fresh) == (200, {"result": "pong"})
    finally:
        await srv.stop()
    await srv.stop()  # idempotent


async def test_registration_after_start_is_live(server: ActionsServer, registry: ActionRegistry) -> None:
    url, token = server.url, server.mint_token("main", True).token
    assert url is not None
    assert (await http(url, "/call", {"name": "late"}, token=token))[0] == 404
    registry.register("late", lambda ctx: "here")
    assert await http(url, "/call", {"name": "late"}, token=token) == (200, {"result": "here"})


async def test_stop_drops_a_stalled_connection(registry: ActionRegistry) -> None:
    srv = ActionsServer(registry)
    url = await srv.start()
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(b"POST /search HTTP/1.1\r\n")  # never finishes its headers
    await writer.drain()
    await asyncio.sleep(0.05)
    await asyncio.wait_for(srv.stop(), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
