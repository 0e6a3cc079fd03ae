"""Channels: the manager's rules, the terminal and JSON-lines drivers, and Telegram against a fake API."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from rich.console import Console
from tests.conftest import captured_log
from tests.fake_telegram import FakeTelegram

from agentlite.channels import ChannelConfig, ChannelDriver, ChannelManager, LinePipe, strip_internal
from agentlite.channels.jsonl import JsonlChannel, jsonl
from agentlite.channels.terminal import CHAT_ID as TERM_CHAT, TerminalChannel, terminal
from agentlite.core.errors import ConfigError
from agentlite.platform.store import Message

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Recorder:
    """Collects what drivers hand to the agent, and lets a test wait for it."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, Message]] = []
        self.chats: list[dict[str, Any]] = []
        self.groups: dict[str, Any] = {}
        self._changed = asyncio.Event()

    def on_message(self, chat_id: str, message: Message) -> None:
        self.messages.append((chat_id, message))
        self._changed.set()

    def on_chat_metadata(self, chat_id: str, timestamp: str, name=None, channel=None, is_group=None) -> None:
        self.chats.append(
            {
                "chat_id": chat_id,
                "timestamp": timestamp,
                "name": name,
                "channel": channel,
                "is_group": is_group,
            }
        )
        self._changed.set()

    def config(self) -> ChannelConfig:
        return ChannelConfig(
            on_message=self.on_message,
            on_chat_metadata=self.on_chat_metadata,
            registered_groups=lambda: self.groups,
        )

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def wait_messages(self, count: int) -> list[Message]:
        await self.until(lambda: len(self.messages) >= count)
        return [m for _, m in self.messages]


# -- a driver written as a class, the way a user would ---------------------------------------------
class FakeDriver:
    def __init__(self, config: ChannelConfig, prefix: str = "fake:") -> None:
        self.config = config
        self.prefix = prefix
        self.name = "unnamed"
        self.connected = False
        self.sent: list[tuple[str, str]] = []
        self.typing: list[tuple[str, bool]] = []
        self.disconnects = 0

    @property
    def is_connected(self) -> bool:
        return self.connected

    async def connect(self) -> None:
        self.connected = True

    async def send_message(self, chat_id: str, text: str) -> None:
        self.sent.append((chat_id, text))

    async def set_typing(self, chat_id: str, on: bool) -> None:
        self.typing.append((chat_id, on))

    def owns_chat(self, chat_id: str) -> bool:
        return chat_id.startswith(self.prefix)

    async def disconnect(self) -> None:
        self.connected = False
        self.disconnects += 1

    def extra(self) -> str:
        return f"extra from {self.name}"


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def events() -> list[tuple[str, dict[str, Any]]]:
    return []


@pytest.fixture
async def manager(rec: Recorder, events: list[tuple[str, dict[str, Any]]]) -> AsyncIterator[ChannelManager]:
    channels = ChannelManager(rec.config(), emit=lambda name, payload: events.append((name, payload)))
    yield channels
    await channels.close()  # a failed test must not leave a driver polling


# -- manager ---------------------------------------------------------------------------------------
async def test_add_names_connects_and_keeps_the_instance(
    manager: ChannelManager, rec: Recorder, events
) -> None:
    seen: list[ChannelConfig] = []

    def factory(config: ChannelConfig) -> FakeDriver:
        seen.append(config)
        return FakeDriver(config)

    driver = await manager.add("mine", factory)
    assert isinstance(driver, FakeDriver)  # the very object, not a copy
    assert seen == [manager.config]
    assert driver.name == "mine"
    assert driver.connected
    assert driver.extra() == "extra from mine"  # methods from the class are still there
    assert isinstance(driver, ChannelDriver)
    assert manager.get("mine") is driver and "mine" in manager and len(manager) == 1
    assert events == [("channel.connected", {"key": "mine"})]


async def test_async_factory(manager: ChannelManager) -> None:
    async def factory(config: ChannelConfig) -> FakeDriver:
        await asyncio.sleep(0)
        return FakeDriver(config)

    driver = await manager.add("later", factory)
    assert driver.name == "later" and driver.connected


