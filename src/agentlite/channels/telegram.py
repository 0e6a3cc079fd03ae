"""Telegram through the Bot API (python-telegram-bot's ``Bot`` for the calls, our own polling loop).

Why our own loop rather than ``telegram.ext.Application``: the agent owns the event loop and the
lifecycle, and needs a disconnect that returns promptly and leaves nothing running. Cancelling one
task that long-polls ``getUpdates`` gives exactly that.

Mapping: chat ``tg:<chat id>``, sender ``tg:<user id>``; private chats, groups and supergroups;
text messages only. Every message also reports its chat (title, group or not) so the agent can list
chats before they are registered. ``/chatid`` is answered with the chat's id, for registering it.
In groups, an ``@<bot username>`` mention becomes the ``@<assistant name>`` trigger the agent
listens for. Bots with privacy mode on (BotFather's default) only see commands, mentions and
replies in groups.
"""

from __future__ import annotations

import asyncio
import logging
import re
import warnings
from datetime import timedelta
from typing import Any

from telegram import Bot, Message as TgMessage, MessageEntity, Update
from telegram.constants import ChatAction, ChatType
from telegram.error import InvalidToken, RetryAfter, TelegramError
from telegram.request import HTTPXRequest

from agentlite.channels.base import ChannelConfig, ChannelFactory, cancel_task, make_message
from agentlite.core.clock import iso_utc
from agentlite.core.errors import AgentliteError, ConfigError

log = logging.getLogger("agentlite.channels.telegram")

PREFIX = "tg:"
DEFAULT_API = "https://api.telegram.org"
#: Telegram's limit for one message, counted in UTF-16 code units.
MAX_MESSAGE = 4096
_GROUP_TYPES = {ChatType.GROUP, ChatType.SUPERGROUP}


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_message(text: str, limit: int = MAX_MESSAGE) -> list[str]:
    """Cut ``text`` into pieces Telegram accepts, preferring line, then word, boundaries."""
    pieces: list[str] = []
    rest = text
    while _utf16_len(rest) > limit:
        units = 0
        end = 0
        for end, char in enumerate(rest):  # noqa: B007 - end is used after the loop
            units += 2 if ord(char) > 0xFFFF else 1
            if units > limit:
                break
        cut = rest.rfind("\n", 0, end + 1)
        if cut <= end // 2:
            cut = rest.rfind(" ", 0, end + 1)
        if cut <= end // 2:
            pieces.append(rest[:end])
            rest = rest[end:]
        else:
            pieces.append(rest[:cut])
            rest = rest[cut + 1 :]
    if rest or not pieces:
        pieces.append(rest)
    return [p for p in pieces if p] or [text]


def chat_number(chat_id: str) -> int:
    """``tg:-100123`` -> ``-100123``; ConfigError for anything else."""
    if not chat_id.startswith(PREFIX):
        raise ConfigError(f"chat `{chat_id}` is not a Telegram chat (expected `{PREFIX}<id>`)")
    try:
        return int(chat_id[len(PREFIX) :])
    except ValueError:
        raise ConfigError(f"chat `{chat_id}` is not a Telegram chat (expected `{PREFIX}<number>`)") from None


#: Loggers whose records can carry a Bot API URL, which contains the bot token.
_TOKEN_LOGGERS = ("httpx", "telegram.Bot")


