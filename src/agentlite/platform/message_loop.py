"""The platform's message loop for one agent: stored chat messages in, group runs out.

The loop polls the store (or wakes at once when a message arrives), and for each group with new
messages either hands them to the group's live box as a follow-up or asks the group queue for a
run. A group that needs a trigger wakes only on ``@<assistant name>``. A run moves the group's
cursor before it starts and puts it back when the run fails having sent nothing, so the queue's
retry sees the messages again (:mod:`agentlite.platform.turn_book`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from agentlite.channels.message import strip_internal
from agentlite.platform.queue import GroupQueue
from agentlite.platform.router import SenderAllowlist, format_messages, is_trigger
from agentlite.platform.store import Message, RegisteredGroup
from agentlite.platform.turn_book import Cursor, TurnBook
from agentlite.run.turn import TurnResult

log = logging.getLogger("agentlite.agent")

POLL_INTERVAL = 2.0


class RunTurn(Protocol):
    """One turn of a group's box on a prompt; ``deliver`` gets each answer for the chat, and
    ``answering`` are the stored messages the prompt is made of."""

    def __call__(self, group: RegisteredGroup, prompt: str, deliver: Callable[[str], Awaitable[None]], *,
                 answering: Sequence[Message] = ()) -> Awaitable[TurnResult]: ...  # fmt: skip


class Channels(Protocol):
    """What the loop needs of the agent's channels."""

    def owner(self, jid: str) -> object | None: ...

    async def set_typing(self, jid: str, typing: bool) -> None: ...


class MessageLoop:
    """Turns stored messages into group runs; see the module docstring."""

    def __init__(self, *, book: TurnBook, queue: GroupQueue, channels: Channels,
                 groups: Callable[[], dict[str, RegisteredGroup]], assistant_name: Callable[[], str],
                 timezone: str, allowlist: SenderAllowlist, run_turn: RunTurn,
                 send_message: Callable[[str, str], Awaitable[None]], agent_id: str,
                 poll_interval: float = POLL_INTERVAL) -> None:  # fmt: skip
        self._book = book
        self._queue = queue
        self._channels = channels
        self._groups = groups
        self._assistant_name = assistant_name
        self._timezone = timezone
        self._allowlist = allowlist
        self._run_turn = run_turn
        self._send_message = send_message
        self._agent_id = agent_id
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        """Look at the store now instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """End :meth:`run` after its current round."""
        self._stopping = True
        self._wake.set()

    def recover(self, settled: Iterable[str] = ()) -> dict[str, Cursor]:
        """At start: roll back runs a crash interrupted (except the ``settled`` groups' runs, which
        the run ledger carries on: see :meth:`TurnBook.recover`), then run every group with pending
        messages."""
        groups = self._groups()
        held = self._book.recover(groups, settled)
        for jid in groups:
            since = self._book.answered(jid).timestamp
            pending = self._book.store.get_messages_since(jid, since, self._assistant_name())
            if pending:
                log.info("recovering %d pending messages in %s", len(pending), jid)
                self._queue.enqueue_message_check(jid)
        return held

    async def run(self) -> None:
        """Poll until :meth:`stop`; a failed round is logged and the loop goes on."""
        while not self._stopping:
            try:
                await self.poll_once()
            except Exception:
                log.exception("message loop iteration failed agent=%s", self._agent_id)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            except TimeoutError:
                pass

    def needs_trigger(self, group: RegisteredGroup) -> bool:
        return not group.is_main and group.requires_trigger

    def _triggered(self, group: RegisteredGroup, messages: list[Message]) -> bool:
        name = self._assistant_name()
        return not self.needs_trigger(group) or any(is_trigger(m, name, self._allowlist) for m in messages)

    async def poll_once(self) -> None:
        groups = self._groups()
        if not groups:
            return
        messages = self._book.take_new(list(groups), self._assistant_name())
        by_chat: dict[str, list[Message]] = {}
        for message in messages:
            by_chat.setdefault(message.chat_id, []).append(message)
        for jid, batch in by_chat.items():
            group = groups[jid]
            if not self._channels.owner(jid):
                continue
            if not self._triggered(group, batch):
                continue  # stored; included as context the next time the agent is woken
            if not self._queue.is_active(jid):
                self._queue.enqueue_message_check(jid)  # the group run reads and formats them itself
                continue
            pending = self._book.pending(jid, self._assistant_name()) or batch
            if self._queue.send_message(jid, format_messages(pending, self._timezone)):
                self._book.move(jid, pending)
                await self._channels.set_typing(jid, True)
            else:
                self._queue.enqueue_message_check(jid)

    def has_unanswered(self, jid: str) -> bool:
        """Whether the group has messages after its cursor (answered or being answered)."""
        return bool(self._book.pending(jid, self._assistant_name()))

    async def process_group(self, jid: str) -> bool:
        """Run the agent on a group's pending messages; False asks the queue to retry later."""
        group = self._groups().get(jid)
        if group is None or not self._channels.owner(jid):
            return True
        previous = self._book.answered(jid)
        pending = self._book.pending(jid, self._assistant_name())
        if not pending or not self._triggered(group, pending):
            return True
        prompt = format_messages(pending, self._timezone)
        self._book.move(jid, pending)  # advance first: a retry must not answer twice
        # Better than the reference: if the host dies mid-run before anything was sent, the next
        # start rolls this cursor back, so the messages are answered instead of lost.
        self._book.set_inflight(jid, previous)
        await self._channels.set_typing(jid, True)
        sent = False

        async def deliver(text: str) -> None:
            nonlocal sent
            if strip_internal(text):
                await self._send_message(jid, text)
                sent = True
                self._book.set_inflight(jid, None)

        try:
            status = (await self._run_turn(group, prompt, deliver, answering=pending)).status
        finally:
            await self._channels.set_typing(jid, False)
        self._book.set_inflight(jid, None)
        if status == "error" and not sent:
            self._book.rewind(jid, previous)  # nothing reached the chat: the retry sees these messages
            return False
        return True