async def test_duplicate_key_is_refused_without_calling_the_factory(manager: ChannelManager) -> None:
    await manager.add("dup", FakeDriver)
    calls: list[int] = []

    def factory(config: ChannelConfig) -> FakeDriver:
        calls.append(1)
        return FakeDriver(config)

    with pytest.raises(ConfigError, match=r"channel `dup` already registered"):
        await manager.add("dup", factory)
    assert calls == []


async def test_bad_key_and_bad_factory(manager: ChannelManager) -> None:
    with pytest.raises(ConfigError, match="channel key ``"):
        await manager.add("", FakeDriver)
    with pytest.raises(ConfigError, match="lacks"):
        await manager.add("odd", lambda config: object())
    assert "odd" not in manager


async def test_a_driver_that_fails_to_connect_is_not_kept(manager: ChannelManager) -> None:
    class Broken(FakeDriver):
        async def connect(self) -> None:
            raise OSError("no network")

    with pytest.raises(OSError, match="no network"):
        await manager.add("x", Broken)
    assert "x" not in manager
    await manager.add("x", FakeDriver)  # the key is free again


async def test_remove_disconnects(manager: ChannelManager, events) -> None:
    driver = await manager.add("gone", FakeDriver)
    assert await manager.remove("gone") is True
    assert driver.disconnects == 1 and not driver.connected
    assert "gone" not in manager
    assert await manager.remove("gone") is False
    assert events[-1] == ("channel.disconnected", {"key": "gone"})


async def test_close_disconnects_every_driver_even_if_one_fails(manager: ChannelManager) -> None:
    class Stubborn(FakeDriver):
        async def disconnect(self) -> None:
            raise RuntimeError("stuck")

    a = await manager.add("a", FakeDriver)
    await manager.add("b", lambda c: Stubborn(c, prefix="b:"))
    await manager.disconnect_all()
    assert a.disconnects == 1
    assert len(manager) == 0


async def test_routing_by_ownership(manager: ChannelManager) -> None:
    a = await manager.add("a", lambda c: FakeDriver(c, prefix="a:"))
    b = await manager.add("b", lambda c: FakeDriver(c, prefix="b:"))
    assert manager.find("a:1") is a and manager.find("b:1") is b and manager.find("c:1") is None
    assert manager.owner("b:2") is b
    assert await manager.send("b:7", "hi") is True
    assert b.sent == [("b:7", "hi")] and a.sent == []
    await manager.set_typing("a:1", True)
    await manager.set_typing("a:1", False)
    assert a.typing == [("a:1", True), ("a:1", False)]


async def test_connected_owner_is_preferred(manager: ChannelManager) -> None:
    old = await manager.add("old", FakeDriver)
    new = await manager.add("new", FakeDriver)
    old.connected = False
    assert manager.find("fake:1") is new


async def test_send_strips_internal_blocks(manager: ChannelManager) -> None:
    driver = await manager.add("f", FakeDriver)
    text = "<internal>plan:\nstep 1</internal>Hello <internal>x</internal>there\n"
    assert await manager.send("fake:1", text) is True
    assert driver.sent == [("fake:1", "Hello there")]


async def test_empty_output_is_suppressed(manager: ChannelManager) -> None:
    driver = await manager.add("f", FakeDriver)
    assert await manager.send("fake:1", "<internal>only notes</internal>") is False
    assert await manager.send("fake:1", "   \n") is False
    assert await manager.send("fake:1", "") is False
    assert driver.sent == []


async def test_no_channel_for_chat(manager: ChannelManager) -> None:
    await manager.add("f", FakeDriver)
    with pytest.raises(ConfigError, match=r"No channel for chat `nowhere:1`"):
        await manager.send("nowhere:1", "hello")


