"""The terminal channel behind ``agentlite chat``: one local user talking to the agent in a shell.

Every non-blank input line is a message from the local user (``is_from_me``: the machine's owner) in
the single chat ``term:local``. Replies are printed with rich; while the agent works a transient
"thinking…" status line shows, which is the terminal's version of a typing indicator.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import sys
from typing import TextIO

from rich.console import Console
from rich.markdown import Markdown
from rich.status import Status
from rich.text import Text

from agentlite.channels.base import (
    ChannelConfig,
    ChannelFactory,
    LineSource,
    cancel_task,
    iter_lines,
    make_message,
    new_message_id,
    now_iso,
)

log = logging.getLogger("agentlite.channels.terminal")

CHAT_ID = "term:local"
CHAT_NAME = "terminal"
SENDER = "term:user"


def _local_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry, no USER variable
        return "you"


class TerminalChannel:
    """Reads the user's lines from ``input`` (default stdin) and prints replies to ``output``.

    ``input`` is any line source (an async iterable of str/bytes, or a text stream); ``output`` a text
    stream for a rich console (default stdout), or pass a ready ``console``. ``eof`` is set when the
    input ends, so ``agentlite chat`` knows the user has left.
    """

    def __init__(
        self,
        config: ChannelConfig,
        *,
        input: LineSource | None = None,
        output: TextIO | None = None,
        console: Console | None = None,
        assistant_name: str = "Andy",
        user_name: str | None = None,
        markdown: bool = True,
    ) -> None:
        self.name = "terminal"
        self.config = config
        self.assistant_name = assistant_name
        self.user_name = user_name or _local_user()
        self.markdown = markdown
        self.console = console or Console(file=output if output is not None else sys.stdout)
        self.eof = asyncio.Event()
        self._input = input
        self._reader: asyncio.Task[None] | None = None
        self._status: Status | None = None
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def is_typing(self) -> bool:
        return self._status is not None

    def owns_chat(self, chat_id: str) -> bool:
        return chat_id == CHAT_ID

    async def connect(self) -> None:
        if self._connected:
            return
        await self.config.chat_seen(CHAT_ID, now_iso(), name=CHAT_NAME, channel="terminal", is_group=False)
        self._connected = True
        self._reader = asyncio.create_task(self._read(), name=f"terminal-reader-{self.name}")

    async def _read(self) -> None:
        try:
            async for line in iter_lines(self._input if self._input is not None else sys.stdin):
                text = line.strip()
                if not text:
                    continue
                message = make_message(
                    id=new_message_id("term"),
                    chat_id=CHAT_ID,
                    sender=SENDER,
                    sender_name=self.user_name,
                    content=text,
                    is_from_me=True,
                )
                await self.config.deliver(CHAT_ID, message)
        finally:
            self.eof.set()

    async def send_message(self, chat_id: str, text: str) -> None:
        label = Text(f"{self.assistant_name}:", style="bold cyan")
        self.console.print(label)
        self.console.print(Markdown(text) if self.markdown else Text(text))

    async def set_typing(self, chat_id: str, on: bool) -> None:
        if on and self._status is None and self._connected:
            self._status = self.console.status(Text("thinking…", style="dim"), spinner="dots")
            self._status.start()
        elif not on:
            self._stop_status()

    def _stop_status(self) -> None:
        status, self._status = self._status, None
        if status is not None:
            status.stop()

    async def wait_eof(self) -> None:
        """Return once the user's input has ended (Ctrl-D, or the end of a piped file)."""
        await self.eof.wait()

    async def disconnect(self) -> None:
        self._connected = False
        self._stop_status()
        reader, self._reader = self._reader, None
        await cancel_task(reader)


def terminal(
    *,
    input: LineSource | None = None,
    output: TextIO | None = None,
    console: Console | None = None,
    assistant_name: str = "Andy",
    user_name: str | None = None,
    markdown: bool = True,
) -> ChannelFactory:
    """A factory for :class:`TerminalChannel` (``agent.add_channel("terminal", terminal())``)."""

    def build(config: ChannelConfig) -> TerminalChannel:
        return TerminalChannel(
            config,
            input=input,
            output=output,
            console=console,
            assistant_name=assistant_name,
            user_name=user_name,
            markdown=markdown,
        )

    return build
