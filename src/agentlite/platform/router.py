"""How chat messages become a prompt, what wakes the agent, and what of a reply is shown.

- Prompt: ``<context timezone="TZ" />`` then ``<messages>`` with one
  ``<message sender="NAME" time="Jan 5, 2026, 3:04 PM">CONTENT</message>`` per message (XML-escaped,
  local time in the agent's time zone), then ``</messages>``.
- Trigger: a message whose trimmed content starts with ``@<assistant name>`` as a word, any case, from
  the user themself or an allowed sender.
- ``<internal>...</internal>`` blocks in a reply are the agent's notes to itself and never sent.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from agentlite.platform.store import Message

log = logging.getLogger("agentlite.router")


def _escape(text: str) -> str:
    return escape(text, {'"': "&quot;"})


def format_time(timestamp: str, tz: str) -> str:
    """``Jan 5, 2026, 3:04 PM`` in ``tz`` (the en-US style of the reference)."""
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).astimezone(ZoneInfo(tz))
    hour = moment.hour % 12 or 12
    return f"{moment:%b} {moment.day}, {moment.year}, {hour}:{moment:%M} {'AM' if moment.hour < 12 else 'PM'}"


def format_messages(messages: list[Message], tz: str) -> str:
    lines = [f'<context timezone="{_escape(tz)}" />', "<messages>"]
    for m in messages:
        sender = _escape(m.sender_name or m.sender)
        lines.append(
            f'<message sender="{sender}" time="{format_time(m.timestamp, tz)}">{_escape(m.content)}</message>'
        )
    lines.append("</messages>")
    return "\n".join(lines)


def trigger_pattern(assistant_name: str) -> re.Pattern[str]:
    return re.compile(rf"^@{re.escape(assistant_name)}\b", re.IGNORECASE)


@dataclass(frozen=True)
class SenderRule:
    allow: Literal["*"] | frozenset[str] = "*"
    mode: Literal["trigger", "drop"] = "trigger"

    def allows(self, sender: str) -> bool:
        return self.allow == "*" or sender in self.allow


@dataclass(frozen=True)
class SenderAllowlist:
    """Who may wake the agent (``trigger`` mode) or even be stored (``drop`` mode), per chat."""

    default: SenderRule = SenderRule()
    chats: dict[str, SenderRule] = field(default_factory=dict)
    log_denied: bool = True

    def rule(self, chat_id: str) -> SenderRule:
        return self.chats.get(chat_id, self.default)

    @classmethod
    def load(cls, path: Path | None) -> SenderAllowlist:
        """Read the JSON file; a missing or invalid file means allow everyone (logged when invalid)."""
        if path is None or not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text())

            def rule(entry: dict) -> SenderRule:
                allow = entry.get("allow", "*")
                mode = entry.get("mode", "trigger")
                if mode not in ("trigger", "drop"):
                    raise ValueError(f"mode {mode!r}")
                return SenderRule("*" if allow == "*" else frozenset(map(str, allow)), mode)

            return cls(
                default=rule(data.get("default", {})),
                chats={jid: rule(entry) for jid, entry in data.get("chats", {}).items()},
                log_denied=bool(data.get("logDenied", data.get("log_denied", True))),
            )
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("sender allowlist %s is invalid (%s); allowing everyone", path, exc)
            return cls()


#: The sender of ACP completion notices (:mod:`agentlite.platform.acp_peers`): they wake a group that
#: otherwise needs its trigger word, since the agent itself asked for the work they report.
ACP_NOTICE_SENDER = "__agentlite_acp__"


def is_trigger(message: Message, assistant_name: str, allowlist: SenderAllowlist) -> bool:
    if message.sender == ACP_NOTICE_SENDER and not message.is_from_me:
        return True
    if not trigger_pattern(assistant_name).match(message.content.strip()):
        return False
    return message.is_from_me or allowlist.rule(message.chat_id).allows(message.sender)