async def test_typing_failures_and_unknown_chats_are_harmless(manager: ChannelManager) -> None:
    class NoTyping(FakeDriver):
        async def set_typing(self, chat_id: str, on: bool) -> None:
            raise RuntimeError("api down")

    await manager.add("f", NoTyping)
    with captured_log("agentlite.channels") as log:
        await manager.set_typing("fake:1", True)  # the driver's failure is logged, not raised
        await manager.set_typing("unknown:1", True)  # nobody owns the chat: nothing to do
    assert log.messages() == ["channel f could not set typing for fake:1"]


def test_strip_internal() -> None:
    assert strip_internal("a<internal>b</internal>c") == "ac"
    assert strip_internal("<internal>\nmulti\nline\n</internal>  done ") == "done"
    assert strip_internal("keep <internal>unclosed") == "keep <internal>unclosed"


async def test_config_awaits_async_callbacks_and_survives_failures(caplog) -> None:
    got: list[str] = []

    async def on_message(chat_id: str, message: Message) -> None:
        await asyncio.sleep(0)
        got.append(message.content)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("db locked")

    good = ChannelConfig(on_message=on_message)
    message = Message(id="1", chat_id="x:1", sender="s", sender_name="S", content="hi", timestamp="t")
    assert await good.deliver("x:1", message) is True
    assert got == ["hi"]
    await good.chat_seen("x:1", "t", name="n")  # the default metadata callback is a no-op
    assert good.groups() == {}

    bad = ChannelConfig(on_message=broken, on_chat_metadata=broken, registered_groups=broken)
    assert await bad.deliver("x:1", message) is False
    await bad.chat_seen("x:1", "t")
    assert bad.groups() == {}
    assert "db locked" in caplog.text


# -- terminal --------------------------------------------------------------------------------------
async def test_terminal_reads_lines_as_local_user_messages(rec: Recorder, manager: ChannelManager) -> None:
    pipe = LinePipe()
    out = io.StringIO()
    driver = await manager.add("terminal", terminal(input=pipe, output=out, user_name="sam", markdown=False))
    assert isinstance(driver, TerminalChannel)
    assert rec.chats[0] | {"timestamp": None} == {
        "chat_id": TERM_CHAT,
        "timestamp": None,
        "name": "terminal",
        "channel": "terminal",
        "is_group": False,
    }
    pipe.feed("  hello agent  \n")
    pipe.feed("")
    pipe.feed("second")
    first, second = await rec.wait_messages(2)
    assert [c for c, _ in rec.messages] == [TERM_CHAT, TERM_CHAT]
    assert first.content == "hello agent" and second.content == "second"
    assert first.chat_id == TERM_CHAT and first.sender == "term:user" and first.sender_name == "sam"
    assert first.is_from_me and not first.is_bot_message
    assert ISO.match(first.timestamp)
    assert first.id != second.id
    assert driver.owns_chat(TERM_CHAT) and not driver.owns_chat("tg:1")

    assert await manager.send(TERM_CHAT, "Here you go<internal>hidden</internal>") is True
    printed = out.getvalue()
    assert "Andy:" in printed and "Here you go" in printed and "hidden" not in printed

    pipe.close()
    await asyncio.wait_for(driver.wait_eof(), 5)
    await manager.remove("terminal")
    assert not driver.is_connected


async def test_terminal_shows_thinking_while_typing() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=60)
    driver = TerminalChannel(Recorder().config(), input=LinePipe(), console=console, assistant_name="Bo")
    await driver.connect()
    await driver.set_typing(TERM_CHAT, True)
    assert driver.is_typing
    await driver.set_typing(TERM_CHAT, True)  # idempotent: one status line only
    await asyncio.sleep(0.2)
    await driver.send_message(TERM_CHAT, "**done**")
    await driver.set_typing(TERM_CHAT, False)
    assert not driver.is_typing
    await driver.disconnect()
    printed = out.getvalue()
    assert "thinking…" in printed
    assert "Bo:" in printed and "done" in printed and "**" not in printed  # rendered as markdown


