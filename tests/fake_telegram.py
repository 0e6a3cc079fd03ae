"""A fake Telegram Bot API server on 127.0.0.1, enough for python-telegram-bot's ``Bot`` to talk to.

Served: ``getMe``, ``getUpdates`` (offset confirms, ``timeout`` long-polls), ``sendMessage``,
``sendChatAction``, ``deleteWebhook``, ``getWebhookInfo``, ``close``/``logOut``; any other method
answers 404 in the Bot API's JSON shape, and a wrong token 401. Requests may be form-encoded (as
python-telegram-bot sends them), JSON, or query parameters.

Tests inject incoming messages with :meth:`FakeTelegram.inject_message` and read what the bot did
from :attr:`FakeTelegram.calls` (or wait for it with :meth:`FakeTelegram.wait_for`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

#: Form values that python-telegram-bot JSON-encodes (everything else is a plain string).
_JSON_FIELDS = {
    "chat_id", "offset", "limit", "timeout", "allowed_updates", "drop_pending_updates", "reply_markup",
    "entities", "link_preview_options", "reply_parameters", "message_thread_id", "disable_notification",
    "protect_content",
}  # fmt: skip

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed"}


class ApiError(Exception):
    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


@dataclass
class Call:
    """One Bot API request the fake received."""

    method: str
    params: dict[str, Any]


class FakeTelegram:
    def __init__(
        self,
        token: str = "123456:TEST-token",
        *,
        bot_id: int = 123456,
        bot_username: str = "andy_test_bot",
        bot_name: str = "Andy",
    ) -> None:
        self.token = token
        self.bot_user = {"id": bot_id, "is_bot": True, "first_name": bot_name, "username": bot_username}
        self.calls: list[Call] = []
        self.updates: list[dict[str, Any]] = []
        self.webhook_url = ""
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._chats: dict[int, dict[str, Any]] = {}
        self._waiters: set[asyncio.Future[None]] = set()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._failures: dict[str, list[tuple[int, str, int | None]]] = {}
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The API root to give the driver (``<root>/bot<token>/<method>`` is served)."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeTelegram:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Close the listener and every open connection, including long polls still waiting."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(list(self._handlers))
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> FakeTelegram:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- test helpers -----------------------------------------------------------------------------
    def inject_message(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int = 42,
        first_name: str = "Alice",
        last_name: str | None = None,
        username: str | None = None,
        chat_type: str = "private",
        title: str | None = None,
        entities: list[dict[str, Any]] | None = None,
        date: int | None = None,
    ) -> dict[str, Any]:
        """Queue an incoming text message (an update) for the next ``getUpdates``; returns the update."""
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if last_name:
            user["last_name"] = last_name
        if username:
            user["username"] = username
        if chat_type == "private":
            chat: dict[str, Any] = {"id": chat_id, "type": "private", "first_name": first_name}
            if last_name:
                chat["last_name"] = last_name
            if username:
                chat["username"] = username
        else:
            chat = {"id": chat_id, "type": chat_type, "title": title or f"chat {chat_id}"}
        self._chats[chat_id] = chat
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "from": user,
            "chat": chat,
            "date": date if date is not None else int(time.time()),
            "text": text,
        }
        if entities is None:
            entities = [
                {"type": "mention", "offset": i, "length": len(word)}
                for i, word in _words(text)
                if word.startswith("@") and len(word) > 1
            ]
        if entities:
            message["entities"] = entities
        return self.inject_update({"message": message})

    def inject_update(self, body: dict[str, Any]) -> dict[str, Any]:
        """Queue any update object (``update_id`` is assigned)."""
        update = {"update_id": next(self._update_ids), **body}
        self.updates.append(update)
        self._notify()
        return update

    def fail(
        self,
        method: str,
        code: int = 500,
        description: str = "Internal Server Error",
        *,
        times: int = 1,
        retry_after: int | None = None,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail with ``code`` (429 with ``retry_after``)."""
        self._failures.setdefault(method.lower(), []).extend([(code, description, retry_after)] * times)

    def calls_to(self, method: str) -> list[dict[str, Any]]:
        return [c.params for c in self.calls if c.method == method]

    @property
    def sent_messages(self) -> list[dict[str, Any]]:
        """Every ``sendMessage`` the bot made: ``{"chat_id": int, "text": str, ...}``."""
        return self.calls_to("sendMessage")

    @property
    def chat_actions(self) -> list[dict[str, Any]]:
        return self.calls_to("sendChatAction")

    async def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until ``method`` was called at least ``count`` times; returns those calls."""
        async with asyncio.timeout(timeout):
            await self._until(lambda: len(self.calls_to(method)) >= count)
        return self.calls_to(method)

    def _notify(self) -> None:
        """Wake everything waiting in :meth:`_until` (synchronous, so injecting needs no task)."""
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.add(waiter)
            try:
                await waiter
            finally:
                self._waiters.discard(waiter)

    # -- HTTP -------------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {}
                for line in header_lines:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await self._read_body(reader, headers)
                status, payload = await self._dispatch(method, target, headers, body)
                data = json.dumps(payload).encode()
                writer.write(
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                    "Connection: keep-alive\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return body
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        length = int(headers.get("content-length", "0") or 0)
        return await reader.readexactly(length) if length else b""

    async def _dispatch(
        self, http_method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        url = urlsplit(target)
        parts = url.path.strip("/").split("/")
        if len(parts) != 2 or not parts[0].startswith("bot"):
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        if parts[0][3:] != self.token:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        if http_method not in ("GET", "POST"):
            return 405, {"ok": False, "error_code": 405, "description": "Method Not Allowed"}
        params = _decode(dict(parse_qsl(url.query)))
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if body and kind == "application/json":
            params.update(json.loads(body))
        elif body and kind == "application/x-www-form-urlencoded":
            params.update(_decode(dict(parse_qsl(body.decode()))))
        elif body:
            return 400, {
                "ok": False,
                "error_code": 400,
                "description": f"Bad Request: unsupported body {kind}",
            }
        name = parts[1]
        handler = getattr(self, f"_api_{name.lower()}", None)
        self.calls.append(Call(name, params))
        self._notify()
        pending = self._failures.get(name.lower())
        if pending:
            code, description, retry_after = pending.pop(0)
            error: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
            if retry_after is not None:
                error["parameters"] = {"retry_after": retry_after}
            return code, error
        if handler is None:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        try:
            return 200, {"ok": True, "result": await handler(params)}
        except ApiError as exc:
            return exc.code, {"ok": False, "error_code": exc.code, "description": exc.description}

    # -- Bot API methods --------------------------------------------------------------------------
    async def _api_getme(self, params: dict[str, Any]) -> Any:
        return {**self.bot_user, "can_join_groups": True, "can_read_all_group_messages": False}

    async def _api_deletewebhook(self, params: dict[str, Any]) -> Any:
        self.webhook_url = ""
        return True

    async def _api_getwebhookinfo(self, params: dict[str, Any]) -> Any:
        return {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self.updates),
        }

    async def _api_close(self, params: dict[str, Any]) -> Any:
        return True

    async def _api_logout(self, params: dict[str, Any]) -> Any:
        return True

    async def _api_getupdates(self, params: dict[str, Any]) -> Any:
        offset = int(params.get("offset") or 0)
        if offset:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        if not self.updates and timeout > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._until(lambda: bool(self.updates))
        return self.updates[:limit]

    async def _api_sendmessage(self, params: dict[str, Any]) -> Any:
        chat_id = int(params["chat_id"])
        text = str(params.get("text", ""))
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if len(text.encode("utf-16-le")) // 2 > 4096:
            raise ApiError(400, "Bad Request: message is too long")
        return {
            "message_id": next(self._message_ids),
            "from": self.bot_user,
            "chat": self._chats.get(chat_id, {"id": chat_id, "type": "private", "first_name": "?"}),
            "date": int(time.time()),
            "text": text,
        }

    async def _api_sendchataction(self, params: dict[str, Any]) -> Any:
        return True


def _decode(params: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in _JSON_FIELDS:
            try:
                out[key] = json.loads(value)
                continue
            except ValueError:
                pass
        out[key] = value
    return out


def _words(text: str) -> list[tuple[int, str]]:
    """``(offset, word)`` pairs; offsets in UTF-16 units, as Telegram counts them."""
    found: list[tuple[int, str]] = []
    units = 0
    word_start = None
    word = ""
    for char in [*text, " "]:
        if char.isspace():
            if word:
                found.append((word_start or 0, word))
            word, word_start = "", None
        else:
            if not word:
                word_start = units
            word += char
        units += 2 if ord(char) > 0xFFFF else 1
    return found
