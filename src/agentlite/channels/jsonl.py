"""A JSON-lines channel: a program (or a test) talks to the agent through a pipe.

Input, one object a line: ``{"chat_id": "jsonl:<x>", "text": "...", "sender"?: "...",
"sender_name"?: "...", "id"?: "...", "chat_name"?: "..."}``. Output, one object a line:
``{"type": "message", "chat_id": ..., "text": ..., "sender"?: ...}`` for each reply (``sender``: the
display name the agent gave a message it sent with its ``send_message`` tool); a line that cannot be used is
answered with ``{"type": "error", "error": ..., "line": ...}`` rather than dropped silently, so the
other end learns of its mistake. With ``emit_typing`` the driver also writes
``{"type": "typing", "chat_id": ..., "on": true|false}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any, TextIO

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

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
from agentlite.core.errors import describe_validation_error

log = logging.getLogger("agentlite.channels.jsonl")

PREFIX = "jsonl:"


class JsonlInbound(BaseModel):
    """One inbound line."""

    model_config = ConfigDict(extra="ignore")
    chat_id: str
    text: str
    sender: str = "user"
    sender_name: str | None = None
    id: str | None = None
    chat_name: str | None = None

    @field_validator("chat_id")
    @classmethod
    def _owned(cls, value: str) -> str:
        if not value.startswith(PREFIX) or value == PREFIX:
            raise ValueError(f"chat_id `{value}` must start with `{PREFIX}`")
        return value


class JsonlChannel:
    """Reads JSON lines from ``input`` (default stdin) and writes JSON lines to ``output`` (default stdout).

    ``output`` is a text stream or an ``asyncio.StreamWriter``; each line is flushed at once so a
    reader on the other end of a pipe sees replies as they happen.
    """

    def __init__(
        self,
        config: ChannelConfig,
        *,
        input: LineSource | None = None,
        output: TextIO | asyncio.StreamWriter | None = None,
        emit_typing: bool = False,
    ) -> None:
        self.name = "jsonl"
        self.config = config
        self.emit_typing = emit_typing
        self.eof = asyncio.Event()
        self._input = input
        self._output = output
        self._reader: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected

    def owns_chat(self, chat_id: str) -> bool:
        return chat_id.startswith(PREFIX)

    async def connect(self) -> None:
        if self._connected:
            return
        self._connected = True
        self._reader = asyncio.create_task(self._read(), name=f"jsonl-reader-{self.name}")

    async def _read(self) -> None:
        try:
            async for line in iter_lines(self._input if self._input is not None else sys.stdin):
                if line.strip():
                    await self._handle(line)
        finally:
            self.eof.set()

    async def _handle(self, line: str) -> None:
        try:
            inbound = JsonlInbound.model_validate_json(line)
        except ValidationError as exc:
            problem = describe_validation_error(exc, "line")
            log.warning("jsonl: ignoring line %r: %s", line[:200], problem)
            await self._write({"type": "error", "error": problem, "line": line[:1000]})
            return
        timestamp = now_iso()
        await self.config.chat_seen(
            inbound.chat_id, timestamp, name=inbound.chat_name, channel="jsonl", is_group=False
        )
        message = make_message(
            id=inbound.id or new_message_id("jsonl"),
            chat_id=inbound.chat_id,
            sender=inbound.sender,
            sender_name=inbound.sender_name or inbound.sender,
            content=inbound.text,
            timestamp=timestamp,
        )
        await self.config.deliver(inbound.chat_id, message)

    async def send_message(self, chat_id: str, text: str, sender: str | None = None) -> None:
        line = {"type": "message", "chat_id": chat_id, "text": text}
        await self._write(line if sender is None else {**line, "sender": sender})

    async def set_typing(self, chat_id: str, on: bool) -> None:
        if self.emit_typing:
            await self._write({"type": "typing", "chat_id": chat_id, "on": on})

    async def _write(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj, ensure_ascii=False) + "\n"
        out = self._output if self._output is not None else sys.stdout
        async with self._write_lock:
            if isinstance(out, asyncio.StreamWriter):
                out.write(data.encode())
                await out.drain()
            else:
                out.write(data)
                out.flush()

    async def wait_eof(self) -> None:
        """Return once the input has ended."""
        await self.eof.wait()

    async def disconnect(self) -> None:
        self._connected = False
        reader, self._reader = self._reader, None
        await cancel_task(reader)


def jsonl(
    *,
    input: LineSource | None = None,
    output: TextIO | asyncio.StreamWriter | None = None,
    emit_typing: bool = False,
) -> ChannelFactory:
    """A factory for :class:`JsonlChannel` (``agent.add_channel("jsonl", jsonl())``)."""

    def build(config: ChannelConfig) -> JsonlChannel:
        return JsonlChannel(config, input=input, output=output, emit_typing=emit_typing)

    return build