async def test_terminal_reads_a_blocking_text_stream_on_a_thread(rec: Recorder) -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "r") as stream:
        driver = TerminalChannel(rec.config(), input=stream, output=io.StringIO())
        await driver.connect()
        os.write(write_fd, b"from a pipe\n")
        (message,) = await rec.wait_messages(1)
        assert message.content == "from a pipe"
        os.close(write_fd)
        await asyncio.wait_for(driver.wait_eof(), 5)
        await driver.disconnect()


async def test_terminal_stringio_input_reaches_eof(rec: Recorder) -> None:
    driver = TerminalChannel(rec.config(), input=io.StringIO("one\n\ntwo\n"), output=io.StringIO())
    await driver.connect()
    await asyncio.wait_for(driver.wait_eof(), 5)
    assert [m.content for _, m in rec.messages] == ["one", "two"]
    await driver.disconnect()


# -- JSON lines ------------------------------------------------------------------------------------
async def test_jsonl_round_trip(rec: Recorder, manager: ChannelManager) -> None:
    pipe = LinePipe()
    out = io.StringIO()
    driver = await manager.add("jsonl", jsonl(input=pipe, output=out))
    assert isinstance(driver, JsonlChannel)
    pipe.feed(json.dumps({"chat_id": "jsonl:a", "text": "hi", "sender": "bob", "id": "m1"}))
    pipe.feed(json.dumps({"chat_id": "jsonl:b", "text": "yo", "chat_name": "Room B"}))
    first, second = await rec.wait_messages(2)
    assert (first.id, first.chat_id, first.sender, first.sender_name, first.content) == (
        "m1",
        "jsonl:a",
        "bob",
        "bob",
        "hi",
    )
    assert second.sender == "user" and second.id.startswith("jsonl-") and ISO.match(second.timestamp)
    assert [(c["chat_id"], c["name"], c["channel"], c["is_group"]) for c in rec.chats] == [
        ("jsonl:a", None, "jsonl", False),
        ("jsonl:b", "Room B", "jsonl", False),
    ]

    assert await manager.send("jsonl:a", "answer <internal>x</internal>") is True
    assert await manager.send("jsonl:a", "<internal>x</internal>") is False
    await manager.set_typing("jsonl:a", True)  # not written unless asked for
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        {"type": "message", "chat_id": "jsonl:a", "text": "answer"}
    ]
    assert driver.owns_chat("jsonl:zzz") and not driver.owns_chat("term:local")
    pipe.close()
    await asyncio.wait_for(driver.wait_eof(), 5)
    await manager.remove("jsonl")


async def test_jsonl_reports_bad_lines(rec: Recorder) -> None:
    out = io.StringIO()
    lines = [
        "not json",
        json.dumps({"chat_id": "tg:1", "text": "wrong prefix"}),
        json.dumps({"chat_id": "jsonl:a"}),
        json.dumps({"chat_id": "jsonl:a", "text": "fine"}),
    ]
    driver = JsonlChannel(
        rec.config(), input=io.StringIO("\n".join(lines) + "\n"), output=out, emit_typing=True
    )
    await driver.connect()
    await asyncio.wait_for(driver.wait_eof(), 5)
    assert [m.content for _, m in rec.messages] == ["fine"]
    written = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [w["type"] for w in written] == ["error", "error", "error"]
    assert "must start with `jsonl:`" in written[1]["error"]
    assert "text" in written[2]["error"]
    await driver.set_typing("jsonl:a", True)
    assert json.loads(out.getvalue().splitlines()[-1]) == {"type": "typing", "chat_id": "jsonl:a", "on": True}
    await driver.disconnect()


async def test_jsonl_async_byte_source(rec: Recorder) -> None:
    async def source() -> AsyncIterator[bytes]:
        yield b'{"chat_id": "jsonl:x", "text": "bytes \xc3\xa9"}\r\n'

    driver = JsonlChannel(rec.config(), input=source(), output=io.StringIO())
    await driver.connect()
    await asyncio.wait_for(driver.wait_eof(), 5)
    assert rec.messages[0][1].content == "bytes é"
    await driver.disconnect()


# -- Telegram --------------------------------------------------------------------------------------
@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeTelegram]:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    async with FakeTelegram() as server:
        yield server


