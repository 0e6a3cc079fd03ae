"""The channel layer: what a chat driver must offer, what it is given, and the manager that owns them.

A *driver* connects the agent to one chat network (Telegram, the terminal, a JSON-lines pipe). It
turns inbound chat messages into :class:`agentlite.channels.message.Message` objects handed to
``config.on_message`` and delivers the agent's replies with :meth:`ChannelDriver.send_message`.
Drivers are built by *factories* (``key -> factory`` in the agent's options) so that a driver can be
configured before the agent exists and only connects when the agent starts.

The :class:`ChannelManager` is the agent's single door to its channels: it builds and connects
drivers, routes an outgoing reply to the driver that owns the chat, and applies the reply rules
that must hold whatever the driver (``<internal>`` notes are never shown, empty text is never sent).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import io
import logging
import threading
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TextIO, runtime_checkable

from agentlite.channels.message import strip_internal
from agentlite.core.clock import now_iso
from agentlite.core.errors import ConfigError

if TYPE_CHECKING:
    from agentlite.channels.message import Message

log = logging.getLogger("agentlite.channels")


def new_message_id(prefix: str) -> str:
    """A message id that cannot collide with an earlier session's (the store upserts on id)."""
    return f"{prefix}-{uuid.uuid4().hex}"


def make_message(
    *,
    id: str,
    chat_id: str,
    sender: str,
    sender_name: str,
    content: str,
    timestamp: str | None = None,
    is_from_me: bool = False,
    is_bot_message: bool = False,
) -> Message:
    """Build a :class:`~agentlite.channels.message.Message` (imported here: pydantic loads only when used)."""
    from agentlite.channels.message import Message

    return Message(
        id=id,
        chat_id=chat_id,
        sender=sender,
        sender_name=sender_name,
        content=content,
        timestamp=timestamp or now_iso(),
        is_from_me=is_from_me,
        is_bot_message=is_bot_message,
    )


