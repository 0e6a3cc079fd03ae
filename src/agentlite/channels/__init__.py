"""Chat channels: the driver interface, the manager, and the built-in drivers.

The factories live in their modules, as the reference's ``channels/telegram`` export does:
``from agentlite.channels.telegram import telegram``, ``...terminal import terminal``,
``...jsonl import jsonl``. (They are not re-exported here: a function named like its module would
shadow the module.) The Telegram module needs python-telegram-bot and is never imported here, so
the rest works without it.
"""

from __future__ import annotations

from agentlite.channels.base import (
    ChannelConfig as ChannelConfig,
    ChannelDriver as ChannelDriver,
    ChannelFactory as ChannelFactory,
    ChannelManager as ChannelManager,
    LinePipe as LinePipe,
    LineSource as LineSource,
    strip_internal as strip_internal,
)

__all__ = [
    "ChannelConfig",
    "ChannelDriver",
    "ChannelFactory",
    "ChannelManager",
    "LinePipe",
    "LineSource",
    "strip_internal",
]