def _our_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("telegram-") and not t.done()]


async def _telegram(manager: ChannelManager, fake: FakeTelegram, **kwargs: Any):
    from agentlite.channels.telegram import telegram

    return await manager.add("telegram", telegram(fake.token, base_url=fake.base_url, **kwargs))


async def test_telegram_private_message_end_to_end(
    fake: FakeTelegram, rec: Recorder, manager: ChannelManager
) -> None:
    driver = await _telegram(manager, fake, assistant_name="Andy")
    assert driver.name == "telegram" and driver.is_connected
    fake.inject_message(
        777, "hello there", user_id=42, first_name="Bob", last_name="Stone", date=1_790_000_000
    )
    (message,) = await rec.wait_messages(1)
    assert rec.messages[0][0] == "tg:777"
    assert message.chat_id == "tg:777" and message.sender == "tg:42" and message.sender_name == "Bob Stone"
    assert message.content == "hello there" and message.id.isdigit()
    assert message.timestamp == "2026-09-21T14:13:20.000Z"  # 1790000000 s after the epoch
    assert not message.is_from_me and not message.is_bot_message
    assert rec.chats == [
        {
            "chat_id": "tg:777",
            "timestamp": "2026-09-21T14:13:20.000Z",
            "name": "Bob Stone",
            "channel": "telegram",
            "is_group": False,
        }
    ]
    assert driver.owns_chat("tg:777") and not driver.owns_chat("jsonl:777")

    assert await manager.send("tg:777", "Hi Bob<internal>note</internal>") is True
    (sent,) = await fake.wait_for("sendMessage")
    assert sent == {"chat_id": 777, "text": "Hi Bob"}

    await manager.remove("telegram")
    assert not driver.is_connected
    assert _our_tasks() == []
    assert fake.updates == []  # the handled update was confirmed on the way out
    assert [c.method for c in fake.calls][:2] == ["getMe", "deleteWebhook"]


async def test_telegram_group_message_and_mention_trigger(
    fake: FakeTelegram, rec: Recorder, manager: ChannelManager
) -> None:
    await _telegram(manager, fake, assistant_name="Andy")
    fake.inject_message(-1001, "@andy_test_bot what's up?", chat_type="supergroup", title="Team", user_id=5)
    fake.inject_message(-1001, "ask @andy_test_bot later", chat_type="supergroup", title="Team", user_id=5)
    fake.inject_message(-1001, "@Andy already triggered", chat_type="supergroup", title="Team", user_id=5)
    fake.inject_message(-55, "plain group text", chat_type="group", title="Old group", user_id=6)
    messages = await rec.wait_messages(4)
    assert [m.content for m in messages] == [
        "@Andy what's up?",
        "@Andy ask @andy_test_bot later",
        "@Andy already triggered",
        "plain group text",
    ]
    assert messages[0].chat_id == "tg:-1001" and messages[0].sender == "tg:5"
    assert {(c["chat_id"], c["name"], c["is_group"]) for c in rec.chats} == {
        ("tg:-1001", "Team", True),
        ("tg:-55", "Old group", True),
    }
    await manager.close()


async def test_telegram_skips_non_text_and_answers_chatid(
    fake: FakeTelegram, rec: Recorder, manager: ChannelManager
) -> None:
    await _telegram(manager, fake)
    fake.inject_update(
        {
            "message": {
                "message_id": 1,
                "date": 1_790_000_000,
                "chat": {"id": 9, "type": "private", "first_name": "Al"},
                "from": {"id": 9, "is_bot": False, "first_name": "Al"},
                "sticker": {
                    "file_id": "f",
                    "file_unique_id": "u",
                    "type": "regular",
                    "width": 1,
                    "height": 1,
                    "is_animated": False,
                    "is_video": False,
                },
            }
        }
    )
    fake.inject_message(9, "/chatid")
    fake.inject_message(9, "after")
    (message,) = await rec.wait_messages(1)
    assert message.content == "after"
    (reply,) = await fake.wait_for("sendMessage")
    assert reply == {"chat_id": 9, "text": "Chat ID: tg:9"}
    await manager.close()


