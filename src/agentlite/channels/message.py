"""The chat message: what a channel delivers and the agent's store keeps."""

from __future__ import annotations

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
