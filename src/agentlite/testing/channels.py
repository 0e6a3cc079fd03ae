"""A channel driver for tests and harnesses: messages pushed in by hand, every reply recorded.

It owns the chats whose id starts with ``prefix`` (``t:`` by default). ``say`` hands a message to
the agent as a chat network would; every reply the agent sends is kept in :attr:`sent` (and, with
``replies_file``, appended to that file as one JSON line, so a harness can read what a host process
sent after it died); ``before_send`` runs before a reply is recorded (a harness kills its host there
to crash it between the run ledger and the chat).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentlite.platform.store import Message, now_iso


class RecordingChannel:
    """A channel driver owning chat ids that start with ``prefix``; it records what was sent."""

    def __init__(self, config: Any, *, name: str = "test", prefix: str = "t:", replies_file: Path | None = None,
                 before_send: Callable[[str, str], None] | None = None) -> None:  # fmt: skip
        self.config = config
        self.name = name
        self.prefix = prefix
        self.is_connected = False
        self.sent: list[tuple[str, str]] = []
        self.changed = asyncio.Event()
        self._replies_file = replies_file
        self._before_send = before_send
        self._ids = 0

    async def connect(self) -> None:
        self.is_connected = True

    async def disconnect(self) -> None:
        self.is_connected = False

    def owns_chat(self, chat_id: str) -> bool:
        return chat_id.startswith(self.prefix)

    async def set_typing(self, chat_id: str, on: bool) -> None:
        return None

    async def send_message(self, chat_id: str, text: str) -> None:
        if self._before_send is not None:
            self._before_send(chat_id, text)
        if self._replies_file is not None:
            with self._replies_file.open("a") as out:
                out.write(json.dumps({"chat": chat_id, "text": text, "pid": os.getpid()}) + "\n")
        self.sent.append((chat_id, text))
        self.changed.set()

    async def say(self, chat_id: str, text: str, sender: str = "u1") -> None:
        """Hand the agent a message from ``sender`` in ``chat_id``, as the chat network would."""
        self._ids += 1
        message = Message(id=f"m{self._ids}-{time.monotonic_ns()}", chat_id=chat_id, sender=sender,
                          sender_name=sender.upper(), content=text, timestamp=now_iso())  # fmt: skip
        await self.config.deliver(chat_id, message)

    async def wait_sent(self, count: int, timeout: float = 60) -> list[tuple[str, str]]:
        """Every reply so far, once there are at least ``count``; fails naming what came after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while len(self.sent) < count:
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"expected {count} replies, got {self.sent}")
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                pass
        return self.sent


class RecordingChannels:
    """A channel factory for an agent's ``channels`` option that keeps the driver it built."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._channel: RecordingChannel | None = None

    def __call__(self, config: Any) -> RecordingChannel:
        self._channel = RecordingChannel(config, **self._options)
        return self._channel

    @property
    def channel(self) -> RecordingChannel:
        if self._channel is None:
            raise RuntimeError("the agent has not built its channel yet (start it first)")
        return self._channel