async def test_telegram_long_messages_are_split(fake: FakeTelegram, manager: ChannelManager) -> None:
    await _telegram(manager, fake)
    text = ("word " * 1000).strip() + "\n" + "x" * 5000  # 4999 + 1 + 5000 characters
    assert await manager.send("tg:1", text) is True
    sent = await fake.wait_for("sendMessage", 3)
    pieces = [s["text"] for s in sent]
    assert len(pieces) == 3 and all(len(p) <= 4096 for p in pieces)
    assert pieces[0].endswith("word")  # cut at a word boundary, not mid-word
    assert "".join(pieces).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")
    await manager.close()


def test_split_message_rules() -> None:
    from agentlite.channels.telegram import split_message

    assert split_message("short") == ["short"]
    assert split_message("a" * 4096) == ["a" * 4096]
    assert split_message("a" * 4097) == ["a" * 4096, "a"]
    lines = "line\n" * 1000  # breaks at a newline, never mid-line
    pieces = split_message(lines.strip())
    assert all(p.endswith("line") and p.startswith("line") for p in pieces)
    emoji = "😀" * 2049  # 4098 UTF-16 units
    assert [len(p) for p in split_message(emoji)] == [2048, 1]


async def test_telegram_typing_refreshes_until_off(fake: FakeTelegram, manager: ChannelManager) -> None:
    from agentlite.channels.telegram import TelegramChannel

    driver = await _telegram(manager, fake)
    assert isinstance(driver, TelegramChannel)
    driver.typing_interval = 0.05
    await manager.set_typing("tg:31", True)
    actions = await fake.wait_for("sendChatAction", 3)
    assert actions[0] == {"chat_id": 31, "action": "typing"}
    await manager.set_typing("tg:31", False)
    # Off means the re-sending task is gone, so no later action can come (rather than none came yet).
    assert [t.get_name() for t in _our_tasks() if t.get_name().startswith("telegram-typing-")] == []
    await manager.set_typing("tg:31", True)  # left on: disconnect must still stop it
    await manager.close()
    assert _our_tasks() == []


async def test_telegram_polling_survives_server_errors(
    fake: FakeTelegram, rec: Recorder, manager: ChannelManager
) -> None:
    fake.fail("getUpdates", 502, "Bad Gateway")
    await _telegram(manager, fake, poll_timeout=1)
    fake.inject_message(3, "still here")
    (message,) = await rec.wait_messages(1)
    assert message.content == "still here"
    await manager.close()


async def test_telegram_bad_token_is_a_config_error(fake: FakeTelegram, manager: ChannelManager) -> None:
    from agentlite.channels.telegram import telegram

    with pytest.raises(ConfigError, match="rejected the bot token") as info:
        await manager.add("telegram", telegram("999:wrong-token", base_url=fake.base_url))
    assert "wrong-token" not in str(info.value)
    assert "telegram" not in manager
    with pytest.raises(ConfigError, match="empty"):
        telegram("  ")


async def test_telegram_send_failure_names_the_chat(fake: FakeTelegram, manager: ChannelManager) -> None:
    from agentlite.channels.telegram import chat_number
    from agentlite.core.errors import AgentliteError

    await _telegram(manager, fake)
    fake.fail("sendMessage", 403, "Forbidden: bot was blocked by the user")
    with pytest.raises(AgentliteError, match=r"chat `tg:8`"):
        await manager.send("tg:8", "hello")
    with pytest.raises(ConfigError, match="tg:abc"):
        chat_number("tg:abc")
    await manager.close()


async def test_telegram_token_never_reaches_the_logs(
    fake: FakeTelegram, rec: Recorder, manager: ChannelManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await _telegram(manager, fake)
    fake.inject_message(4, "hi")
    await rec.wait_messages(1)
    await manager.send("tg:4", "hello")
    await manager.close()
    assert "getUpdates" in caplog.text and "sendMessage" in caplog.text  # httpx did log the requests
    assert fake.token not in caplog.text