class _RedactToken(logging.Filter):
    """httpx logs every request URL at INFO (and PTB the API URL at DEBUG); the URL holds the token."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.token in message:
            record.msg = message.replace(self.token, "<token>")
            record.args = ()
        return True


def _retry_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB deprecates reading it as int; either form is handled
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class TelegramChannel:
    """One Telegram bot, long-polling for messages while connected."""

    def __init__(
        self,
        config: ChannelConfig,
        token: str,
        *,
        assistant_name: str | None = None,
        base_url: str | None = None,
        poll_timeout: int = 30,
        typing_interval: float = 4.0,
    ) -> None:
        if not token or not token.strip():
            raise ConfigError("Telegram bot token `` is empty: set it from BotFather")
        self.name = "telegram"
        self.config = config
        self.assistant_name = assistant_name
        self.api_root = (base_url or DEFAULT_API).rstrip("/")
        self.poll_timeout = poll_timeout
        self.typing_interval = typing_interval
        self._token = token.strip()
        self._bot: Bot | None = None
        self._poller: asyncio.Task[None] | None = None
        self._typing: dict[str, asyncio.Task[None]] = {}
        self._offset: int | None = None
        self._confirmed: int | None = None
        self._redact = _RedactToken(self._token)
        self._connected = False

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def bot(self) -> Bot:
        if self._bot is None:
            raise AgentliteError(f"channel `{self.name}` is not connected")
        return self._bot

    def owns_chat(self, chat_id: str) -> bool:
        return chat_id.startswith(PREFIX)

    async def connect(self) -> None:
        """Check the token (getMe), drop any webhook (it would block getUpdates) and start polling."""
        if self._connected:
            return
        for name in _TOKEN_LOGGERS:
            logging.getLogger(name).addFilter(self._redact)
        bot = Bot(
            self._token,
            base_url=f"{self.api_root}/bot",
            base_file_url=f"{self.api_root}/file/bot",
            request=HTTPXRequest(connection_pool_size=8),
            get_updates_request=HTTPXRequest(connection_pool_size=1),
        )
        try:
            await bot.initialize()
            await bot.delete_webhook(drop_pending_updates=False)
        except BaseException as exc:
            await bot.shutdown()
            self._unredact()
            if isinstance(exc, InvalidToken):  # its text contains the token: never chain it
                raise ConfigError(
                    "Telegram rejected the bot token `<redacted>`: check it with BotFather"
                ) from None
            if isinstance(exc, TelegramError):
                raise AgentliteError(
                    f"cannot use the Telegram Bot API at `{self.api_root}`: {self._safe(exc)}"
                ) from exc
            raise
        self._bot = bot
        self._connected = True
        log.info("telegram: connected as @%s", bot.username)
        self._poller = asyncio.create_task(self._poll(), name=f"telegram-poll-{self.name}")

    def _safe(self, exc: BaseException) -> str:
        """An error's text without the token (network errors can quote the request URL)."""
        return str(exc).replace(self._token, "<token>")

    def _unredact(self) -> None:
        for name in _TOKEN_LOGGERS:
            logging.getLogger(name).removeFilter(self._redact)

    async def disconnect(self) -> None:
        """Stop polling, confirm the updates already handled, and close the HTTP clients."""
        if self._bot is None:
            return
        self._connected = False
        for task in list(self._typing.values()):
            await cancel_task(task)
        self._typing.clear()
        poller, self._poller = self._poller, None
        await cancel_task(poller)
        bot, self._bot = self._bot, None
        try:
            if self._offset is not None and self._offset != self._confirmed:
                # Telegram forgets updates below the offset only when it is sent; without this the
                # last batch would be delivered again after a restart.
                await asyncio.wait_for(bot.get_updates(offset=self._offset, timeout=0, limit=1), 5)
                self._confirmed = self._offset
        except (TelegramError, TimeoutError) as exc:
            log.warning("telegram: could not confirm handled updates: %s", self._safe(exc))
        finally:
            await bot.shutdown()
            self._unredact()
        log.info("telegram: disconnected")

    # -- inbound ----------------------------------------------------------------------------------
    async def _poll(self) -> None:
        backoff = 1.0
        while True:
            try:
                offset = self._offset
                updates = await self.bot.get_updates(
                    offset=offset, timeout=self.poll_timeout, allowed_updates=["message"]
                )
                self._confirmed = offset
            except RetryAfter as exc:
                delay = _retry_seconds(exc)
                log.warning("telegram: rate limited, polling again in %.0f s", delay)
            except InvalidToken:
                log.error("telegram: the bot token was revoked; polling stopped")
                self._connected = False
                return
            except (TelegramError, OSError) as exc:
                delay = backoff
                backoff = min(backoff * 2, 30.0)
                log.warning("telegram: polling failed (%s); retrying in %.0f s", self._safe(exc), delay)
            else:
                backoff = 1.0
                for update in updates:
                    self._offset = update.update_id + 1
                    try:
                        await self._handle(update)
                    except Exception:
                        log.exception("telegram: could not handle update %s", update.update_id)
                continue
            await asyncio.sleep(delay)

    async def _handle(self, update: Update) -> None:
        msg = update.message
        if msg is None or msg.text is None:
            return
        chat = msg.chat
        chat_id = f"{PREFIX}{chat.id}"
        timestamp = iso_utc(msg.date)
        is_group = chat.type in _GROUP_TYPES
        name = chat.effective_name or chat.username or str(chat.id)
        await self.config.chat_seen(chat_id, timestamp, name=name, channel="telegram", is_group=is_group)

        if self._is_command(msg.text, "chatid"):
            await self.bot.send_message(chat_id=chat.id, text=f"Chat ID: {chat_id}")
            return

        user = msg.from_user
        if user is not None:
            sender = f"{PREFIX}{user.id}"
            sender_name = user.full_name or user.username or str(user.id)
            from_bot = user.id == self.bot.id
        else:  # posted as the chat itself (anonymous group admin)
            sender_chat = msg.sender_chat or chat
            sender = f"{PREFIX}{sender_chat.id}"
            sender_name = sender_chat.effective_name or str(sender_chat.id)
            from_bot = False
        message = make_message(
            id=str(msg.message_id),
            chat_id=chat_id,
            sender=sender,
            sender_name=sender_name,
            content=self._with_trigger(msg),
            timestamp=timestamp,
            is_from_me=False,
            is_bot_message=from_bot,
        )
        await self.config.deliver(chat_id, message)

    def _is_command(self, text: str, command: str) -> bool:
        head = text.strip().split(maxsplit=1)[0].lower() if text.strip() else ""
        return head in (f"/{command}", f"/{command}@{(self.bot.username or '').lower()}")

    def _with_trigger(self, msg: TgMessage) -> str:
        """Turn an ``@bot_username`` mention into the ``@Assistant`` trigger the agent waits for."""
        text = msg.text or ""
        if not self.assistant_name or not self.bot.username:
            return text
        if re.match(rf"^@{re.escape(self.assistant_name)}\b", text.strip(), re.IGNORECASE):
            return text
        handle = f"@{self.bot.username}"
        mentions = msg.parse_entities([MessageEntity.MENTION]).values()
        if not any(m.lower() == handle.lower() for m in mentions):
            return text
        leading = re.match(rf"\s*{re.escape(handle)}\b", text, re.IGNORECASE)
        if leading:  # "@bot hi" reads as "@Andy hi"
            return f"@{self.assistant_name}{text[leading.end() :]}"
        return f"@{self.assistant_name} {text}"

    # -- outbound ---------------------------------------------------------------------------------
    async def send_message(self, chat_id: str, text: str) -> None:
        """Send ``text``, in several messages when it is over Telegram's 4096-character limit."""
        number = chat_number(chat_id)
        for piece in split_message(text):
            await self._call(lambda piece=piece: self.bot.send_message(chat_id=number, text=piece), chat_id)

    async def _call(self, fn: Any, chat_id: str, attempts: int = 3) -> Any:
        for attempt in range(attempts):
            try:
                return await fn()
            except RetryAfter as exc:
                if attempt == attempts - 1:
                    raise AgentliteError(
                        f"Telegram kept rate-limiting chat `{chat_id}`: {self._safe(exc)}"
                    ) from exc
                await asyncio.sleep(_retry_seconds(exc))
            except TelegramError as exc:
                raise AgentliteError(
                    f"Telegram could not deliver to chat `{chat_id}`: {self._safe(exc)}"
                ) from exc
        return None

    async def set_typing(self, chat_id: str, on: bool) -> None:
        """Show "typing…" until turned off (Telegram clears it after ~5 s, so it is re-sent)."""
        if not on:
            await cancel_task(self._typing.pop(chat_id, None))
            return
        if not self._connected or chat_id in self._typing:
            return
        number = chat_number(chat_id)
        self._typing[chat_id] = asyncio.create_task(
            self._keep_typing(number), name=f"telegram-typing-{chat_id}"
        )

    async def _keep_typing(self, number: int) -> None:
        while True:
            try:
                await self.bot.send_chat_action(chat_id=number, action=ChatAction.TYPING)
            except TelegramError as exc:
                log.debug("telegram: typing indicator failed for %s: %s", number, self._safe(exc))
            await asyncio.sleep(self.typing_interval)


def telegram(
    token: str,
    *,
    assistant_name: str | None = None,
    base_url: str | None = None,
    poll_timeout: int = 30,
) -> ChannelFactory:
    """A factory for :class:`TelegramChannel` (``agent.add_channel("telegram", telegram(token))``).

    ``base_url`` is the Bot API server root (default ``https://api.telegram.org``), for a self-hosted
    Bot API server or a test double.
    """
    if not token or not token.strip():
        raise ConfigError("Telegram bot token `` is empty: set it from BotFather")

    def build(config: ChannelConfig) -> TelegramChannel:
        return TelegramChannel(
            config, token, assistant_name=assistant_name, base_url=base_url, poll_timeout=poll_timeout
        )

    return build
