"""The chat message: what a channel delivers and the agent's store keeps, and the agent's notes to
itself that no chat ever shows."""

from __future__ import annotations

import re

from pydantic import BaseModel


class Message(BaseModel):
    """One chat message as a channel delivered it; ``(id, chat_id)`` identifies it."""

    id: str
    chat_id: str
    sender: str
    sender_name: str
    content: str
    #: ISO 8601 UTC with ``Z``; compared as a string.
    timestamp: str
    is_from_me: bool = False
    #: Written by the assistant itself; never fed back to it as new input.
    is_bot_message: bool = False


_INTERNAL = re.compile(r"<internal>.*?</internal>", re.DOTALL)


def strip_internal(text: str) -> str:
    """Drop the agent's ``<internal>...</internal>`` notes to itself and trim what is left (the one
    definition: the message loop, the agent's outbound path and every channel use it)."""
    return _INTERNAL.sub("", text).strip()
