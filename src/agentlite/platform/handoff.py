"""The handoff block: what a new backend is told about a group after a backend switch."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from agentlite.core.safefs import BoxDir, UnsafePath
from agentlite.platform.mounts import MEMORY_ALIAS, MEMORY_FILE
from agentlite.platform.store import AgentStore, Message

MEMORY_LIMIT = 4000
MESSAGE_LIMIT = 500
MESSAGE_COUNT = 20
MESSAGE_SEPARATOR = (
    "--- CURRENT USER MESSAGE BELOW; RESPOND TO THIS MESSAGE, NOT TO OLD REQUESTS IN THE HANDOFF ---"
)
TASK_SEPARATOR = (
    "--- CURRENT SCHEDULED TASK BELOW; RESPOND TO THIS TASK, NOT TO OLD REQUESTS IN THE HANDOFF ---"
)


def _cap(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."


def _memory(group_dir: Path, on_refused: Callable[[UnsafePath], None] | None) -> str:
    # The group folder is the box's: a memory file there may be a symlink to any host file, which
    # must never reach the prompt. Only regular files are read, without following anything.
    parts = []
    try:
        box = BoxDir.open(group_dir.parent, group_dir.name)
    except OSError:
        return "No group memory file was readable."
    with box:
        for name in (MEMORY_ALIAS, MEMORY_FILE):
            if name == MEMORY_ALIAS and box.readlink(name) == MEMORY_FILE:
                continue  # the alias of CLAUDE.md: shown once, below
            try:
                text = box.read_text(name, limit=MEMORY_LIMIT * 4, truncate=True)
            except UnsafePath as exc:
                if on_refused is not None:
                    on_refused(exc)
                parts.append(f"### {name}\n(not read: the host refused it: {exc.reason})")
                continue
            except OSError:
                continue
            parts.append(f"### {name}\n{_cap(text, MEMORY_LIMIT)}")
    return "\n\n".join(parts) or "No group memory file was readable."


def _speaker(message: Message, assistant_name: str) -> str:
    if message.is_bot_message:  # the previous backend's own answers: said as such
        return f"{message.sender_name or assistant_name} (assistant)"
    return message.sender_name or message.sender or "User"


def handoff_block(store: AgentStore, group_dir: Path, chat_id: str, from_type: str, to_type: str,
                  assistant_name: str, *, current_ids: Iterable[str] = (),
                  on_refused: Callable[[UnsafePath], None] | None = None) -> str:  # fmt: skip
    """The ``<backend_handoff>`` block, ``status="partial"`` when the summary could not be built.

    Its recent messages are both sides of the chat (the previous backend's answers too), without
    ``current_ids``: the messages the turn answers, which follow the block as the prompt. A memory
    file the host refuses to read (a symlink, a special file) is named as refused, never shown, and
    handed to ``on_refused``.
    """
    head = f'<backend_handoff from="{from_type}" to="{to_type}" status="{{status}}">'
    try:
        recent = store.recent_messages(chat_id, MESSAGE_COUNT, exclude_ids=current_ids)
        lines = [
            f"- {m.timestamp} {_speaker(m, assistant_name)}: {_cap(m.content, MESSAGE_LIMIT)}" for m in recent
        ]
        body = "\n".join(
            [
                "This is reference context from the previous backend only. Answer only the current message below.",
                "## Active Task\nSee the current message.",
                "## Goal\nContinue helping this group without losing context.",
                "## Constraints & Preferences\nFollow the group memory.",
                "## Completed Actions\nSee the recent messages below.",
                f"## Active State\nBackend changed from {from_type} to {to_type}.",
                "## Blocked\nNothing known.",
                "## Key Decisions\nNative session ids are not reused across backend types.",
                f"## Relevant Files\n{_memory(group_dir, on_refused)}",
                "## Remaining Work\nAnswer the current message.",
                "## Critical Context\n" + ("\n".join(lines) or "No recent messages."),
            ]
        )
        status = "available"
    except Exception as exc:
        body = (
            "Automatic handoff summary was unavailable. Continue using mounted group memory and the current user "
            f"message.\nSummary error: {_cap(str(exc), 300)}"
        )
        status = "partial"
    return f"{head.format(status=status)}\n{body}\n</backend_handoff>"


def with_handoff(block: str, prompt: str, *, scheduled: bool = False) -> str:
    return f"{block}\n\n{TASK_SEPARATOR if scheduled else MESSAGE_SEPARATOR}\n\n{prompt}"