async def _settle(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


@dataclass(frozen=True)
class ChannelConfig:
    """What a channel factory receives: the agent's callbacks, each sync or async.

    - ``on_message(chat_id, message)``: one inbound chat message (a store ``Message``).
    - ``on_chat_metadata(chat_id, timestamp, name=None, channel=None, is_group=None)``: a chat was seen;
      lets the agent list chats (and their names) that are not registered yet.
    - ``registered_groups()``: ``{chat_id: RegisteredGroup}``, for drivers that behave differently in
      registered chats.

    Drivers should call :meth:`deliver` and :meth:`chat_seen`, which await async callbacks and log
    (rather than raise) a failing callback, so one bad message never stops a driver's read loop.
    """

    on_message: Callable[[str, Message], Any]
    on_chat_metadata: Callable[..., Any] = field(default=lambda *a, **k: None)
    registered_groups: Callable[[], dict[str, Any]] = field(default=dict)

    async def deliver(self, chat_id: str, message: Message) -> bool:
        """Hand one message to the agent; False (logged) if its callback failed."""
        try:
            await _settle(self.on_message(chat_id, message))
        except Exception:
            log.exception("on_message failed for chat %s (message %s)", chat_id, message.id)
            return False
        return True

    async def chat_seen(
        self,
        chat_id: str,
        timestamp: str,
        name: str | None = None,
        channel: str | None = None,
        is_group: bool | None = None,
    ) -> None:
        try:
            await _settle(
                self.on_chat_metadata(chat_id, timestamp, name=name, channel=channel, is_group=is_group)
            )
        except Exception:
            log.exception("on_chat_metadata failed for chat %s", chat_id)

    def groups(self) -> dict[str, Any]:
        """``registered_groups()``, or ``{}`` (logged) if it fails."""
        try:
            return dict(self.registered_groups())
        except Exception:
            log.exception("registered_groups failed")
            return {}


@runtime_checkable
class ChannelDriver(Protocol):
    """One connected chat network. ``name`` is set by the manager to the key it was added under."""

    name: str

    @property
    def is_connected(self) -> bool: ...

    async def connect(self) -> None: ...

    async def send_message(self, chat_id: str, text: str) -> None: ...

    async def set_typing(self, chat_id: str, on: bool) -> None: ...

    def owns_chat(self, chat_id: str) -> bool: ...

    async def disconnect(self) -> None: ...


ChannelFactory = Callable[[ChannelConfig], ChannelDriver | Awaitable[ChannelDriver]]
Emit = Callable[[str, dict[str, Any]], Any]


#: The run ledger's id of the reply being sent now (set around a run's delivery, agentlite.platform.agent).
DELIVERING_RUN: contextvars.ContextVar[str | None] = contextvars.ContextVar("agentlite_delivering_run",
                                                                            default=None)  # fmt: skip


def _takes(driver: Any, parameter: str) -> bool:
    """Whether the driver's ``send_message`` has the optional keyword ``parameter``."""
    try:
        return parameter in inspect.signature(driver.send_message).parameters
    except (TypeError, ValueError):
        return False


class ChannelManager:
    """The agent's channels by key: add (build + connect), remove (disconnect), route replies.

    ``emit(name, payload)``, when given, receives ``channel.connected`` / ``channel.disconnected``
    with ``{"key": key}``.
    """

    def __init__(self, config: ChannelConfig, *, emit: Emit | None = None) -> None:
        self.config = config
        self._emit = emit
        self._drivers: dict[str, ChannelDriver] = {}
        self._adding: set[str] = set()

    # -- membership -------------------------------------------------------------------------------
    @property
    def drivers(self) -> dict[str, ChannelDriver]:
        """A snapshot ``{key: driver}`` in the order they were added."""
        return dict(self._drivers)

    def get(self, key: str) -> ChannelDriver | None:
        return self._drivers.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._drivers

    def __len__(self) -> int:
        return len(self._drivers)

    async def add(self, key: str, factory: ChannelFactory) -> ChannelDriver:
        """Build the driver with ``factory(config)`` (sync or async), name it ``key`` and connect it.

        The driver object is used as returned (never copied), so a class instance keeps its methods.
        A driver whose factory or ``connect()`` fails is not kept.
        """
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(f"channel key `{key}` is invalid: use a non-empty name")
        if key in self._drivers or key in self._adding:
            raise ConfigError(f"channel `{key}` already registered")
        if not callable(factory):
            raise ConfigError(f"channel `{key}` factory `{factory!r}` is not callable")
        self._adding.add(key)
        try:
            driver = await _settle(factory(self.config))
            missing = [
                m
                for m in ("connect", "send_message", "owns_chat", "disconnect")
                if not callable(getattr(driver, m, None))
            ]
            if missing:
                raise ConfigError(
                    f"channel `{key}` factory returned `{driver!r}`, which lacks {', '.join(missing)}"
                )
            driver.name = key
            await driver.connect()
            self._drivers[key] = driver
        finally:
            self._adding.discard(key)
        log.info("channel %s connected", key)
        await self._notify("channel.connected", key)
        return driver

    async def remove(self, key: str) -> bool:
        """Disconnect and forget the driver ``key``; False if there was none."""
        driver = self._drivers.pop(key, None)
        if driver is None:
            return False
        try:
            await driver.disconnect()
        finally:
            log.info("channel %s disconnected", key)
            await self._notify("channel.disconnected", key)
        return True

    async def close(self) -> None:
        """Disconnect every driver, newest first; one failing disconnect does not stop the others."""
        for key in reversed(list(self._drivers)):
            try:
                await self.remove(key)
            except Exception:
                log.exception("channel %s failed to disconnect", key)

    async def disconnect_all(self) -> None:
        """Same as :meth:`close`."""
        await self.close()

    # -- routing ----------------------------------------------------------------------------------
    def find(self, chat_id: str) -> ChannelDriver | None:
        """The driver that owns ``chat_id``, a connected one first; None if no driver claims it."""
        owners = [d for d in self._drivers.values() if _owns(d, chat_id)]
        for driver in owners:
            if _connected(driver):
                return driver
        return owners[0] if owners else None

    def owner(self, chat_id: str) -> ChannelDriver | None:
        """Same as :meth:`find`."""
        return self.find(chat_id)

    async def send(self, chat_id: str, text: str, *, sender: str | None = None) -> bool:
        """Send a reply to ``chat_id`` without its ``<internal>`` notes; True if anything was sent.

        ``sender`` (a display name the agent chose) goes to drivers whose ``send_message`` takes it.
        Raises :class:`ConfigError` when no channel owns the chat, so a misrouted id is never silent.
        """
        driver = self.find(chat_id)
        if driver is None:
            raise ConfigError(f"No channel for chat `{chat_id}`")
        visible = strip_internal(text or "")
        if not visible:
            return False
        extra: dict[str, Any] = {}
        run_id = DELIVERING_RUN.get()
        if run_id is not None and _takes(driver, "run_id"):
            # The reply of a ledger run: a driver that takes ``run_id`` can drop a re-delivery.
            extra["run_id"] = run_id
        if sender and _takes(driver, "sender"):
            extra["sender"] = sender
        await driver.send_message(chat_id, visible, **extra)
        return True

    async def set_typing(self, chat_id: str, on: bool) -> None:
        """Best effort: a typing indicator is cosmetic, so failures and unknown chats are only logged."""
        driver = self.find(chat_id)
        typing = getattr(driver, "set_typing", None)
        if typing is None:
            return
        try:
            await typing(chat_id, on)
        except Exception:
            log.warning(
                "channel %s could not set typing for %s", getattr(driver, "name", "?"), chat_id, exc_info=True
            )

    async def _notify(self, name: str, key: str) -> None:
        if self._emit is None:
            return
        try:
            await _settle(self._emit(name, {"key": key}))
        except Exception:
            log.exception("emitting %s for channel %s failed", name, key)


def _owns(driver: ChannelDriver, chat_id: str) -> bool:
    try:
        return bool(driver.owns_chat(chat_id))
    except Exception:
        log.exception("owns_chat failed in channel %s", getattr(driver, "name", "?"))
        return False


def _connected(driver: ChannelDriver) -> bool:
    state = getattr(driver, "is_connected", True)
    return bool(state() if callable(state) else state)


# -- line sources shared by the terminal and JSON-lines drivers -----------------------------------
LineSource = AsyncIterable[str] | AsyncIterable[bytes] | TextIO


class LinePipe:
    """An in-memory async line source: ``feed(line)`` from anywhere in the loop, ``close()`` for EOF."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()

    def feed(self, line: str) -> None:
        self._queue.put_nowait(line)

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[str]:
        while (line := await self._queue.get()) is not None:
            yield line


async def iter_lines(source: LineSource) -> AsyncIterator[str]:
    """Lines (without their line ending) from an async iterable of str/bytes or a text stream.

    A blocking text stream such as ``sys.stdin`` is read on a daemon thread: putting stdin in
    non-blocking mode would also affect a terminal's stdout (they share one open file), and a reader
    blocked in the default executor would hang the loop's shutdown.
    """
    if hasattr(source, "__aiter__"):
        async for raw in source:  # type: ignore[union-attr]
            line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            yield line.rstrip("\r\n")
        return
    if isinstance(source, io.StringIO):
        for line in source:
            yield line.rstrip("\r\n")
        return
    async for line in _thread_lines(source):
        yield line


async def _thread_lines(stream: TextIO) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def put(item: str | None) -> bool:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False
        return True

    def pump() -> None:
        try:
            while line := stream.readline():
                if not put(line):
                    return
        except (OSError, ValueError):  # closed stream
            pass
        put(None)

    threading.Thread(target=pump, name="agentlite-line-reader", daemon=True).start()
    while (line := await queue.get()) is not None:
        yield line.rstrip("\r\n")


async def cancel_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has finished; a cancellation of the caller still propagates."""
    if task is None:
        return
    if not task.done():
        task.cancel()
        await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        log.warning("background task %s had failed", task.get_name(), exc_info=task.exception())
